"""The retry consumer: reads parked deliveries back from the retry topics when they are due.

A delivery that has spent its in-memory retry share is written to its destination's retry topic
(`<kafka.retry_topic_prefix><destination>`), one topic per destination instance so that a long
outage of one partner never delays another partner's due retries: the retry consumer pauses a
partition whose head is not due yet, and with one shared topic that head could belong to the
partner that is down. A retry record is a dead letter (the consumed key, value and headers
unchanged, the `streamproc.*` headers of kafka/dlq.py) plus `streamproc.retry.next_attempt_at`,
`.deadline` (when the delivery's whole retry budget ends), `.parks` and `.parked_by`; kafka/dlq.py
reads them back (`RetryView`), and the per-key order bookkeeping is parking.py's `ParkedKeys`.

A record parked from input partition p goes to retry partition p, and the retry consumer of a
worker *assigns* (never subscribes) retry partition p of every destination exactly while its live
consumer owns input partition p: the worker that decides whether a key has a parked delivery is the
one that reads that key's retry records back. Its group `<group_id>.retry` only keeps positions.
All librdkafka calls of the retry consumer run on its own thread; nothing is committed on a retry
partition past a record that is not delivered, parked again or dead-lettered (an `OffsetTracker`
per partition, as for the live topic), and the records finished past that travel in the commit's
metadata, so the retry partition's next owner passes over them (streamproc.kafka.progress). A
released retry partition gives up its deliveries that wait at once, as a live one does.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import confluent_kafka
import structlog
from confluent_kafka import TopicPartition

from streamproc.kafka.backpressure import held_bytes
from streamproc.kafka.dlq import RetryView, next_attempt_at
from streamproc.kafka.offsets import OffsetTracker
from streamproc.kafka.polling import Commits, consume_batch, read_watermarks, refresh_high_watermarks
from streamproc.kafka.reader import Partition, PartitionReader, let_go
from streamproc.metrics import Metrics

if TYPE_CHECKING:
    from streamproc.parking import ParkedKeys

__all__ = ["RetryConsumer", "retry_group"]

log = structlog.get_logger("streamproc.retry")


def retry_group(group_id: str) -> str:
    """The consumer group that keeps the retry consumer's positions."""
    return f"{group_id}.retry"


RetryHandler = Callable[[Any, Partition, RetryView], None]
"""Starts the work for one due retry record (its headers read once, the view); must call
`RetryConsumer.complete` when it is done."""


@dataclass(eq=False)
class _RetryPartition(Partition):
    destination: str = ""
    due_at: float | None = None
    """Paused with its head not due yet: resume (it was sought back to the head) at this time."""
    head: int | None = None
    held: bool = False
    """The pause and the seek back to `head` are done (in the consumer's thread)."""
    oldest: dict[int, float] = field(default_factory=dict)
    """In-flight offset -> first attempt time, for the oldest-parked gauge."""
    head_since: float | None = None


class RetryConsumer(PartitionReader[_RetryPartition]):
    """Reads the retry topics of the partitions the live consumer owns, each record no earlier than
    it is due, pausing at an in-flight bound of its own (the live consumer's numbers)."""

    def __init__(
        self,
        config: Mapping[str, Any],
        topics: Mapping[str, str],
        handler: RetryHandler,
        *,
        live_partitions: Callable[[], set[int]],
        metrics: Metrics,
        release_timeout: float = 15.0,
        parked_keys: ParkedKeys | None = None,
        ordered: frozenset[str] = frozenset(),
        not_before: Callable[[str], float] = lambda destination: 0.0,
        poll_batch_size: int = 500,
        max_in_flight_events: int = 10000,
        resume_in_flight_events: int = 5000,
        max_in_flight_bytes: int = 1 << 62,
        resume_in_flight_bytes: int = 1 << 61,
        commit_interval: float = 5.0,
        poll_timeout: float = 0.1,
        metadata_max_bytes: int = 4096,
        waiting: Collection[asyncio.Task[Any]] = frozenset(),
        consumer_factory: Callable[[dict[str, Any]], Any] = confluent_kafka.Consumer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            config,
            handler,
            what="retry consumer",
            logger=log,
            metrics=metrics,
            commits=Commits(
                logger=log, failed_event="retry_commit_failed", metadata_max_bytes=metadata_max_bytes
            ),
            thread_name="kafka-retry",
            poll_batch_size=poll_batch_size,
            max_in_flight_events=max_in_flight_events,
            resume_in_flight_events=resume_in_flight_events,
            max_in_flight_bytes=max_in_flight_bytes,
            resume_in_flight_bytes=resume_in_flight_bytes,
            commit_interval=commit_interval,
            poll_timeout=poll_timeout,
            waiting=waiting,
            consumer_factory=consumer_factory,
        )
        self.topics = dict(topics)
        self._dest_of = {t: d for d, t in topics.items()}
        self._live_partitions = live_partitions
        self._started = asyncio.Event()
        self._keys = parked_keys
        self._ordered = ordered
        self._not_before = not_before
        self._release_timeout = release_timeout
        self._clock = clock
        self._to_hold: list[_RetryPartition] = []
        self._lock = asyncio.Lock()

    def complete(self, part: Partition, offset: int) -> None:
        assert isinstance(part, _RetryPartition)
        part.oldest.pop(offset, None)
        part.tracker.complete(offset)
        self._passed(part)

    def _passed(self, part: _RetryPartition) -> None:
        if self._keys is not None and part.destination in self._ordered:
            wm = part.tracker.watermark()
            if wm is not None:
                self._keys.passed(part.destination, part.partition, wm)

    # -- the loop --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Follow the live assignment and hand due records to the handler until asked to stop."""
        self._consumer = await self._in_thread(self._factory, self._conf)
        self._started.set()
        next_commit = time.monotonic() + self._commit_interval
        next_gauges = 0.0
        while not self._stopping:
            async with self._lock:
                await self._follow_live()
                # Its own bound, of the live consumer's size: a live backlog never starves due retries.
                self._want_paused = self._bound.update(self.in_flight(), held_bytes(self._parts.values()))
                now = self._clock()
                resume = [
                    p for p in self._parts.values() if p.held and p.due_at is not None and p.due_at <= now
                ]
                for p in resume:
                    p.due_at = p.head = p.head_since = None
                    p.held = False
                hold, self._to_hold = self._to_hold, []
                offsets = None
                if self._commits.again or time.monotonic() >= next_commit:
                    offsets = self._commits.due(self._parts.values())
                    next_commit = time.monotonic() + self._commit_interval
                batch = await self._in_thread(self._poll, hold, resume, self._want_paused, offsets)
            for msg in batch:
                if self._stopping:
                    break
                self._accept(msg)
            if time.monotonic() >= next_gauges:
                next_gauges = time.monotonic() + 1.0
                await self._update_gauges()
        if self._fatal is not None:
            raise self._fatal

    async def assign_live(self, partitions: list[int], timeout: float = 30.0) -> None:
        """The live consumer was given these input partitions: assign their retry partitions now,
        so the ordered keys' barriers are known before the first live message is handled."""
        try:
            await asyncio.wait_for(self._started.wait(), timeout)
        except TimeoutError:
            return  # the barriers stay up until the loop assigns them (everything parks behind)
        async with self._lock:
            if self._consumer is not None and not self._stopping:
                await self._follow_live()

    async def _follow_live(self) -> None:
        wanted = self._live_partitions()
        if self._stopping:
            return
        have = {p for _, p in self._parts}
        gone = [TopicPartition(t, p) for (t, p) in self._parts if p not in wanted]
        if gone:
            await self._release(gone, self._release_timeout)
        new = sorted(wanted - have)
        if new:
            for dest, partition, end, position in await self._in_thread(self._assign, new):
                if self._keys is not None and dest in self._ordered:
                    self._keys.barrier(dest, partition, end, position)
        if self._keys is not None:
            # Input partition p came (again) while its retry partition stayed: what is there now
            # was parked before this worker's bookkeeping of p started.
            for dest, partition in self._keys.pending():
                part = self._parts.get((self.topics[dest], partition)) if dest in self.topics else None
                if part is not None:
                    wm = part.tracker.watermark()
                    start = wm if wm is not None else part.committed or 0
                    self._keys.barrier(dest, partition, max(part.high or 0, start), start)

    def _accept(self, msg: Any) -> None:
        if not self._readable(msg):
            return
        part = self._parts.get((msg.topic(), msg.partition()))
        if part is None or part.revoking or part.head is not None:
            return  # paused until its head is due: the head is read again after the seek
        offset = msg.offset()
        if not self._fresh(part, offset):
            return
        # A record is also held while its destination's circuit is open: reading it then would only
        # park it again (one write per record per park wait, for the whole outage).
        due = max(next_attempt_at(msg), self._not_before(part.destination))
        view = RetryView.of(msg)
        if due > self._clock():
            # Never sleep here: pause the partition and read this record again once it is due.
            part.head, part.due_at = offset, due
            kind, ts = msg.timestamp()
            part.head_since = view.first_attempt_at or (ts / 1000 if kind and ts > 0 else None)
            self._to_hold.append(part)
            return
        if not self._take(part, msg, offset):
            return
        if view.first_attempt_at is not None:
            part.oldest[offset] = view.first_attempt_at
        self._handler(msg, part, view)

    async def _update_gauges(self) -> None:
        now = self._clock()
        lag: Counter[str] = Counter()
        oldest: dict[str, float] = dict.fromkeys(self.topics, 0.0)
        for part in self._parts.values():
            dest = part.destination
            wm = part.tracker.watermark()
            start = wm if wm is not None else part.committed
            if part.high is not None and start is not None:
                lag[dest] += max(0, part.high - start)
            times = list(part.oldest.values())
            if part.head_since is not None and part.head is not None:
                times.append(part.head_since)
            if times:
                oldest[dest] = max(oldest[dest], now - min(times))
        for dest in self.topics:
            self._metrics.retry_pending.labels(dest).set(lag.get(dest, 0))
            self._metrics.retry_oldest.labels(dest).set(oldest[dest])

    # -- kafka thread ------------------------------------------------------------------------------
    def _assign(self, partitions: list[int]) -> list[tuple[str, int, int, int]]:
        """Assign the retry partitions of these numbers at the group's position; returns
        (destination, partition, end, position) of each, for the barriers of ordered keys."""
        c = self._consumer
        out = []
        tps = [TopicPartition(t, p) for t in self.topics.values() for p in partitions]
        committed = {(tp.topic, tp.partition): tp for tp in c.committed(tps, timeout=10)}
        starts = []
        for tp in tps:
            low, high = read_watermarks(c, tp)
            last = committed.get((tp.topic, tp.partition))
            pos = -1 if last is None or last.offset is None else last.offset
            pos = low if pos < 0 else min(max(pos, low), high)
            dest = self._dest_of[tp.topic]
            part = _RetryPartition(tp.topic, tp.partition, OffsetTracker(tp.topic, tp.partition))
            part.destination = dest
            if last is not None and last.offset == pos:
                # What the last owner finished past its commit is passed over, not sent again.
                part.start_from(last)
            part.committed, part.high = pos, high
            self._parts[(tp.topic, tp.partition)] = part
            out.append((dest, tp.partition, high, pos))
            starts.append(TopicPartition(tp.topic, tp.partition, pos))
        c.incremental_assign(starts)
        if self._want_paused and self._paused:
            c.pause(starts)
        log.info("retry_partitions_assigned", partitions=[f"{t.topic}[{t.partition}]" for t in starts])
        return out

    def _poll(
        self,
        hold: list[_RetryPartition],
        resume: list[_RetryPartition],
        want_paused: bool,
        offsets: list[TopicPartition] | None,
    ) -> list[Any]:
        c = self._consumer
        for part in hold:
            if part.head is None or (part.topic, part.partition) not in self._parts:
                continue
            tp = TopicPartition(part.topic, part.partition)
            c.pause([tp])
            c.seek(TopicPartition(part.topic, part.partition, part.head))
            part.held = True
        if want_paused != self._paused:
            tps = [TopicPartition(p.topic, p.partition) for p in self._parts.values()]
            if want_paused:
                c.pause(tps)
            else:
                c.resume(
                    [TopicPartition(p.topic, p.partition) for p in self._parts.values() if p.head is None]
                )
            self._paused = want_paused
        if resume and not self._paused:
            c.resume([TopicPartition(p.topic, p.partition) for p in resume])
        if offsets:
            self._commits.commit(c, offsets, self._parts)
        if offsets is not None:
            refresh_high_watermarks(c, self._parts.values())
        return consume_batch(c, self._batch, self._poll_timeout)

    def _unassign(self, tps: list[TopicPartition]) -> None:
        if tps:
            self._consumer.incremental_unassign(tps)

    # -- release and shutdown --------------------------------------------------------------------
    async def release_live(self, partitions: list[int], timeout: float) -> None:
        """The live consumer gives up input partitions: finish and commit their retry partitions
        first, so their next owner starts where this one stopped."""
        if self._consumer is None:
            return
        async with self._lock:
            tps = [TopicPartition(t, p) for (t, p) in self._parts if p in partitions]
            await self._release(tps, timeout)

    async def _release(self, tps: list[TopicPartition], timeout: float) -> None:
        """Give up the deliveries of these retry partitions that wait, await those on the wire up
        to `timeout`, commit the partitions and unassign them."""
        parts = [p for tp in tps if (p := self._parts.get((tp.topic, tp.partition))) is not None]
        if not parts:
            return
        for part in parts:
            part.revoking = True
        await let_go(parts, time.monotonic() + timeout, self._waiting)
        offsets = []
        for part in parts:
            point = part.commit_point(self._commits.metadata_max_bytes)
            part.tracker.close()
            for task in list(part.tasks):
                task.cancel()
            self._parts.pop(part.key, None)
            if point is not None:
                offsets.append(point)
        if self._keys is not None:
            for number in {part.partition for part in parts}:
                self._keys.drop(number)

        def finish() -> None:
            if offsets:
                self._commits.commit(self._consumer, offsets, self._parts)
            self._unassign([TopicPartition(p.topic, p.partition) for p in parts])

        await self._in_thread(finish)

    async def close(self, until: float | None = None) -> None:
        """Give up the deliveries that wait, await those on the wire until `until` (monotonic;
        default now), commit every retry partition and close the consumer."""
        if self._consumer is None:
            self._executor.shutdown(wait=False)
            return
        timeout = 0.0 if until is None else max(0.0, until - time.monotonic())
        async with self._lock:
            await self._release([TopicPartition(t, p) for t, p in list(self._parts)], timeout)
        await self._in_thread(self._consumer.close)
        self._consumer = None
        self._executor.shutdown(wait=True)
