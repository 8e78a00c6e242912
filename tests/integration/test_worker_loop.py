"""The worker loop against the real broker, with a stand-in router and partner: every event is
delivered or dead-lettered exactly as expected, poison messages are parked, offsets reach the end."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from http_stand_in import serving
from kafka_helpers import async_wait_until, committed_offsets, end_offsets, produce, read_all, unique_name

from streamproc.config import (
    Config,
    DestinationConfig,
    DestinationLimits,
    InputConfig,
    KafkaConfig,
    Limits,
    LogConfig,
    MetricsConfig,
    RetryPolicy,
)
from streamproc.decoding import SchemaRegistryUnavailable
from streamproc.destinations.base import Request, classify_http
from streamproc.errors import ConfigError, KafkaError, PayloadValidationError
from streamproc.kafka.producer import AckedProducer
from streamproc.metrics import Metrics
from streamproc.router import Delivery
from streamproc.runs.worker import Worker

pytestmark = pytest.mark.kafka


@dataclass
class Partner:
    url: str = ""
    seen: list[tuple[str, bytes]] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)


@pytest.fixture
async def partner() -> AsyncIterator[Partner]:
    state = Partner()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        state.seen.append((request.path, body))
        if request.path in state.failing:
            return web.Response(status=400, text='{"error":"rejected jane@example.com"}')
        return web.Response(status=200)

    async with serving(handle) as url:
        state.url = url
        yield state


@dataclass(frozen=True)
class _Dest:
    classify: Any = classify_http


class StandInRouter:
    """Routes `track` events to one POST each; `bad: true` events fail validation."""

    def __init__(self, config: Config, base: str) -> None:
        self.base = base
        self.destinations: Mapping[str, tuple[Any, DestinationConfig]] = {
            d.id: (_Dest(), d) for d in config.destinations
        }

    def route(self, event: Mapping[str, Any]) -> list[Delivery]:
        if event.get("type") != "track":
            return []
        mid = event["messageId"]
        if event.get("bad"):
            err = PayloadValidationError("The root value is missing the required field 'pixel'.")
            return [Delivery(f"{mid}:p:s", "p", "s", "act", [], err, None, event.get("userId"))]
        req = Request(
            "POST", f"{self.base}/e/{mid}", {"content-type": "application/json"}, orjson.dumps(event)
        )
        return [Delivery(f"{mid}:p:s", "p", "s", "act", [req], None, None, event.get("userId"))]

    def routed(self, event: Mapping[str, Any]) -> tuple[list[Delivery], tuple[tuple[str, str], ...]]:
        return self.route(event), ()


def make_config(bootstrap: str, topic: str, dlq: str, group: str, **limits: Any) -> Config:
    return Config(
        source="test",
        kafka=KafkaConfig(bootstrap, (topic,), group, dlq, {"session.timeout.ms": "6000"}),
        input=InputConfig(),
        limits=Limits(commit_interval=0.5, **limits),
        metrics=MetricsConfig(enabled=False),
        log=LogConfig(),
        destinations=(
            DestinationConfig(
                "p",
                "stand-in",
                {},
                "http://unused",
                limits=DestinationLimits(
                    concurrency=16, timeout=2.0, retry=RetryPolicy(max_attempts=3, backoff_initial=0.01)
                ),
            ),
        ),
    )


def test_run_needs_a_kafka_section() -> None:
    cfg = make_config("x", "t", "d", "g")
    cfg = Config(cfg.source, None, cfg.input, cfg.limits, cfg.metrics, cfg.log, cfg.destinations)
    with pytest.raises(ConfigError, match="kafka"):
        Worker(cfg, router=StandInRouter(cfg, "http://x"))  # type: ignore[arg-type]


async def test_every_event_is_delivered_or_dead_lettered_and_offsets_reach_the_end(
    kafka_bootstrap: str, topic: Any, partner: Partner
) -> None:
    src, dlq = topic("events"), topic("dlq", partitions=1)
    group = unique_name("g")
    n = 2000
    values: list[bytes] = []
    for i in range(n):
        ev: dict[str, Any] = {"type": "track", "messageId": f"m{i}", "userId": f"u{i % 37}", "event": "x"}
        if i % 250 == 7:
            ev["bad"] = True
        if i % 100 == 3:
            ev["type"] = "identify"
        values.append(orjson.dumps(ev))
    poison = [b"not json {", b"[1, 2]", b'"a string"']
    partner.failing = {"/e/m11", "/e/m1011"}
    produce(
        kafka_bootstrap,
        src,
        values + poison,
        keys=[f"k{i}".encode() for i in range(n + 3)],
        headers=[[("trace", b"t1")]] * (n + 3),
    )

    cfg = make_config(kafka_bootstrap, src, dlq, group)
    metrics = Metrics()
    worker = Worker(cfg, router=StandInRouter(cfg, partner.url), metrics=metrics)  # type: ignore[arg-type]
    task = asyncio.create_task(worker.run_async())
    ends = end_offsets(kafka_bootstrap, src)

    def done() -> bool:
        return committed_offsets(kafka_bootstrap, group, src) == ends

    try:
        await async_wait_until(lambda: asyncio.to_thread(done), timeout=60, interval=0.5)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)

    expected_sent = {f"/e/m{i}" for i in range(n) if i % 250 != 7 and i % 100 != 3}
    paths = collections.Counter(p for p, _ in partner.seen)
    assert set(paths) == expected_sent
    assert all(c == 1 for c in paths.values())  # a clean run sends each once

    letters = read_all(kafka_bootstrap, dlq)
    by_type = collections.Counter(r.header("streamproc.error.type") for r in letters)
    bad = sum(1 for i in range(n) if i % 250 == 7 and i % 100 != 3)
    assert by_type == {b"DecodeError": 3, b"PayloadValidationError": bad, b"PermanentError": 2}
    rejected = next(r for r in letters if r.header("streamproc.error.type") == b"PermanentError")
    assert rejected.headers[0] == ("trace", b"t1")  # original headers first
    assert rejected.header("streamproc.http.status") == b"400"
    assert rejected.header("streamproc.response.body") == b'{"error":"rejected [email]"}'
    assert rejected.header("streamproc.destination") == b"p"
    assert rejected.header("streamproc.delivery_id") in (b"m11:p:s", b"m1011:p:s")
    assert rejected.header("streamproc.attempts") == b"1"
    assert rejected.header("streamproc.original.topic") == src.encode()
    original = orjson.loads(rejected.value or b"")
    assert rejected.key == f"k{original['messageId'][1:]}".encode()
    poison_letters = [r for r in letters if r.header("streamproc.error.type") == b"DecodeError"]
    assert sorted(r.value for r in poison_letters) == sorted(poison)
    assert all(b"JSON" in (r.header("streamproc.error.message") or b"") for r in poison_letters)
    assert metrics.registry.get_sample_value("streamproc_events_consumed_total", {"topic": src}) == n + 3


class _RefusingProducer:
    """Accepts every dead letter, then reports it failed (a dead-letter topic that cannot be written)."""

    def produce(self, topic: str, *, value: Any, key: Any, headers: Any, on_delivery: Any) -> None:
        on_delivery("Broker: Topic authorization failed", None)

    def poll(self, timeout: float) -> int:
        time.sleep(timeout)
        return 0

    def flush(self, timeout: float) -> int:
        return 0


async def test_a_dead_letter_that_cannot_be_written_stops_the_worker_without_committing_past_it(
    kafka_bootstrap: str, topic: Any, partner: Partner
) -> None:
    src, dlq = topic("events", partitions=1), topic("dlq", partitions=1)
    group = unique_name("g")
    values = [
        orjson.dumps({"type": "track", "messageId": f"m{i}", "userId": "u", "bad": i == 50})
        for i in range(100)
    ]
    produce(kafka_bootstrap, src, values)
    cfg = make_config(kafka_bootstrap, src, dlq, group)
    worker = Worker(
        cfg,
        router=StandInRouter(cfg, partner.url),  # type: ignore[arg-type]
        dead_letter_producer=AckedProducer(dlq, {}, attempts=2, backoff=0.01, producer=_RefusingProducer()),
    )
    with pytest.raises(KafkaError, match="could not write a dead letter"):
        await asyncio.wait_for(worker.run_async(), 60)
    committed = committed_offsets(kafka_bootstrap, group, src)
    assert committed.get(0, 0) <= 50  # never past the event whose dead letter was not written
    assert read_all(kafka_bootstrap, dlq) == []


async def test_an_unreachable_schema_registry_stops_the_worker_without_dead_lettering_or_committing_past_it(
    kafka_bootstrap: str, topic: Any, partner: Partner
) -> None:
    src, dlq = topic("events", partitions=1), topic("dlq", partitions=1)
    group = unique_name("g")
    values = [orjson.dumps({"type": "track", "messageId": f"m{i}", "userId": "u"}) for i in range(100)]
    produce(kafka_bootstrap, src, values)
    cfg = make_config(kafka_bootstrap, src, dlq, group)
    worker = Worker(cfg, router=StandInRouter(cfg, partner.url))  # type: ignore[arg-type]

    def decode(raw: bytes) -> dict[str, Any]:
        event: dict[str, Any] = orjson.loads(raw)
        if event["messageId"] == "m50":
            raise SchemaRegistryUnavailable("the schema registry at http://registry cannot be reached")
        return event

    worker.processor.decode = decode
    with pytest.raises(SchemaRegistryUnavailable, match="cannot be reached"):
        await asyncio.wait_for(worker.run_async(), 60)
    committed = committed_offsets(kafka_bootstrap, group, src)
    assert committed.get(0, 0) <= 50  # the event the registry was needed for is read again
    assert "/e/m50" not in {p for p, _ in partner.seen}
    assert read_all(kafka_bootstrap, dlq) == []  # a good event is not a dead letter
