"""`dlq inspect --show-request` and `retry inspect --show-request` on the real broker: the request each
dead letter or parked delivery stands for is rebuilt exactly as the partner received it, with the
partner's answer, and secrets and PII are masked unless asked for."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_helpers import produce, unique_name
from ops_helpers import cli_args, run_worker_until_done

from streamproc.commands.dlq import inspect as dlq_inspect
from streamproc.commands.retry import inspect as retry_inspect
from streamproc.devtools.simulator import PartnerSimulator

pytestmark = pytest.mark.kafka

TOKEN = "tt-token-9f8e7d6c5b4a"
KEY_A = "33333333-3333-4333-8333-333333333333"
KEY_P = "44444444-4444-4444-8444-444444444444"

CONFIG = """
kafka:
  bootstrap_servers: {bootstrap}
  topics: [{topic}]
  group_id: {group}
  dead_letter_topic: {dlq}
limits: {{shutdown_timeout: 10, commit_interval: 0.5}}
metrics: {{enabled: false}}
destinations:
  - id: seg-a
    type: seg
    settings: {{apiKey: "{key_a}"}}
    endpoint: {url}
    presets: false
    limits:
      retry: {{max_attempts: 2, budget: 5, backoff_initial: 0.01, backoff_max: 0.05}}
      breaker: {{min_requests: 1000000}}
    subscriptions:
      - {{name: Orders, trigger: 'event = "Order Completed"', action: track,
         mapping: {{segEvent: OrderPlaced}}}}
  - id: tiktok
    type: tiktok-offline-conversions
    settings: {{accessToken: "{token}", eventSetID: "7312"}}
    endpoint: {url}
    presets: false
    subscriptions:
      - {{name: Purchases, trigger: 'event = "Order Completed"', action: reportOfflineEvent,
         mapping: {{event: CompletePayment}}}}
  - id: seg-p
    type: seg
    settings: {{apiKey: "{key_p}"}}
    endpoint: {url}
    presets: false
    limits:
      retry: {{max_attempts: 100, budget: 600, backoff_initial: 0.01, backoff_max: 0.05,
              park_after_attempts: 1, park_delay: 300, park_delay_max: 300}}
      breaker: {{min_requests: 1000000}}
    subscriptions:
      - {{name: Views, trigger: 'event = "Product Viewed"', action: track,
         mapping: {{segEvent: ProductView}}}}
"""


def events(n: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "track",
            "event": "Order Completed" if i % 2 == 0 else "Product Viewed",
            "messageId": f"sr-{i}",
            "userId": f"user-{i}",
            "timestamp": "2026-09-21T10:00:00.000Z",
            "context": {
                "ip": f"198.51.100.{i}",
                "traits": {"email": f"buyer{i}@example.com", "phone": f"+1 415 555 01{i:02d}"},
            },
            "properties": {"order_id": f"o-{i}", "revenue": i + 0.5, "currency": "EUR"},
        }
        for i in range(n)
    ]


N = 8  # four orders (seg-a and tiktok dead-letter them), four views (seg-p parks them)


@pytest.fixture
async def failed(
    kafka_bootstrap: str, topic: Any, sims: Any, tmp_path: Path
) -> tuple[Path, PartnerSimulator]:
    sim = sims[0]
    source, dlq, group = topic("show-request", partitions=2), topic("show-request-dlq"), unique_name("sr")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        CONFIG.format(
            bootstrap=kafka_bootstrap,
            topic=source,
            group=group,
            dlq=dlq,
            url=sim.base_url,
            key_a=KEY_A,
            key_p=KEY_P,
            token=TOKEN,
        )
    )
    sim.fault("seg", down=503)
    sim.fault("tiktok", down=401)  # TikTok's envelope: code 40105, the token was revoked
    produce(kafka_bootstrap, source, [orjson.dumps(e) for e in events(N)])
    await run_worker_until_done(cfg, kafka_bootstrap, source, group)
    return cfg, sim


def same_as_received(request: dict[str, Any], sim: PartnerSimulator) -> bool:
    """The rebuilt request is one the partner received: method, path and query, headers, body."""
    base = sim.base_url.rstrip("/")
    assert request["url"].startswith(base)
    path = request["url"][len(base) :]
    body = json.dumps(request["body"], separators=(",", ":")).encode() if request["body"] is not None else b""
    for seen in sim.requests:
        if (seen.method, seen.raw_path) != (request["method"], path):
            continue
        if (orjson.loads(seen.body) if seen.body else None) != request["body"] and seen.body != body:
            continue
        if all(seen.headers.get(k) == v for k, v in request["headers"].items()):
            return True
    return False


async def show(command: Any, *argv: str) -> tuple[dict[str, Any], str]:
    out = io.StringIO()
    await command(cli_args(*argv), out=out)
    text = out.getvalue()
    return (json.loads(text) if "--json" in argv else {}), text


async def test_dlq_inspect_shows_each_failed_request_as_sent_and_the_response(failed: Any) -> None:
    cfg, sim = failed
    doc, _ = await show(
        dlq_inspect,
        *("dlq", "inspect", "--config", str(cfg), "--json", "--samples", "100", "--show-request"),
        *("--show-secrets", "--show-pii"),
    )
    samples = {g["destination"]: g["samples"] for g in doc["groups"]}
    assert {d: len(s) for d, s in samples.items()} == {"seg-a": N // 2, "tiktok": N // 2}
    for sample in samples["seg-a"] + samples["tiktok"]:
        (request,) = sample["request"]
        assert same_as_received(request, sim), request
    seg = samples["seg-a"][0]
    assert seg["request"][0]["url"].endswith(f"/segment/{KEY_A}/track")
    assert seg["response"]["status"] == 503 and seg["response"]["error_type"] == "RetryableError"
    tiktok = samples["tiktok"][0]
    assert tiktok["request"][0]["headers"]["access-token"] == TOKEN
    assert tiktok["response"]["status"] == 401 and "40105" in json.dumps(tiktok["response"])


async def test_dlq_inspect_masks_secrets_and_pii_unless_asked(failed: Any) -> None:
    cfg, _sim = failed
    doc, text = await show(dlq_inspect, "dlq", "inspect", "--config", str(cfg), "--show-request", "--json")
    _, rendered = await show(dlq_inspect, "dlq", "inspect", "--config", str(cfg), "--show-request")
    for shown in (text, rendered):
        for secret in (TOKEN, KEY_A):
            assert secret not in shown
        assert "@example.com" not in shown and "198.51.100." not in shown and "555 01" not in shown
        assert "<secret:" in shown and "<email:" in shown and "<ip:" in shown
    assert "request to destination:" in rendered and "response: HTTP 503, RetryableError" in rendered
    tiktok = next(g for g in doc["groups"] if g["destination"] == "tiktok")["samples"][0]
    assert tiktok["request"][0]["headers"]["access-token"].startswith("<secret:")
    # The same token masks to the same marker in every sample: outputs can be compared.
    tokens = {
        s["request"][0]["headers"]["access-token"]
        for g in doc["groups"]
        for s in g["samples"]
        if g["destination"] == "tiktok"
    }
    assert len(tokens) == 1


async def test_retry_inspect_shows_the_parked_requests(failed: Any) -> None:
    cfg, sim = failed
    doc, _ = await show(
        retry_inspect,
        *("retry", "inspect", "--config", str(cfg), "--json", "--show-request", "--samples", "100"),
        *("--show-secrets", "--show-pii"),
    )
    parked = doc["samples"]["seg-p"]
    assert len(parked) == N // 2
    for sample in parked:
        (request,) = sample["request"]
        assert request["url"].endswith(f"/segment/{KEY_P}/track")
        assert same_as_received(request, sim), request
        assert sample["response"]["status"] == 503
    _, masked = await show(retry_inspect, "retry", "inspect", "--config", str(cfg), "--show-request")
    assert KEY_P not in masked and "@example.com" not in masked and "request to destination:" in masked
