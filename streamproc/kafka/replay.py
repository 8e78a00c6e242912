"""Replays a time or offset range of a topic through the live routing, without touching the live group.

The replay consumer *assigns* partitions (no group membership, no commit), so the workers'
committed offsets never move. Each message is decoded, routed (optionally only some destinations
or subscriptions), delivered through the same per-destination bulkheads as the worker, and failed
deliveries are dead-lettered like the worker's. Progress is the per-partition contiguous
watermark (an `OffsetTracker` per partition, as in the worker), saved to a state file now and then
and at exit (or to a progress group in Kafka, `streamproc.kafka.replay_progress`); a rerun with the
same state file or group continues from there, re-sending at most the events that were in flight when
it stopped.

Each message goes through the same `EventProcessor` as in the worker (`streamproc.pipeline`);
what is replay's own is where messages come from and how progress is kept. The pieces shared with
`dlq redrive` live here too: `RangeReader` (reads assigned partitions up to fixed end offsets,
every consumer call on its own thread), `RangeFeed` (feeds the processor with a bound on the events
in flight and an optional rate, and keeps a watermark per partition) and `run_ranges`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import confluent_kafka
import orjson
import structlog
from confluent_kafka import TopicPartition

from streamproc.config import KafkaConfig
from streamproc.core.js import parse_iso_time
from streamproc.dispatch import TokenBucket
from streamproc.errors import KafkaError, StreamprocError
from streamproc.kafka.backpressure import message_size
from streamproc.kafka.consumer import Partition, wait_for_in_flight
from streamproc.kafka.offsets import OffsetTracker
from streamproc.kafka.settings import consumer_settings
from streamproc.summary import Summary

__all__ = [
    "RangeFeed",
    "RangeReader",
    "ReplayState",
    "parse_position",
    "resolve_ranges",
    "run_ranges",
    "run_replay",
]

log = structlog.get_logger("streamproc.replay")

PartitionRanges = dict[int, tuple[int, int]]
"""partition -> (first offset to read, first offset not to read)."""


# -- ranges ----------------------------------------------------------------------------------------

_OFFSET_LIST = re.compile(r"^\s*\d+\s*:\s*\d+\s*(,\s*\d+\s*:\s*\d+\s*)*$")


@dataclass(frozen=True)
class Position:
    """Where a range starts or ends: a time, one offset for every partition, or per-partition offsets."""

    kind: str  # "edge" (beginning/end), "time", "offset", "offsets"
    time_ms: int | None = None
    offset: int | None = None
    offsets: Mapping[int, int] | None = None


def parse_position(text: str | None, *, edge: str) -> Position:
    """`2026-11-23T10:00:00Z` (ISO-8601, UTC when no zone), `1200` (every partition),
    `0:1200,1:980` (per partition), `beginning`/`end`, or None for `edge`."""
    if text is None or text.strip().lower() in ("", edge, "beginning", "earliest", "end", "latest"):
        word = (text or edge).strip().lower()
        return Position("edge", offset=0 if word in ("beginning", "earliest") else -1)
    t = text.strip()
    if t.isdigit():
        return Position("offset", offset=int(t))
    if _OFFSET_LIST.match(t):
        pairs = [p.split(":") for p in t.split(",")]
        return Position("offsets", offsets={int(p.strip()): int(o.strip()) for p, o in pairs})
    try:
        when = parse_iso_time(t)
    except ValueError:
        raise StreamprocError(
            f"cannot read position {text!r}: use an ISO-8601 time (2026-11-23T10:00:00Z), an offset "
            "for every partition (1200), per-partition offsets (0:1200,1:980), beginning or end"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return Position("time", time_ms=int(when.timestamp() * 1000))


def resolve_ranges(
    consumer: Any, topic: str, start: Position, end: Position, timeout: float = 10.0
) -> PartitionRanges:
    """Turn positions into concrete offsets per partition, clamped to what the topic holds now."""
    md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if md is None or md.error is not None or not md.partitions:
        raise KafkaError(f"topic {topic!r} not found ({md.error if md else 'no metadata'}); check --topic")
    parts = sorted(md.partitions)
    marks = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
        for p in parts
    }

    def at(pos: Position, is_end: bool) -> dict[int, int]:
        if pos.kind == "edge":
            return {p: marks[p][0] if pos.offset == 0 else marks[p][1] for p in parts}
        if pos.kind == "offset":
            return dict.fromkeys(parts, pos.offset or 0)
        if pos.kind == "offsets":
            assert pos.offsets is not None
            unknown = sorted(set(pos.offsets) - set(parts))
            if unknown:
                raise StreamprocError(f"topic {topic!r} has no partition {unknown[0]}")
            return {p: pos.offsets[p] for p in parts if p in pos.offsets}
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, pos.time_ms or 0) for p in parts], timeout=timeout
        )
        # -1: no message at or after the time, so the range edge is the partition's end.
        return {tp.partition: tp.offset if tp.offset >= 0 else marks[tp.partition][1] for tp in found}

    starts = at(start, False)
    ends = at(end, True)
    ranges: PartitionRanges = {}
    for p in parts:
        if p not in starts:
            continue
        low, high = marks[p]
        s = min(max(starts[p], low), high)
        e = min(max(ends.get(p, high), low), high)
        if e > s:
            ranges[p] = (s, e)
    return ranges


# -- reading ---------------------------------------------------------------------------------------


class RangeReader:
    """Reads assigned partitions from given offsets up to (not including) fixed end offsets.

    Every consumer call runs on one dedicated thread, so blocking polls never stall the event loop.
    """

    def __init__(self, conf: Mapping[str, Any], topic: str, *, batch: int = 500) -> None:
        self._conf = dict(conf)
        self.topic = topic
        self._batch = batch
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="kafka-range"
        )
        self.consumer: Any = None
        self._ends: dict[int, int] = {}

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a consumer call on the reader's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> Any:
        self.consumer = await self.call(confluent_kafka.Consumer, self._conf)
        return self.consumer

    async def read(
        self, ranges: Mapping[int, tuple[int, int]], stop: asyncio.Event
    ) -> AsyncIterator[list[Any]]:
        """Batches of messages in offset order per partition until every range is read or `stop` is set."""
        self._ends = {p: e for p, (s, e) in ranges.items() if e > s}
        if not self._ends:
            return
        await self.call(
            self.consumer.assign, [TopicPartition(self.topic, p, ranges[p][0]) for p in self._ends]
        )
        pending = set(self._ends)
        while pending and not stop.is_set():
            msgs = await self.call(self._consume)
            batch = []
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                        continue
                    if err.fatal() or not err.retriable():
                        raise KafkaError(f"reading {self.topic}: {err.str()}")
                    continue
                p = msg.partition()
                if p in pending and msg.offset() < self._ends[p]:
                    batch.append(msg)
            finished = await self.call(self._finished, pending)
            if finished:
                pending -= finished
                await self.call(self.consumer.pause, [TopicPartition(self.topic, p) for p in finished])
            if batch:
                yield batch

    def _consume(self) -> list[Any]:
        return list(self.consumer.consume(num_messages=self._batch, timeout=0.2))

    def _finished(self, pending: set[int]) -> set[int]:
        positions = self.consumer.position([TopicPartition(self.topic, p) for p in pending])
        return {tp.partition for tp in positions if tp.offset >= self._ends[tp.partition]}

    async def close(self) -> None:
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.call(self.consumer.close)
            self.consumer = None
        self._executor.shutdown(wait=False)


def range_consumer_config(kafka: KafkaConfig, group_id: str) -> dict[str, Any]:
    """A consumer that only assigns and never commits (the group id is only a label for the broker)."""
    conf: dict[str, Any] = {k: v for k, v in consumer_settings(kafka).items() if not k.startswith("group.")}
    conf.update(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            "queued.max.messages.kbytes": 16384,
        }
    )
    return conf


# -- feeding the processor ------------------------------------------------------------------------


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


@dataclass
class ReplayState:
    """What a replay has finished, so a rerun can continue: the ranges and the next offset per partition."""

    path: Path | None
    topic: str
    start: str | None
    end: str | None
    ranges: PartitionRanges
    next: dict[int, int]

    @classmethod
    def load(cls, path: Path) -> ReplayState | None:
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise StreamprocError(f"cannot read replay state {path}: {exc}") from None
        return cls(
            path,
            data["topic"],
            data.get("from"),
            data.get("to"),
            {int(p): (int(r[0]), int(r[1])) for p, r in data["ranges"].items()},
            {int(p): int(o) for p, o in data["next"].items()},
        )

    def save(self) -> None:
        if self.path is None:
            return
        data = {
            "version": 1,
            "topic": self.topic,
            "from": self.start,
            "to": self.end,
            "ranges": {str(p): list(r) for p, r in sorted(self.ranges.items())},
            "next": {str(p): o for p, o in sorted(self.next.items())},
            "saved_at": datetime.now(UTC).isoformat(),
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.path)

    def remaining(self) -> dict[int, tuple[int, int]]:
        return {
            p: (max(s, self.next.get(p, s)), e)
            for p, (s, e) in self.ranges.items()
            if self.next.get(p, s) < e
        }

    def total_left(self) -> int:
        return sum(e - s for s, e in self.remaining().values())


async def run_replay(
    reader: RangeReader,
    state: ReplayState,
    feed: RangeFeed,
    handle: MessageHandler,
    *,
    save_every: float = 2.0,
    shutdown_timeout: float = 30.0,
    on_progress: Callable[[int], Any] | None = None,
    store: Callable[[ReplayState], Awaitable[None]] | None = None,
) -> None:
    """Read the state's remaining ranges into `handle`, saving progress as it goes (to the state's
    file, or with `store`: the progress group's commits)."""

    async def save(watermarks: dict[int, int], _final: bool) -> None:
        state.next.update(watermarks)
        if store is not None:
            await store(state)
        else:
            state.save()

    await run_ranges(
        reader,
        state.remaining(),
        feed,
        handle,
        save,
        every=save_every,
        shutdown_timeout=shutdown_timeout,
        on_progress=on_progress,
    )


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
