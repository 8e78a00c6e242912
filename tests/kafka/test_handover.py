"""Handing a partition over without sending anything twice: the consumer loop, the event pipeline
and the dispatcher over a scripted stand-in for confluent-kafka's Consumer (one partition, its
commits kept with their metadata as the broker keeps them) and a real HTTP partner.

Owner 1 reads six events of two deliveries each; a revoke comes while one delivery waits in a
long retry backoff and another request is still on the wire. Owner 2 takes the partition from
owner 1's commit. Every request reaches the partner exactly once."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from http_stand_in import serving
from scripted_consumer import ScriptedConsumer

from streamproc.destinations.base import Request
from streamproc.dispatch import Bulkhead, BulkheadPolicy, Dispatcher
from streamproc.kafka.consumer import ConsumerLoop
from streamproc.kafka.progress import decode, delivery_key
from streamproc.metrics import Metrics
from streamproc.pipeline import EventProcessor
from streamproc.router import Delivery
from streamproc.runs.compose import build_senders

EVENTS = 6


@dataclass
class Partner:
    url: str = ""
    seen: collections.Counter[str] = field(default_factory=collections.Counter)
    accepted: collections.Counter[str] = field(default_factory=collections.Counter)
    failing: set[str] = field(default_factory=set)
    slow: dict[str, float] = field(default_factory=dict)


@pytest.fixture
async def partner() -> AsyncIterator[Partner]:
    state = Partner()

    async def handle(request: web.Request) -> web.Response:
        path = request.path
        state.seen[path] += 1
        if path in state.slow:
            await asyncio.sleep(state.slow[path])
        if path in state.failing:
            return web.Response(status=503, text="busy")
        state.accepted[path] += 1
        return web.Response(status=200)

    async with serving(handle) as url:
        state.url = url
        yield state


class TwoDestinations:
    """Every event goes to destinations `a` and `b`, one POST each to /<destination>/<messageId>."""

    def __init__(self, url: str) -> None:
        self.url = url

    def routed(self, event: Any, **_filters: Any) -> tuple[list[Delivery], tuple[tuple[str, str], ...]]:
        """The deliveries, and the destinations a gate withheld the event from (none)."""
        mid = event["messageId"]
        headers = {"content-type": "application/json"}
        deliveries = [
            Delivery(
                f"{mid}:{d}:s", d, "s", "track", [Request("POST", f"{self.url}/{d}/{mid}", headers, b"{}")]
            )
            for d in ("a", "b")
        ]
        return deliveries, ()


class NoDeadLetters:
    async def send(self, letter: Any) -> None:
        pytest.fail(f"nothing may be dead-lettered here, got {letter}")


class Owner:
    """One worker's consumer loop, processor and dispatcher over the scripted partition."""

    def __init__(self, partner: Partner, consumer: ScriptedConsumer) -> None:
        self.consumer = consumer
        self.metrics = Metrics()
        self.dispatcher = Dispatcher(
            [
                Bulkhead(
                    BulkheadPolicy(destination=d, backoff_initial=30.0, backoff_max=30.0, timeout=5.0),
                    metrics=self.metrics,
                )
                for d in ("a", "b")
            ]
        )
        processor = EventProcessor(
            router=TwoDestinations(partner.url),  # type: ignore[arg-type]
            decode=orjson.loads,
            senders=build_senders(self.dispatcher),
            dead_letters=NoDeadLetters(),  # type: ignore[arg-type]
            metrics=self.metrics,
            complete=ConsumerLoop.complete,
            halt=lambda exc, _reason: pytest.fail(f"halted: {exc!r}"),
        )
        self.loop = ConsumerLoop(
            {},
            ["t"],
            processor.process,
            metrics=self.metrics,
            commit_interval=60.0,
            revoke_timeout=30.0,
            waiting=self.dispatcher.waiting,
            consumer_factory=lambda conf: consumer,
        )
        self.task = asyncio.create_task(self.loop.run())

    def outcomes(self, outcome: str) -> float:
        return sum(
            self.metrics.registry.get_sample_value(
                "streamproc_deliveries_total", {"destination": d, "action": "track", "outcome": outcome}
            )
            or 0.0
            for d in ("a", "b")
        )

    async def stop(self) -> None:
        self.loop.request_stop()
        await self.task
        await self.loop.close()
        await self.dispatcher.close()


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.01)


async def test_a_revoke_gives_up_a_backoff_at_once_and_the_next_owner_sends_only_what_is_left(
    partner: Partner,
) -> None:
    partner.failing = {"/b/m2"}  # waits 30 s in its backoff after the first 503
    partner.slow = {"/a/m3": 0.5}  # on the wire when the revoke comes
    first = Owner(partner, ScriptedConsumer(EVENTS))
    # Everything but m2's `b` (in its backoff) and m3's `a` (on the wire) is done.
    await _until(lambda: sum(partner.accepted.values()) == 2 * EVENTS - 2 and partner.seen["/b/m2"] == 1)
    assert partner.seen["/a/m3"] == 1
    first.consumer.revoke_next = True
    started = time.monotonic()
    await _until(lambda: not first.loop.partitions)
    # Not held by the 30 s backoff; the request on the wire was awaited, not cut off.
    assert time.monotonic() - started < 5.0
    assert partner.accepted["/a/m3"] == 1
    # The delivery given up is neither dead-lettered nor failed: it is simply not finished.
    assert first.outcomes("dead_lettered") == 0 and first.outcomes("delivered") == 2 * EVENTS - 1
    commit = first.consumer.last_commit
    assert commit is not None and commit.offset == 2
    progress = decode(commit.metadata, 2)
    assert progress is not None
    assert progress.finished == ((3, EVENTS),)
    assert progress.parts == {2: frozenset({delivery_key("a", "s")})}
    await first.stop()

    partner.failing.clear()
    second = Owner(partner, ScriptedConsumer(EVENTS, commit))
    await _until(lambda: partner.accepted["/b/m2"] == 1)
    await _until(lambda: second.consumer.last_commit is not None and second.loop.in_flight() == 0)
    await second.stop()
    # Every request was accepted exactly once, across both owners.
    assert set(partner.accepted.values()) == {1} and len(partner.accepted) == 2 * EVENTS
    finished_before = second.metrics.registry.get_sample_value
    assert finished_before("streamproc_finished_before_total", {"topic": "t", "kind": "event"}) == 3
    assert finished_before("streamproc_finished_before_total", {"topic": "t", "kind": "delivery"}) == 1
    assert second.consumer.last_commit is not None
    assert second.consumer.last_commit.offset == EVENTS and not second.consumer.last_commit.metadata
