"""`streamproc send`: one JSON line per delivery (requests, error or skip) for each event; nothing is sent."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from test_config import register_fake

from streamproc.cli import main

GUID = "abc8fb18-7559-4324-9921-a4b5015b4a1c"
CONFIG = f"""
destinations:
  - id: seg
    type: seg
    settings: {{apiKey: {GUID}}}
    presets: [Identify, Alias]
  - id: f1
    type: fake
    settings: {{key: k}}
    subscriptions:
      - {{name: tracks, trigger: 'type = "track"', action: send}}
"""

EVENTS = [
    json.dumps({"type": "identify", "messageId": "m0", "userId": "u1", "traits": {"email": "a@example.com"}}),
    "",
    json.dumps({"type": "track", "messageId": "m1", "event": "Signed Up", "userId": "u1"}),
    "{not json",
    json.dumps({"type": "alias", "messageId": "m3", "userId": "u2", "previousId": "anon"}),
    json.dumps({"type": "track", "messageId": "m4"}),
    "[1, 2]",
    json.dumps({"type": "screen", "messageId": "m6"}),
]


@pytest.fixture(autouse=True)
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    return register_fake(monkeypatch)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return path


def send(capsys: pytest.CaptureFixture[bytes], *args: str) -> tuple[int, list[dict[str, Any]], str]:
    code = main(["send", *args])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.decode().splitlines() if line.strip()]
    return code, lines, captured.err.decode()


def test_json_lines_one_line_per_delivery(
    config: Path, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(EVENTS) + "\n")
    shown = ("--show-secrets", "--show-pii")  # the exact requests (tests/commands/test_send_masking.py)
    code, lines, err = send(capsysbinary, "--config", str(config), "--events", str(events), *shown)
    assert code == 0
    assert [(x["index"], x["destination"], x["subscription"]) for x in lines] == [
        (0, "seg", "Identify"),
        (1, "f1", "tracks"),
        (2, None, None),
        (3, "seg", "Alias"),
        (4, "f1", "tracks"),
        (5, None, None),
    ]
    identify, track, not_json, alias, invalid, array = lines
    assert list(identify) == ["index", "messageId", "destination", "subscription", "action", "requests"]
    assert identify["messageId"] == "m0" and identify["action"] == "identify"
    assert identify["requests"] == [
        {
            "method": "POST",
            "url": f"https://tracker.segapp.com/segment/{GUID}/identify",
            "headers": {"content-type": "application/json", "accept": "application/json"},
            "body": {
                "MessageId": "m0",
                "Id": "u1",
                "Email": "a@example.com",
                "Traits": {"email": "a@example.com"},
            },
        }
    ]
    assert track["requests"][0]["url"] == "https://fake.example/send?key=k"
    assert track["requests"][0]["body"] == {"name": "Signed Up", "user": "u1"}
    assert not_json["error"]["type"] == "DecodeError" and not_json["messageId"] is None
    assert not_json["error"]["retryable"] is False
    assert alias["skipped"].startswith("alias is sent to Seg only when")
    assert "requests" not in alias
    assert invalid["error"] == {
        "type": "PayloadValidationError",
        "message": invalid["error"]["message"],
        "status": 400,
        "retryable": False,
    }
    assert "name" in invalid["error"]["message"] or "Name" in invalid["error"]["message"]
    assert "got an array" in array["error"]["message"]
    assert "7 events (2 not decodable), 4 deliveries (1 failed, 1 skipped); nothing was sent" in err


def test_one_pretty_printed_event_from_stdin(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    event = {"type": "track", "messageId": "m9", "event": "X", "anonymousId": "a"}
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(json.dumps(event, indent=2).encode())))
    code, lines, _ = send(capsysbinary, "--config", str(config), "--events", "-")
    assert code == 0
    assert [(x["index"], x["messageId"], x["subscription"]) for x in lines] == [(0, "m9", "tracks")]


def test_pretty_format_and_destination_filter(
    config: Path, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(EVENTS))
    assert main(["send", "-c", str(config), "-e", str(events), "--format", "pretty", "-d", "seg"]) == 0
    out = capsysbinary.readouterr().out.decode()
    assert out.startswith('{\n  "index": 0,\n')
    decoder = json.JSONDecoder()
    docs, pos = [], 0
    while pos < len(out.strip()):
        doc, pos = decoder.raw_decode(out, pos)
        docs.append(doc)
        while pos < len(out) and out[pos].isspace():
            pos += 1
    assert [d["destination"] for d in docs] == ["seg", None, "seg", None]


def test_unknown_destination_and_unreadable_events(
    config: Path, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text(EVENTS[0])
    assert main(["send", "-c", str(config), "-e", str(events), "-d", "nope"]) == 1
    assert "unknown destination id(s): nope" in capsysbinary.readouterr().err.decode()
    assert main(["send", "-c", str(config), "-e", str(tmp_path / "missing.jsonl")]) == 1
    assert "cannot read events" in capsysbinary.readouterr().err.decode()


def test_now_must_be_iso_8601(config: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    with pytest.raises(SystemExit):
        main(["send", "-c", str(config), "-e", "-", "--now", "yesterday"])
    assert "not an ISO-8601 time" in capsysbinary.readouterr().err.decode()


def test_the_examples_run_out_of_the_box(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    args = ["--config", str(examples / "config.yaml"), "--events", str(examples / "events.jsonl")]
    code, lines, _ = send(capsysbinary, *args, "--now", "2026-03-02T10:00:00Z")
    assert code == 0
    decode_errors = [x for x in lines if x["destination"] is None]
    assert len(decode_errors) == 2
    assert {x["destination"] for x in lines} == {None, "stackadapt", "tiktok-offline", "seg"}
    for line in lines:
        assert sum(k in line for k in ("requests", "error", "skipped")) == 1
    assert any(x["subscription"] == "Alias" and "skipped" in x for x in lines)
    assert any(x["subscription"] == "Alias" and "requests" in x for x in lines)
    again = send(capsysbinary, *args, "--now", "2026-03-02T10:00:00Z")[1]
    assert again == lines  # deterministic with a frozen clock


def test_a_broken_first_line_is_an_error_line_not_the_end(
    config: Path, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "track",\n' + EVENTS[2] + "\n")
    code, lines, _ = send(capsysbinary, "--config", str(config), "--events", str(events))
    assert code == 0
    assert [(x["index"], x["subscription"], "error" in x) for x in lines] == [
        (0, None, True),
        (1, "tracks", False),
    ]
