"""Feeding a run's event processor from ranges of a topic: a bound on the events and bytes in
flight, an optional rate, a watermark per partition, and checkpoints now and then (replay and
`dlq redrive` share it; `RangeReader` of streamproc.kafka.ranges reads the messages)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import structlog

from streamproc.dispatch import TokenBucket
from streamproc.kafka.backpressure import message_size
from streamproc.kafka.offsets import OffsetTracker
from streamproc.kafka.ranges import RangeReader
from streamproc.kafka.reader import Partition, wait_for_in_flight
from streamproc.summary import Summary

__all__ = ["Checkpoint", "MessageHandler", "RangeFeed", "run_ranges"]

log = structlog.get_logger("streamproc.replay")

MessageHandler = Callable[[Any, Partition], None]
"""Takes one message into work (an `EventProcessor.process`, or redrive's choice of what to redeliver)."""


class RangeFeed:
    """Feeds messages to a handler with a bound on the events and bytes in flight and an optional
    rate (one message is always let in, however large).

    Every message is added to its partition's `OffsetTracker` before it is handed over; the handler
    (through its `EventProcessor`) calls `complete` when the message's work is done, or `fail` to
    stop the run with it unfinished. `watermarks()` is what is safe to record as done.
    """

    def __init__(
        self,
        topic: str,
        *,
        summary: Summary | None = None,
        max_in_flight: int = 1000,
        max_bytes: int = 1 << 62,
        rate: float | None = None,
        on_drain: Callable[[], None] | None = None,
    ) -> None:
        self.topic = topic
        self._summary = summary
        # Called when the drain starts, so work held back on purpose (open batches) goes out at once.
        self._on_drain = on_drain
        self._slots = asyncio.Semaphore(max_in_flight)
        self._max_bytes = max_bytes
        self._bytes = 0
        self._sizes: dict[tuple[int, int], int] = {}
        self._room = asyncio.Event()
        self._bucket = TokenBucket(rate, burst=1.0) if rate else None
        self.lanes: dict[int, Partition] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._events = 0
        self.completed = 0
        self.fatal: BaseException | None = None
        self.stop = asyncio.Event()

    def lane(self, partition: int) -> Partition:
        lane = self.lanes.get(partition)
        if lane is None:
            # One task set for every partition: the run drains them all together.
            tracker = OffsetTracker(self.topic, partition)
            lane = self.lanes[partition] = Partition(self.topic, partition, tracker, self._tasks)
        return lane

    def watermarks(self) -> dict[int, int]:
        return {p: w for p, lane in self.lanes.items() if (w := lane.tracker.watermark()) is not None}

    @property
    def in_flight(self) -> int:
        """Messages taken into work and not yet complete."""
        return self._events

    def complete(self, lane: Partition, offset: int) -> None:
        lane.tracker.complete(offset)
        self._events -= 1
        self.completed += 1
        self._slots.release()
        self._bytes -= self._sizes.pop((lane.partition, offset), 0)
        self._room.set()

    def fail(self, exc: BaseException, _reason: str | None = None) -> None:
        """Stop taking messages; the offset of the failed work is never marked done."""
        if self.fatal is None:
            self.fatal = exc
        self.stop.set()
        self._room.set()

    async def feed(
        self,
        batches: AsyncIterator[list[Any]],
        handle: MessageHandler,
        on_progress: Callable[[], Any] | None = None,
    ) -> None:
        """Hand every message of `batches` to `handle` (waiting for room and for the rate limit)."""
        async for batch in batches:
            for msg in batch:
                if self.stop.is_set():
                    return
                await self._slots.acquire()
                size = message_size(msg)
                while self._bytes and self._bytes + size > self._max_bytes and not self.stop.is_set():
                    self._room.clear()
                    await self._room.wait()
                if self._bucket is not None:
                    await self._bucket.acquire()
                if self.stop.is_set():
                    self._slots.release()
                    return
                lane = self.lane(msg.partition())
                lane.tracker.add(msg.offset())
                self._sizes[(lane.partition, msg.offset())] = size
                self._bytes += size
                self._events += 1
                if self._summary is not None:
                    self._summary.read += 1
                handle(msg, lane)
            if on_progress is not None:
                on_progress()
            if self.fatal is not None:
                raise self.fatal

    async def drain(self, timeout: float) -> int:
        """Wait for in-flight work up to `timeout`, then give up the rest (cancel its tasks; what
        has not started yet never starts); returns how many messages were left unfinished."""
        if self._on_drain is not None:
            self._on_drain()
        await wait_for_in_flight(self.lanes.values(), time.monotonic() + timeout)
        left = self._events
        for lane in self.lanes.values():
            lane.tracker.close()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return left


# -- the replay itself -----------------------------------------------------------------------------


Checkpoint = Callable[[dict[int, int], bool], Awaitable[None]]
"""Records watermarks as done (`final` is True for the last call of a run)."""


async def run_ranges(
    reader: RangeReader,
    ranges: Mapping[int, tuple[int, int]],
    feed: RangeFeed,
    handle: MessageHandler,
    checkpoint: Checkpoint,
    *,
    every: float = 2.0,
    shutdown_timeout: float = 30.0,
    on_progress: Callable[[int], Any] | None = None,
) -> None:
    """Read `ranges` into `handle` through `feed`; `checkpoint(watermarks, final)` now and then and
    once at the end (also after an interruption or a fatal error: what is complete stays complete).

    A checkpoint in the middle runs beside the deliveries, one at a time, so a slow one (markers
    waiting for the broker) never holds up the work in flight; if it fails, the run stops."""
    for p in ranges:
        feed.lane(p)
    last = time.monotonic()
    running: asyncio.Task[None] | None = None

    def checkpointed(task: asyncio.Task[None]) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            feed.fail(exc)

    def tick() -> None:
        nonlocal last, running
        if on_progress is not None:
            on_progress(feed.completed)
        if time.monotonic() - last >= every and (running is None or running.done()):
            running = asyncio.ensure_future(checkpoint(feed.watermarks(), False))
            running.add_done_callback(checkpointed)
            last = time.monotonic()

    try:
        await _with_ticks(feed.feed(reader.read(ranges, feed.stop), handle, tick), tick)
        if feed.fatal is None:
            await _finish(feed, tick, shutdown_timeout)
    finally:
        if feed.in_flight:
            await feed.drain(shutdown_timeout)
        if running is not None:
            # Its failure is already the run's; the final checkpoint tries again.
            await asyncio.gather(running, return_exceptions=True)
        await checkpoint(feed.watermarks(), True)
        if on_progress is not None:
            on_progress(feed.completed)
    if feed.fatal is not None:
        raise feed.fatal


async def _with_ticks(work: Awaitable[None], tick: Callable[[], None], every: float = 0.5) -> None:
    """Run `work`, calling `tick` periodically even while it waits (rate limit, full in-flight)."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=every)
            tick()
        task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _finish(feed: RangeFeed, tick: Callable[[], None], timeout: float) -> None:
    """After the last message: wait for the work still in flight (it may be retrying)."""
    deadline = time.monotonic() + max(timeout, 3600.0)
    while feed.in_flight and time.monotonic() < deadline and not feed.stop.is_set():
        await asyncio.sleep(0.1)
        tick()
