"""`streamproc run` end to end at debug level, with partner failures, retries, dead letters and a poison
message: its logs contain none of the emails, phone numbers, IP addresses or secrets used in its
events and configuration."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import orjson
import pytest
from kafka_helpers import async_wait_until, committed_offsets, end_offsets, produce, unique_name

from streamproc.devtools.simulator import PartnerSimulator

pytestmark = pytest.mark.kafka

TIKTOK_TOKEN = "tt-secret-token-5d1e77a0"
SEG_KEY_A = "5e9c1b0a-77d2-4f4e-9a51-0c2d3e4f5a6b"
SEG_KEY_B = "8a7b6c5d-4e3f-4a1b-9c8d-7e6f5a4b3c2d"
KAFKA_PASSWORD = "kafka-secret-pw-991x"

CONFIG = """
kafka:
  bootstrap_servers: {bootstrap}
  topics: [{topic}]
  group_id: {group}
  dead_letter_topic: {dlq}
  client:
    sasl.password: ${{STREAMPROC_TEST_KAFKA_PASSWORD}}
limits:
  commit_interval: 0.5
  shutdown_timeout: 10
metrics:
  host: 127.0.0.1
  port: 0
log:
  format: json
  level: debug
destinations:
  - id: tiktok
    type: tiktok-offline-conversions
    settings:
      accessToken: ${{STREAMPROC_TEST_TIKTOK_TOKEN}}
      eventSetID: "7312"
    endpoint: {url_tiktok}
    presets: false
    limits:
      retry: {{max_attempts: 3, budget: 5, backoff_initial: 0.01, backoff_max: 0.05}}
    subscriptions:
      - name: Orders
        trigger: event = "Order Completed"
        action: reportOfflineEvent
        mapping: {{event: CompletePayment}}
  - id: seg-a
    type: seg
    settings: {{apiKey: "{seg_a}"}}
    endpoint: {url_seg_a}
    presets: false
    limits:
      retry: {{max_attempts: 2, budget: 5, backoff_initial: 0.01, backoff_max: 0.05}}
    subscriptions:
      - name: Every track
        trigger: type = "track"
        action: track
        mapping: {{segEvent: OrderPlaced}}
  - id: seg-b
    type: seg
    settings: {{apiKey: "{seg_b}"}}
    endpoint: {url_seg_b}
    presets: false
    subscriptions:
      - name: Identify
        trigger: type = "identify"
        action: identify
"""


def people(n: int) -> list[dict[str, str]]:
    return [
        {
            "email": f"Person.{i}@Example-Mail.com",
            "phone": f"+1 415 555 {1000 + i}",
            "ip": f"203.0.113.{10 + i}",
            "ipv6": f"2001:db8::{i + 1:x}:7334",
        }
        for i in range(n)
    ]


def events_for(who: list[dict[str, str]]) -> list[dict]:
    out = []
    for i, p in enumerate(who):
        context = {"ip": p["ip"], "traits": {"email": p["email"], "phone": p["phone"]}, "userAgent": "x"}
        out.append(
            {
                "type": "track",
                "event": "Order Completed",
                "messageId": f"pii-{i}",
                "userId": f"user-{i}",
                "timestamp": "2026-11-23T10:00:00Z",
                "properties": {
                    "order_id": f"o-{i}",
                    "revenue": 10 + i,
                    "email": p["email"],
                    "phone": p["phone"],
                },
                "context": {**context, "network": {"ipv6": p["ipv6"]}},
            }
        )
        out.append(
            {
                "type": "identify",
                "messageId": f"pii-id-{i}",
                "userId": f"user-{i}",
                "traits": {"email": p["email"], "phone": p["phone"], "name": "Jane"},
                "context": context,
            }
        )
    return out


async def test_worker_logs_contain_no_pii_or_secrets(kafka_bootstrap: str, topic, tmp_path: Path) -> None:
    who = people(40)
    events = events_for(who)
    source = topic("pii", partitions=2)
    dlq = topic("pii-dlq", partitions=1)
    group = unique_name("pii")
    sims = [PartnerSimulator(seed=i) for i in range(3)]
    urls = [await s.start() for s in sims]
    tiktok, seg_a, seg_b = sims
    tiktok.fault("tiktok", sequence=[500, 503, "reset", 429] * 5)  # retries, some give up
    seg_a.fault("seg", down=400)  # every delivery dead-lettered
    seg_b.fault("seg", sequence=["timeout"] * 3, hang=0.2)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        CONFIG.format(
            bootstrap=kafka_bootstrap,
            topic=source,
            group=group,
            dlq=dlq,
            url_tiktok=urls[0],
            url_seg_a=urls[1],
            url_seg_b=urls[2],
            seg_a=SEG_KEY_A,
            seg_b=SEG_KEY_B,
        )
    )
    poison = f'{{"type": "track", "email": "{who[0]["email"]}", broken'.encode()
    produce(kafka_bootstrap, source, [*(orjson.dumps(e) for e in events), poison, b"[1, 2]"])
    ends = end_offsets(kafka_bootstrap, source)

    log_file = tmp_path / "worker.log"
    env = {
        **os.environ,
        "STREAMPROC_TEST_TIKTOK_TOKEN": TIKTOK_TOKEN,
        "STREAMPROC_TEST_KAFKA_PASSWORD": KAFKA_PASSWORD,
        "PYTHONUNBUFFERED": "1",
    }
    with log_file.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streamproc", "run", "--config", str(cfg), env=env, stdout=sink, stderr=sink
        )
        try:
            await async_wait_until(
                lambda: (
                    proc.returncode is not None or committed_offsets(kafka_bootstrap, group, source) == ends
                ),
                timeout=120,
                interval=0.3,
                message="the worker did not finish the topic",
            )
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 60)
    for s in sims:
        await s.stop()

    text = log_file.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) > 20, text[-2000:]
    assert any(b'"dead_lettered"' in line.encode() for line in lines), "the failures were not logged"
    assert all(line.startswith("{") for line in lines), [x for x in lines if not x.startswith("{")][:5]

    forbidden = {TIKTOK_TOKEN, SEG_KEY_A, SEG_KEY_B, KAFKA_PASSWORD}
    for p in who:
        email = p["email"]
        forbidden |= {email, email.lower(), email.replace("@", "%40"), email.lower().replace("@", "%40")}
        forbidden |= {p["phone"], p["phone"].replace(" ", ""), p["ip"], p["ipv6"]}
    leaks = sorted(s for s in forbidden if s in text)
    assert not leaks, f"found in the worker's logs: {leaks[:10]}"
