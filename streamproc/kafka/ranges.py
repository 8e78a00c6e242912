"""Reading ranges of a topic with assigned partitions: where a range starts and ends (times,
offsets, a group's committed position) and a reader that stops at fixed end offsets.

`RangeReader` never joins a consumer group and never commits by itself (the group id is only a
label for the broker, or the group whose position a caller commits): replay, `dlq redrive`,
`dlq inspect` and `retry inspect` read with it, and the live consumer group never moves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import confluent_kafka
import structlog
from confluent_kafka import OFFSET_INVALID, TopicPartition

from streamproc.config import KafkaConfig
from streamproc.core.js import parse_iso_time
from streamproc.errors import KafkaError, StreamprocError
from streamproc.kafka.settings import consumer_settings

__all__ = [
    "PartitionRanges",
    "Position",
    "RangeReader",
    "parse_position",
    "range_consumer_config",
    "resolve_ranges",
    "start_offsets",
    "whole_topic",
]

log = structlog.get_logger("streamproc.ranges")

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


def deleted_from(
    consumer: Any, topic: str, ranges: Mapping[int, tuple[int, int]], timeout: float = 10.0
) -> dict[int, tuple[int, int]]:
    """The part of each range the topic no longer holds: offsets below the partition's first one,
    deleted by retention (or by a deletion of records) since the range was resolved, for the caller
    to say before reading (then `RangeReader.told`); what goes while the range is being read, the
    reader itself reports (`on_deleted`)."""
    gone: dict[int, tuple[int, int]] = {}
    for p, (s, e) in ranges.items():
        low, _high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
        if s < low and s < e:
            gone[p] = (s, min(low, e))
    return gone


# -- reading ---------------------------------------------------------------------------------------


class RangeReader:
    """Reads assigned partitions from given offsets up to (not including) fixed end offsets.

    Every consumer call runs on one dedicated thread, so blocking polls never stall the event loop.
    """

    def __init__(
        self,
        conf: Mapping[str, Any],
        topic: str,
        *,
        batch: int = 500,
        on_deleted: Callable[[int, int, int], None] | None = None,
    ) -> None:
        """`on_deleted(partition, first, low)`: records `first` to `low - 1` of a range were
        deleted (by retention, or a deletion of records) before they were read; reading goes on
        from `low`. Also logged as `range_records_deleted`."""
        self._conf = dict(conf)
        self.topic = topic
        self._batch = batch
        self.on_deleted = on_deleted
        self._told: dict[int, int] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="kafka-range"
        )
        self.consumer: Any = None
        self._ends: dict[int, int] = {}
        self._next: dict[int, int] = {}

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
        self._next = {p: s for p, (s, e) in ranges.items() if e > s}
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
                    if err.code() == confluent_kafka.KafkaError._AUTO_OFFSET_RESET:
                        # The next records to read are gone: said, then read past, never in silence.
                        p = msg.partition()
                        # The offset the fetch asked for (where reading stood, should it not say).
                        at = msg.offset() if msg.offset() >= 0 else self._next[p]
                        low = await self.call(self._past_deleted, p, at)
                        self._say_deleted(p, at, low)
                        if low >= self._ends[p]:
                            pending.discard(p)  # the rest of its range is gone
                        continue
                    if err.fatal() or not err.retriable():
                        raise KafkaError(f"reading {self.topic}: {err.str()}")
                    continue
                p = msg.partition()
                if p in pending and msg.offset() < self._ends[p]:
                    batch.append(msg)
                    self._next[p] = msg.offset() + 1
            finished = await self.call(self._finished, pending)
            if finished:
                pending -= finished
                await self.call(self.consumer.pause, [TopicPartition(self.topic, p) for p in finished])
            if batch:
                yield batch

    def told(self, gone: Mapping[int, tuple[int, int]]) -> None:
        """Gaps the caller has already reported (`deleted_from`): reading past them says nothing more."""
        for p, (_first, low) in gone.items():
            self._told[p] = low

    def _past_deleted(self, partition: int, offset: int) -> int:
        """Move `partition`'s reading from `offset`, which the topic no longer holds, to its first
        record left (or the range's end), and return that offset."""
        tp = TopicPartition(self.topic, partition)
        low, high = self.consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        end = self._ends.get(partition, high)
        if offset >= low:
            raise KafkaError(
                f"reading {self.topic}[{partition}]: offset {offset} is past the partition's end ({high});"
                " was the topic deleted and created again?"
            )
        resume = min(low, end)
        # A partition whose fetch failed so cannot be sought: it is assigned again where it goes on.
        self.consumer.incremental_unassign([tp])
        if resume < end:
            self.consumer.incremental_assign([TopicPartition(self.topic, partition, resume)])
        return resume

    def _say_deleted(self, partition: int, first: int, low: int) -> None:
        if self._told.get(partition) == low:
            return
        self._told[partition] = low
        log.warning(
            "range_records_deleted",
            topic=self.topic,
            partition=partition,
            first=first,
            low=low,
            events=low - first,
        )
        if self.on_deleted is not None:
            self.on_deleted(partition, first, low)

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
            # Records deleted before they are read raise an error rather than being passed over in
            # silence: the reader says so, then goes on from the first record left.
            "auto.offset.reset": "error",
            "queued.max.messages.kbytes": 16384,
        }
    )
    return conf


def start_offsets(consumer: Any, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """For each partition: (the group's committed offset, else the beginning; the end right now)."""
    md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if md is None or md.error is not None:
        raise StreamprocError(f"dead-letter topic {topic!r} not found ({md.error if md else 'no metadata'})")
    parts = sorted(md.partitions)
    committed = {
        tp.partition: tp.offset
        for tp in consumer.committed([TopicPartition(topic, p) for p in parts], timeout=timeout)
    }
    out: dict[int, tuple[int, int]] = {}
    for p in parts:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
        c = committed.get(p, OFFSET_INVALID)
        start = c if c is not None and c >= 0 else low
        start = min(max(start, low), high)
        if high > start:
            out[p] = (start, high)
    return out


def whole_topic(
    consumer: Any, topic: str, what: str = "topic", timeout: float = 10.0
) -> dict[int, tuple[int, int]]:
    """For each partition that holds records: (its first offset, its end right now); `what` names
    the topic in the error when it does not exist."""
    md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if md is None or md.error is not None:
        raise KafkaError(f"{what} {topic!r} not found ({md.error if md else 'no metadata'})")
    out: dict[int, tuple[int, int]] = {}
    for p in md.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
        if high > low:
            out[p] = (low, high)
    return out
