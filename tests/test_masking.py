"""Masking what tools print: configured credentials, auth headers and raw PII become `<kind:hash>` in
`send` (and the dry runs and inspections that print through the same masker), unless asked for."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streamproc.cli import main
from streamproc.config import load_config, parse_config
from streamproc.masking import Masker, config_secrets
from streamproc.router import Router

TOKEN = "tt-live-token-0a1b2c3d4e"
PIXEL = "sqQHa3Ob1hFi__2EcYYVZg1"
GUID = "abc8fb18-7559-4324-9921-a4b5015b4a1c"
CONFIG = f"""
destinations:
  - id: stackadapt
    type: stackadapt
    settings: {{pixelId: {PIXEL}}}
    presets: true
  - id: tiktok
    type: tiktok-offline-conversions
    settings: {{accessToken: {TOKEN}, eventSetID: "7312"}}
    subscriptions:
      - {{name: Orders, trigger: 'event = "Order Completed"', action: reportOfflineEvent,
         mapping: {{event: CompletePayment}}}}
  - id: seg
    type: seg
    settings: {{apiKey: {GUID}}}
"""
EMAIL, PHONE, IP = "jane.doe@example.com", "+1 415 555 0100", "203.0.113.77"
EVENT = {
    "type": "track",
    "event": "Order Completed",
    "messageId": "m1",
    "userId": "u1",
    "timestamp": "2026-03-02T09:00:00.000Z",
    "context": {
        "ip": IP,
        "userAgent": "Mozilla/5.0",
        "page": {"url": "https://shop.example.com/", "title": "Shop"},
        "traits": {"email": EMAIL, "phone": PHONE},
    },
    "properties": {"revenue": 10, "email": EMAIL, "products": [{"product_id": "p1", "price": 10}]},
}


def send(
    tmp_path: Path, capsys: pytest.CaptureFixture[bytes], *flags: str
) -> tuple[str, list[dict[str, Any]]]:
    config, events = tmp_path / "config.yaml", tmp_path / "events.jsonl"
    config.write_text(CONFIG)
    events.write_text(json.dumps(EVENT) + "\n" + json.dumps({**EVENT, "messageId": "m2"}) + "\n")
    assert main(["send", "--config", str(config), "--events", str(events), *flags]) == 0
    out = capsys.readouterr().out.decode()
    return out, [json.loads(line) for line in out.splitlines()]


def requests_of(lines: list[dict[str, Any]], destination: str) -> list[dict[str, Any]]:
    return [r for line in lines if line["destination"] == destination for r in line.get("requests", [])]


def test_send_masks_credentials_and_pii_by_default(tmp_path: Path, capsysbinary: Any) -> None:
    out, lines = send(tmp_path, capsysbinary)
    assert {line["destination"] for line in lines} == {"stackadapt", "tiktok", "seg"}
    for value in (TOKEN, PIXEL, GUID, EMAIL, "jane.doe%40example.com", PHONE, IP):
        assert value not in out, value
    tiktok = requests_of(lines, "tiktok")
    assert all(r["headers"]["access-token"].startswith("<secret:") for r in tiktok)
    assert all("/segment/<secret:" in r["url"] for r in requests_of(lines, "seg"))
    assert all(
        "uid=<secret:" in r["url"] and "ip_fwd=<ip:" in r["url"] for r in requests_of(lines, "stackadapt")
    )
    seg_body = requests_of(lines, "seg")[0]["body"]
    assert seg_body["Email"].startswith("<email:")


def test_equal_values_mask_to_equal_markers(tmp_path: Path, capsysbinary: Any) -> None:
    _, lines = send(tmp_path, capsysbinary)
    tokens = {r["headers"]["access-token"] for r in requests_of(lines, "tiktok")}
    assert len(tokens) == 1  # the same token in both events: comparable without being shown
    again = send(tmp_path, capsysbinary)[1]
    assert again == lines  # and the same in a second run of the process


def test_show_secrets_shows_credentials_only(tmp_path: Path, capsysbinary: Any) -> None:
    out, lines = send(tmp_path, capsysbinary, "--show-secrets")
    assert requests_of(lines, "tiktok")[0]["headers"]["access-token"] == TOKEN
    assert f"/segment/{GUID}/" in out and f"uid={PIXEL}" in out
    assert EMAIL not in out and IP not in out


def test_show_pii_shows_personal_data_only(tmp_path: Path, capsysbinary: Any) -> None:
    out, lines = send(tmp_path, capsysbinary, "--show-pii")
    assert requests_of(lines, "seg")[0]["body"]["Email"] == EMAIL
    assert IP in out
    assert TOKEN not in out and PIXEL not in out and GUID not in out


def test_both_switches_show_the_exact_requests(tmp_path: Path, capsysbinary: Any) -> None:
    _, lines = send(tmp_path, capsysbinary, "--show-secrets", "--show-pii", "--now", "2026-03-02T10:00:00Z")
    router = Router(load_config(tmp_path / "config.yaml"), now=datetime(2026, 3, 2, 10, tzinfo=UTC))
    exact = [r.to_json() for d in router.route(EVENT) for r in d.requests]
    assert [r for line in lines if line["messageId"] == "m1" for r in line.get("requests", [])] == exact


def test_the_secrets_of_a_config_are_the_marked_settings_and_sasl() -> None:
    config = parse_config(
        {
            "kafka": {
                "bootstrap_servers": "b:9092",
                "topics": ["t"],
                "client": {"sasl.password": "kafka-pw-1", "client.id": "w"},
            },
            "destinations": [
                {
                    "id": "t",
                    "type": "tiktok-offline-conversions",
                    "settings": {"accessToken": "tt-1", "eventSetID": "1"},
                },
                {"id": "s", "type": "stackadapt", "settings": {"pixelId": "px-123"}},
                {"id": "g", "type": "seg", "settings": {"apiKey": GUID}},
            ],
        }
    )
    assert sorted(config_secrets(config)) == sorted(["kafka-pw-1", "tt-1", "px-123", GUID])


@pytest.fixture
def masker() -> Masker:
    return Masker(["s3cr3t/value"], hash_key=b"k")


def test_a_url_is_masked_part_by_part(masker: Masker) -> None:
    url = (
        "https://user:pw@partner.test/v1/s3cr3t%2Fvalue/x?access_token=abc123&email=jane%40example.com"
        "&args=%7B%22email%22%3A%22jane%40example.com%22%2C%22id%22%3A%227%22%7D&n=42&q=a+b"
    )
    shown = masker.url(url)
    for value in ("pw", "abc123", "jane", "s3cr3t"):
        assert value not in shown, value
    assert shown.startswith("https://<secret:")
    assert "&n=42&q=a+b" in shown  # untouched parameters keep their encoding
    assert masker.mask("email", "jane@example.com") in shown


def test_nested_values_are_masked_by_key_and_content_at_any_depth(masker: Masker) -> None:
    deep: Any = {"note": "write to bob@example.org", "phones": ["4155550100", "4155550101"], "n": 4155550100}
    for _ in range(3000):
        deep = {"a": deep}
    shown = masker.value(deep)
    for _ in range(3000):
        shown = shown["a"]
    assert shown["note"] == f"write to {masker.mask('email', 'bob@example.org')}"
    assert shown["phones"] == [masker.mask("phone", "4155550100"), masker.mask("phone", "4155550101")]
    assert shown["n"] == 4155550100  # a number under an ordinary key is not a phone number
    assert masker.value({"a": {"b": {"c": 1}}}, max_depth=2) == {"a": {"b": "[too deep]"}}


def test_showing_leaves_that_kind_alone() -> None:
    both = Masker(["tok-12345"], show_secrets=True, show_pii=True)
    text = "Bearer tok-12345 for a@b.example from 198.51.100.1"
    assert both.text(text) == text
    pii_only = Masker(["tok-12345"], show_pii=True)
    assert pii_only.text(text).startswith("Bearer <secret:") and "a@b.example" in pii_only.text(text)
