"""Shared pieces of the operations tests: a two-destination config, events, an in-process worker run
until its offsets are committed, and what the router predicts the partners will receive."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from kafka_helpers import async_wait_until, committed_offsets, end_offsets
from test_worker_helpers import request_key

from streamproc.cli import build_parser
from streamproc.config import load_config
from streamproc.router import Router
from streamproc.runs.worker import Worker

T0_MS = 1_790_000_000_000  # a fixed base time for produced events (2026-09-21)

# Destination seg-a takes every track event; seg-b only orders: the two make different predictions.
CONFIG = """
kafka:
  bootstrap_servers: {bootstrap}
  topics: [{topic}]
  group_id: {group}
  dead_letter_topic: {dlq}
  client:
    client.id: streamproc-test
input:
{input}
limits:
  shutdown_timeout: 10
  commit_interval: 0.5
metrics:
  host: 127.0.0.1
  port: {metrics_port}
log:
  format: json
  level: {log_level}
destinations:
  - id: seg-a
    type: seg
    settings:
      apiKey: "{key_a}"
    endpoint: {url_a}
    presets: false
    limits:
      concurrency: 16
      retry: {{max_attempts: {attempts_a}, budget: 5, backoff_initial: 0.01, backoff_max: 0.05}}
      breaker: {{min_requests: 1000000}}
    subscriptions:
      - name: Every track
        trigger: type = "track"
        action: track
        mapping: {{segEvent: OrderPlaced}}
  - id: seg-b
    type: seg
    settings:
      apiKey: "{key_b}"
    endpoint: {url_b}
    presets: false
    limits:
      concurrency: 16
      retry: {{max_attempts: 2, budget: 5, backoff_initial: 0.01, backoff_max: 0.05}}
      breaker: {{min_requests: 1000000}}
    subscriptions:
      - name: Orders
        trigger: type = "track" and event = "Order Completed"
        action: track
        mapping: {{segEvent: OrderPlaced}}
"""

KEY_A = "11111111-1111-4111-8111-111111111111"
KEY_B = "22222222-2222-4222-8222-222222222222"


def write_config(
    path: Path,
    *,
    bootstrap: str,
    topic: str,
    dlq: str,
    group: str,
    url_a: str,
    url_b: str,
    input_yaml: str = "  format: json",
    metrics_port: int = 0,
    log_level: str = "info",
    key_a: str = KEY_A,
    key_b: str = KEY_B,
    attempts_a: int = 2,
) -> Path:
    path.write_text(
        CONFIG.format(
            bootstrap=bootstrap,
            topic=topic,
            dlq=dlq,
            group=group,
            url_a=url_a,
            url_b=url_b,
            input=input_yaml,
            metrics_port=metrics_port,
            log_level=log_level,
            key_a=key_a,
            key_b=key_b,
            attempts_a=attempts_a,
        )
    )
    return path


def make_events(n: int, *, prefix: str = "m") -> list[dict[str, Any]]:
    """`n` track events; every third is an order (so seg-b gets a third of them)."""
    events = []
    for i in range(n):
        order = i % 3 == 0
        events.append(
            {
                "type": "track",
                "event": "Order Completed" if order else "Product Viewed",
                "messageId": f"{prefix}-{i}",
                "userId": f"user-{i % 17}",
                "timestamp": "2026-09-21T10:00:00.000Z",
                "context": {"ip": f"198.51.100.{i % 200}", "traits": {"email": f"buyer{i}@example.com"}},
                "properties": {
                    "order_id": f"o-{i}",
                    "revenue": i + 0.5,
                    "currency": "EUR",
                    "products": [{"product_id": f"p-{i}", "price": 1.5, "quantity": 1}],
                },
            }
        )
    return events


def predicted(
    config_path: Path, events: Iterable[dict[str, Any]], **route: Any
) -> dict[str, collections.Counter]:
    """Per destination, the multiset of (method, path+query, body) the router says will be sent."""
    router = Router(load_config(config_path))
    out: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for event in events:
        for delivery in router.route(event, **route):
            assert delivery.error is None, delivery.error
            for req in delivery.requests:
                out[delivery.destination][request_key(req.method, req.url, req.body)] += 1
    return out


def received(sim: Any) -> collections.Counter:
    """The multiset of (method, path+query, body) a simulator recorded."""
    return collections.Counter(
        (r.method, r.raw_path, r.body or b"") for r in sim.requests if r.partner != "unknown"
    )


async def run_worker_until_done(cfg: Path, bootstrap: str, topic: str, group: str) -> None:
    """Run an in-process worker until its group has committed the end of every partition of `topic`."""
    worker = Worker(load_config(cfg), serve_http=False)
    task = asyncio.create_task(worker.run_async())
    ends = end_offsets(bootstrap, topic)
    try:
        await async_wait_until(
            lambda: task.done() or committed_offsets(bootstrap, group, topic) == ends,
            timeout=90,
            interval=0.3,
            message="the worker did not finish the topic",
        )
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)


def cli_args(*argv: str) -> Any:
    return build_parser().parse_args(list(argv))


def dumps(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)
