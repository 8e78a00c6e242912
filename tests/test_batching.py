"""Batching of single-event deliveries: groups, the three limits, test events alone, per-item outcomes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from streamproc.batching import Batcher, BatchOptions
from streamproc.config import parse_config
from streamproc.destinations.base import Batching, Request
from streamproc.devtools.simulator import PartnerSimulator
from streamproc.dispatch import Bulkhead, BulkheadPolicy, Dispatcher
from streamproc.errors import DeliveryError
from streamproc.handoff import DeliveryResult
from streamproc.metrics import Metrics
from streamproc.router import Router
from streamproc.runs.compose import dispatcher_of

NOW = datetime(2026, 3, 2, tzinfo=UTC)
FAST = {"retry": {"max_attempts": 4, "budget": 30, "backoff_initial": 0.01, "backoff_max": 0.02}}


@pytest.fixture
async def sim() -> AsyncIterator[PartnerSimulator]:
    simulator = PartnerSimulator(seed=11)
    await simulator.start()
    yield simulator
    await simulator.stop()


@dataclass(frozen=True)
class FakeDelivery:
    requests: list[Request]
    delivery_id: str = "d"
    destination: str = "d1"
    subscription: str = "s"
    action: str = "a"
    error: DeliveryError | None = None
    skipped: str | None = None
    ordering_key: str | None = None


@dataclass
class Lines:
    """A stand-in batch format: one text line per event, grouped by the `g` header."""

    keys: list[str] = field(default_factory=list)

    def key(self, request: Request) -> tuple[Any, int] | None:
        group = request.headers.get("g")
        if group is None:
            return None
        return group, len(request.body or b"") + 1  # the event and a newline

    def combine(self, requests: Sequence[Request]) -> Request:
        first = requests[0]
        return Request(first.method, first.url, first.headers, b"\n".join(r.body or b"" for r in requests))

    def batching(self, max_events: int = 1000) -> Batching:
        return Batching(max_events=max_events, key=self.key, combine=self.combine)


def line(sim: PartnerSimulator, text: str, group: str | None = "a") -> FakeDelivery:
    headers = {"content-type": "text/plain"} | ({"g": group} if group is not None else {})
    return FakeDelivery([Request("POST", f"{sim.base_url}/segment/site/track", headers, text.encode())])


def batcher(
    sim: PartnerSimulator, *, max_events: int = 1000, max_bytes: int = 1_000_000, max_wait_ms: float = 20.0
) -> Batcher:
    bulkhead = Bulkhead(BulkheadPolicy("d1", backoff_initial=0.01, backoff_max=0.02))
    return Batcher(bulkhead, Lines().batching(), BatchOptions(max_events, max_bytes, max_wait_ms))


def bodies(sim: PartnerSimulator) -> list[bytes]:
    return [r.body for r in sim.requests]


async def test_deliveries_are_grouped_by_key_in_arrival_order(sim: PartnerSimulator) -> None:
    b = batcher(sim)
    deliveries = [line(sim, f"e{i}", group="ab"[i % 2]) for i in range(6)]
    results = await asyncio.gather(*(b.deliver(d) for d in deliveries))
    assert [r.outcome for r in results] == ["delivered"] * 6
    assert sorted(bodies(sim)) == [b"e0\ne2\ne4", b"e1\ne3\ne5"]
    await b._bulkhead.close()


async def test_a_batch_goes_out_when_it_reaches_max_events(sim: PartnerSimulator) -> None:
    b = batcher(sim, max_events=3, max_wait_ms=60_000)
    tasks = [asyncio.create_task(b.deliver(line(sim, f"e{i}"))) for i in range(7)]
    _, pending = await asyncio.wait(tasks[:6], timeout=30)
    assert not pending  # two full batches went out without waiting for max_wait_ms
    assert bodies(sim) == [b"e0\ne1\ne2", b"e3\ne4\ne5"]
    assert not tasks[6].done() and b.waiting == 1
    b.flush()
    assert (await tasks[6]).outcome == "delivered"
    assert bodies(sim)[-1] == b"e6"  # a batch of one is the single request
    await b._bulkhead.close()


async def test_a_batch_goes_out_before_it_would_pass_max_bytes(sim: PartnerSimulator) -> None:
    # 9 bytes alone, then 10 more per event (9 + newline): 29 fit in 30, a fourth would not.
    b = batcher(sim, max_bytes=30, max_wait_ms=60_000)
    tasks = [asyncio.create_task(b.deliver(line(sim, f"event-{i:03}"))) for i in range(4)]
    await asyncio.wait(tasks[:3], timeout=30)
    assert all(t.done() for t in tasks[:3])
    assert bodies(sim) == [b"event-000\nevent-001\nevent-002"]
    assert len(bodies(sim)[0]) <= 30
    b.flush()
    await tasks[3]
    # An event bigger than max_bytes alone is sent alone, at once.
    big = await b.deliver(line(sim, "x" * 31))
    assert big.outcome == "delivered" and bodies(sim)[-2:] == [b"event-003", b"x" * 31]
    await b._bulkhead.close()


async def test_deliveries_waiting_in_an_open_batch_count_as_in_flight(sim: PartnerSimulator) -> None:
    metrics = Metrics()
    bulkhead = Bulkhead(BulkheadPolicy("d1", backoff_initial=0.01), metrics=metrics)
    b = Batcher(bulkhead, Lines().batching(), BatchOptions(1000, 1_000_000, 60_000), metrics=metrics)

    def gauge() -> float | None:
        return metrics.registry.get_sample_value("streamproc_deliveries_in_flight", {"destination": "d1"})

    tasks = [asyncio.create_task(b.deliver(line(sim, f"e{i}"))) for i in range(3)]
    await asyncio.sleep(0.05)
    assert b.waiting == 3 and gauge() == 3  # not sent yet, and not finished either
    b.flush()
    await asyncio.gather(*tasks)
    assert gauge() == 0 and bodies(sim) == [b"e0\ne1\ne2"]
    await bulkhead.close()


async def test_an_open_batch_goes_out_after_max_wait_ms(sim: PartnerSimulator) -> None:
    b = batcher(sim, max_wait_ms=30)
    # Nothing else arrives and nobody flushes: the timer alone sends it.
    result = await asyncio.wait_for(b.deliver(line(sim, "only")), 30)
    assert result.outcome == "delivered" and bodies(sim) == [b"only"]
    await b._bulkhead.close()


async def test_deliveries_without_a_group_are_sent_alone(sim: PartnerSimulator) -> None:
    b = batcher(sim, max_wait_ms=60_000)
    result = await asyncio.wait_for(b.deliver(line(sim, "solo", group=None)), 30)
    assert result.outcome == "delivered" and bodies(sim) == [b"solo"] and b.waiting == 0
    await b._bulkhead.close()


async def test_a_delivery_cancelled_while_waiting_is_left_out_of_its_batch(sim: PartnerSimulator) -> None:
    b = batcher(sim, max_wait_ms=60_000)
    tasks = [asyncio.create_task(b.deliver(line(sim, f"e{i}"))) for i in range(3)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    await asyncio.sleep(0)
    b.flush()
    results = await asyncio.gather(tasks[0], tasks[2])
    assert [r.outcome for r in results] == ["delivered"] * 2
    assert bodies(sim) == [b"e0\ne2"]
    await b._bulkhead.close()


async def test_close_cancels_open_batches_without_sending(sim: PartnerSimulator) -> None:
    b = batcher(sim, max_wait_ms=60_000)
    task = asyncio.create_task(b.deliver(line(sim, "e0")))
    await asyncio.sleep(0)
    await b.close()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sim.requests == []
    await b._bulkhead.close()


# -- TikTok through the dispatcher ---------------------------------------------------------------------


def tiktok_stack(
    sim: PartnerSimulator, batch: Any, mapping: dict[str, Any] | None = None, **limits: Any
) -> tuple[Router, Dispatcher, Metrics]:
    dest = {
        "id": "tt",
        "type": "tiktok-offline-conversions",
        "settings": {"accessToken": "token-1", "eventSetID": "7312"},
        "endpoint": sim.base_url,
        "limits": {**FAST, **limits},
        "subscriptions": [
            {
                "name": "Orders",
                "trigger": 'event = "Order Completed"',
                "action": "reportOfflineEvent",
                "mapping": {"event": "CompletePayment", **(mapping or {})},
            }
        ],
    }
    if batch is not None:
        dest["batch"] = batch
    config = parse_config({"destinations": [dest]}, "cfg.yaml", {})
    router = Router(config, now=NOW)
    metrics = Metrics()
    dispatcher = dispatcher_of(((cfg, d.classify) for d, cfg in router.destinations.values()), metrics)
    return router, dispatcher, metrics


def orders(n: int, **properties: Any) -> list[dict[str, Any]]:
    return [
        {
            "type": "track",
            "event": "Order Completed",
            "messageId": f"m{i}",
            "userId": f"u{i}",
            "timestamp": "2026-03-02T09:00:00Z",
            "properties": {"revenue": i, **properties},
        }
        for i in range(n)
    ]


async def deliver_all(
    router: Router, dispatcher: Dispatcher, events: list[dict[str, Any]]
) -> tuple[list[Any], list[DeliveryResult]]:
    deliveries = [d for e in events for d in router.route(e)]
    results = await asyncio.gather(*(dispatcher.deliver(d) for d in deliveries))
    return deliveries, list(results)


def single_events(deliveries: list[Any]) -> list[Any]:
    return [orjson.loads(d.requests[0].body)["data"][0] for d in deliveries]


async def test_without_batch_each_event_is_its_own_request_as_segment_sends_it(sim: PartnerSimulator) -> None:
    router, dispatcher, _ = tiktok_stack(sim, None)
    deliveries, results = await deliver_all(router, dispatcher, orders(5))
    assert [r.outcome for r in results] == ["delivered"] * 5
    assert sorted(r.body for r in sim.requests) == sorted(d.requests[0].body for d in deliveries)
    await dispatcher.close()


async def test_tiktok_batch_carries_every_event_exactly_as_the_single_request(sim: PartnerSimulator) -> None:
    router, dispatcher, metrics = tiktok_stack(sim, {"max_events": 4, "max_wait_ms": 20})
    deliveries, results = await deliver_all(router, dispatcher, orders(10))
    assert [r.outcome for r in results] == ["delivered"] * 10
    assert sorted(len(r.events()) for r in sim.requests) == [2, 4, 4]
    sent = [e for r in sim.requests for e in r.events()]
    assert sorted(sent, key=lambda e: e["event_id"]) == sorted(
        single_events(deliveries), key=lambda e: e["event_id"]
    )
    for r in sim.requests:
        envelope = r.json()
        assert {k: v for k, v in envelope.items() if k != "data"} == {
            "event_source": "offline",
            "event_source_id": "7312",
            "partner_name": "Segment",
        }
        assert r.headers["access-token"] == "token-1"
    assert metrics.batch_events.labels("tt")._sum.get() == 10
    await dispatcher.close()


async def test_tiktok_test_events_go_alone(sim: PartnerSimulator) -> None:
    mapping = {"test_event_code": {"@path": "$.properties.test_code"}}
    router, dispatcher, _ = tiktok_stack(sim, {"max_wait_ms": 20}, mapping)
    events = orders(6)
    for event in events[:2]:
        event["properties"]["test_code"] = "TEST123"
    _, results = await deliver_all(router, dispatcher, events)
    assert [r.outcome for r in results] == ["delivered"] * 6
    sizes = sorted((len(r.events()), all("test_event_code" in e for e in r.events())) for r in sim.requests)
    assert sizes == [(1, True), (1, True), (4, False)]
    await dispatcher.close()


async def test_a_rejected_batch_dead_letters_each_delivery_with_the_code(sim: PartnerSimulator) -> None:
    router, dispatcher, _ = tiktok_stack(sim, {"max_wait_ms": 20})
    sim.fault("tiktok", then={"status": 200, "code": 40001, "message": "No permission to operate"})
    deliveries, results = await deliver_all(router, dispatcher, orders(3))
    assert len(sim.requests) == 1 and len(sim.requests[0].events()) == 3  # permanent: not retried
    assert len(results) == len(deliveries) == 3
    for result in results:
        assert result.outcome == "dead_lettered" and result.failure is not None
        assert result.failure.type == "PermanentError"
        assert result.failure.status == 200
        assert result.failure.message == "TikTok code 40001: No permission to operate"
        assert result.failure.response_body is not None and '"code":40001' in result.failure.response_body
        assert result.failure.attempts == 1
    await dispatcher.close()


async def test_a_failing_batch_is_retried_as_a_batch(sim: PartnerSimulator) -> None:
    router, dispatcher, _ = tiktok_stack(sim, {"max_wait_ms": 20})
    sim.fault("tiktok", sequence=[503, {"status": 200, "code": 40100}, {"status": 200, "code": 50002}])
    _, results = await deliver_all(router, dispatcher, orders(3))
    assert [(r.outcome, r.attempts) for r in results] == [("delivered", 4)] * 3
    assert [len(r.events()) for r in sim.requests] == [3, 3, 3, 3]
    assert len({r.body for r in sim.requests}) == 1  # the same bytes each time
    await dispatcher.close()


async def test_a_batch_out_of_retries_dead_letters_each_delivery(sim: PartnerSimulator) -> None:
    router, dispatcher, _ = tiktok_stack(sim, {"max_wait_ms": 20})
    sim.fault("tiktok", then={"status": 200, "code": 40133, "message": "Too frequent"})
    _, results = await deliver_all(router, dispatcher, orders(2))
    for result in results:
        assert result.outcome == "dead_lettered" and result.failure is not None
        assert (result.failure.type, result.failure.attempts) == ("RetryableError", 4)
        assert "TikTok code 40133: Too frequent (throttled)" in result.failure.message
    assert len(sim.requests) == 4
    await dispatcher.close()


async def test_partial_success_is_delivered_and_counted(sim: PartnerSimulator) -> None:
    router, dispatcher, metrics = tiktok_stack(sim, {"max_wait_ms": 20})
    sim.fault("tiktok", sequence=[{"status": 200, "code": 20001, "message": "Partial success"}])
    _, results = await deliver_all(router, dispatcher, orders(3))
    assert [r.outcome for r in results] == ["delivered"] * 3
    assert (
        metrics.registry.get_sample_value("streamproc_partner_partial_successes_total", {"destination": "tt"})
        == 1
    )
    await dispatcher.close()


async def test_a_subscription_with_batch_false_is_not_batched(sim: PartnerSimulator) -> None:
    dispatcher = tiktok_stack(sim, {"max_wait_ms": 20})[1]
    assert dispatcher._batchers
    off = tiktok_stack(sim, False)[1]
    assert not off._batchers
    await dispatcher.close()
    await off.close()


async def test_flush_sends_open_batches_at_once(sim: PartnerSimulator) -> None:
    router, dispatcher, _ = tiktok_stack(sim, {"max_wait_ms": 60_000})
    deliveries = [d for e in orders(3) for d in router.route(e)]
    tasks = [asyncio.create_task(dispatcher.deliver(d)) for d in deliveries]
    await asyncio.sleep(0)
    assert sim.requests == []
    dispatcher.flush()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert [r.outcome for r in results] == ["delivered"] * 3
    assert [len(r.events()) for r in sim.requests] == [3]
    await dispatcher.close()
