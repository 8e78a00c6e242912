"""Parked deliveries: the retry-record format, per-key order bookkeeping, and the retry consumer.

A delivery that has spent its in-memory retry share is written to its destination's retry topic
(`<kafka.retry_topic_prefix><destination>`), one topic per destination instance so that a long
outage of one partner never delays another partner's due retries: the retry consumer pauses a
partition whose head is not due yet, and with one shared topic that head could belong to the
partner that is down. A retry record is a dead letter (the consumed key, value and headers
unchanged, the `streamproc.*` headers of kafka/dlq.py) plus `streamproc.retry.next_attempt_at`,
`.deadline` (when the delivery's whole retry budget ends), `.parks` and `.parked_by`.

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
import concurrent.futures
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import confluent_kafka
import orjson
import structlog
from confluent_kafka import TopicPartition

from streamproc.errors import KafkaError, StreamprocError
from streamproc.kafka.backpressure import InFlightBound, held_bytes, message_size
from streamproc.kafka.consumer import Partition, let_go
from streamproc.kafka.headers import read_headers, text
from streamproc.kafka.offsets import OffsetTracker
from streamproc.kafka.polling import Commits, consume_batch, read_watermarks, refresh_high_watermarks
from streamproc.kafka.redrive import DeadLetterView, Detail, parse_time, sample_lines
from streamproc.masking import Masker
from streamproc.metrics import Metrics

__all__ = ["ParkedKeys", "ParkedRecord", "RetryConsumer", "RetryInspection", "RetryView", "retry_group"]

log = structlog.get_logger("streamproc.retry")


def retry_group(group_id: str) -> str:
    """The consumer group that keeps the retry consumer's positions."""
    return f"{group_id}.retry"


def _unix(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return parse_time(text).timestamp()
    except StreamprocError:
        return None


@dataclass(frozen=True, slots=True)
class ParkedRecord:
    """What a retry record carries into its next delivery: the spent share, and who parked it."""

    attempts: int
    first_attempt_at: float | None
    deadline_at: float | None
    parks: int
    parked_by: str | None
    original_offset: int
    retry_offset: int
    reason: str | None


@dataclass(frozen=True)
class RetryView:
    """The headers of one retry record that decide what happens to it."""

    letter: DeadLetterView
    next_attempt_at: float
    deadline_at: float | None
    first_attempt_at: float | None
    parks: int
    parked_by: str | None
    original_offset: int

    @classmethod
    def of(cls, msg: Any) -> RetryView:
        view = DeadLetterView.of(msg)
        due = _unix(view.get("retry.next_attempt_at"))
        if due is None:
            due = view.timestamp_ms / 1000 if view.timestamp_ms is not None else 0.0
        return cls(
            view,
            due,
            _unix(view.get("retry.deadline")),
            _unix(view.get("first_attempt_at")),
            view.number("retry.parks", 1),
            view.get("retry.parked_by"),
            view.number("original.offset", -1),
        )

    @property
    def destination(self) -> str | None:
        return self.letter.destination

    @property
    def subscription(self) -> str | None:
        return self.letter.subscription

    def parked(self) -> ParkedRecord:
        return ParkedRecord(
            attempts=self.letter.attempts,
            first_attempt_at=self.first_attempt_at,
            deadline_at=self.deadline_at,
            parks=self.parks,
            parked_by=self.parked_by,
            original_offset=self.original_offset,
            retry_offset=self.letter.offset,
            reason=self.letter.get("error.message"),
        )


def next_attempt_at(msg: Any) -> float:
    """When a retry record is due (read from its header alone; the hot check of the reader)."""
    for k, v in read_headers(msg)[0]:
        if k == "streamproc.retry.next_attempt_at" and v:
            due = _unix(text(v))
            if due is not None:
                return due
    return 0.0


KeyRef = tuple[str, int, str]
"""(destination, partition, ordering key)."""


class ParkedKeys:
    """Which keys of `ordering: key` destinations have deliveries parked in the retry topic.

    A live delivery of such a key parks behind them, so a key's deliveries reach the partner in
    offset order. The counts cover the records this worker run wrote (`parked_by == run_id`) and
    the ones it adopted by parking them again; records left by an earlier owner of a partition are
    covered by a barrier instead: from the assignment of input partition p until the retry
    consumer has passed the end its retry partition had then, every delivery of that destination
    from p parks behind. Memory: one entry per key with parked deliveries, per destination.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._count: dict[KeyRef, int] = {}
        self._moved: dict[KeyRef, tuple[int, int]] = {}
        """key -> (latest original offset parked again, the retry offset it went to)."""
        self._barrier: dict[tuple[str, int], int | None] = {}
        """(destination, partition) -> retry end offset to pass (None: not known yet)."""

    def __len__(self) -> int:
        return len(self._count)

    def holds(self, ref: KeyRef) -> bool:
        """Whether a live delivery of this key must park behind earlier ones."""
        return (ref[0], ref[1]) in self._barrier or ref in self._count

    def must_follow(self, ref: KeyRef, retry_offset: int, original_offset: int) -> bool:
        """Whether a retry record must park again because an earlier delivery of its key was parked
        again to a later position (it must stay behind that one)."""
        moved = self._moved.get(ref)
        return moved is not None and moved[1] > retry_offset and moved[0] < original_offset

    def parked(self, ref: KeyRef, new: bool, original_offset: int, retry_offset: int, again: bool) -> None:
        """A record for `ref` was written at `retry_offset`; `new`: not counted yet."""
        if new:
            self._count[ref] = self._count.get(ref, 0) + 1
        if again:
            self._moved[ref] = (original_offset, retry_offset)

    def finished(self, ref: KeyRef, parked_by: str | None) -> None:
        """A retry record for `ref` was delivered or dead-lettered."""
        if parked_by != self.run_id:
            return
        left = self._count.get(ref, 0) - 1
        if left > 0:
            self._count[ref] = left
        else:
            self._count.pop(ref, None)
            self._moved.pop(ref, None)

    def block(self, destination: str, partition: int) -> None:
        """Input partition newly assigned: park its ordered keys until `barrier` says how far."""
        self._barrier[(destination, partition)] = None

    def pending(self) -> list[tuple[str, int]]:
        """Blocked partitions whose barrier is not known yet."""
        return [k for k, end in self._barrier.items() if end is None]

    def barrier(self, destination: str, partition: int, end: int, position: int) -> None:
        """The retry partition held `end` records at assignment, of which `position` are done."""
        if position >= end:
            self._barrier.pop((destination, partition), None)
        else:
            self._barrier[(destination, partition)] = end

    def passed(self, destination: str, partition: int, watermark: int) -> None:
        end = self._barrier.get((destination, partition), -1)
        if end is not None and 0 <= end <= watermark:
            del self._barrier[(destination, partition)]

    def drop(self, partition: int) -> None:
        """Forget a partition this worker no longer owns."""
        for table in (self._count, self._moved):
            for ref in [r for r in table if r[1] == partition]:
                del table[ref]
        for key in [k for k in self._barrier if k[1] == partition]:
            del self._barrier[key]


RetryHandler = Callable[[Any, Partition], None]
"""Starts the work for one due retry record; must call `RetryConsumer.complete` when it is done."""


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


class RetryConsumer:
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
        self._conf = dict(config)
        self.topics = dict(topics)
        self._dest_of = {t: d for d, t in topics.items()}
        self._handler = handler
        self._live_partitions = live_partitions
        self._started = asyncio.Event()
        self._metrics = metrics
        self._keys = parked_keys
        self._ordered = ordered
        self._not_before = not_before
        self._batch = poll_batch_size
        self._bound = InFlightBound(
            max_in_flight_events, resume_in_flight_events, max_in_flight_bytes, resume_in_flight_bytes
        )
        self._commit_interval = commit_interval
        self._release_timeout = release_timeout
        self._poll_timeout = poll_timeout
        self._waiting = waiting
        self._factory = consumer_factory
        self._clock = clock
        self._consumer: Any = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="kafka-retry"
        )
        self._parts: dict[tuple[str, int], _RetryPartition] = {}
        self._stopping = False
        self._fatal: BaseException | None = None
        self._want_paused = False
        self._paused = False
        self._to_hold: list[_RetryPartition] = []
        self._lock = asyncio.Lock()
        self._commits = Commits(
            logger=log, failed_event="retry_commit_failed", metadata_max_bytes=metadata_max_bytes
        )
        self._m_finished_before: dict[str, Any] = {}

    # -- state seen by the worker --------------------------------------------------------------
    @property
    def partitions(self) -> Mapping[tuple[str, int], _RetryPartition]:
        return self._parts

    @property
    def commits(self) -> int:
        """Commits the broker accepted."""
        return self._commits.count

    def in_flight(self) -> int:
        return sum(p.tracker.in_flight for p in self._parts.values())

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

    def fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._stopping = True

    def request_stop(self) -> None:
        self._stopping = True

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

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
        err = msg.error()
        if err is not None:
            if err.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                return
            if err.fatal():
                self.fail(
                    KafkaError(f"the retry consumer hit a fatal error: {err.str()}; restart the worker")
                )
            else:
                log.warning("retry_consume_error", error=err.str(), code=err.name())
            return
        part = self._parts.get((msg.topic(), msg.partition()))
        if part is None or part.revoking or part.head is not None:
            return  # paused until its head is due: the head is read again after the seek
        offset = msg.offset()
        last = part.tracker.watermark()
        if last is not None and offset < last:
            return
        if part.tracker.skips(offset):
            # Finished by the retry partition's last owner (its commit said so), due or not.
            counter = self._m_finished_before.get(part.topic)
            if counter is None:
                counter = self._m_finished_before[part.topic] = self._metrics.finished_before.labels(
                    part.topic, "event"
                )
            counter.inc()
            self._passed(part)
            return
        # A record is also held while its destination's circuit is open: reading it then would only
        # park it again (one write per record per park wait, for the whole outage).
        due = max(next_attempt_at(msg), self._not_before(part.destination))
        if due > self._clock():
            # Never sleep here: pause the partition and read this record again once it is due.
            part.head, part.due_at = offset, due
            kind, ts = msg.timestamp()
            part.head_since = RetryView.of(msg).first_attempt_at or (ts / 1000 if kind and ts > 0 else None)
            self._to_hold.append(part)
            return
        try:
            part.tracker.add(offset)
        except ValueError:
            return
        part.sizes.add(offset, message_size(msg))
        view_first = RetryView.of(msg).first_attempt_at
        if view_first is not None:
            part.oldest[offset] = view_first
        self._handler(msg, part)

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


@dataclass
class RetryInspection:
    """Counts of parked deliveries by destination, error type, status and due state, with the oldest."""

    now: float = field(default_factory=time.time)
    total: int = 0
    by_destination: Counter[str] = field(default_factory=Counter)
    by_error_type: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    due: Counter[str] = field(default_factory=Counter)
    """destination -> records due now (their next attempt time has passed)."""
    overdue: Counter[str] = field(default_factory=Counter)
    """destination -> records whose retry budget has ended (dead-lettered when read)."""
    oldest: dict[str, float] = field(default_factory=dict)
    """destination -> first attempt time of its oldest parked delivery."""
    samples_per_destination: int = 0
    """The first records of each destination kept as samples (their event masked by `masker`)."""
    masker: Masker = field(default_factory=Masker)
    detail: Detail | None = None
    """More for each sample (`--show-request`: the partner request and its response)."""
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, msg: Any) -> None:
        view = RetryView.of(msg)
        dest = view.destination or "(none)"
        if self.samples_per_destination > 0:
            bucket = self.samples.setdefault(dest, [])
            if len(bucket) < self.samples_per_destination:
                bucket.append(self.sample(msg, view))
        self.total += 1
        self.by_destination[dest] += 1
        self.by_error_type[view.letter.error_type] += 1
        self.by_status[view.letter.status] += 1
        if view.deadline_at is not None and view.deadline_at <= self.now:
            self.overdue[dest] += 1
        elif view.next_attempt_at <= self.now:
            self.due[dest] += 1
        first = view.first_attempt_at
        if first is None and view.letter.timestamp_ms is not None:
            first = view.letter.timestamp_ms / 1000
        if first is not None and first < self.oldest.get(dest, float("inf")):
            self.oldest[dest] = first

    def sample(self, msg: Any, view: RetryView) -> dict[str, Any]:
        letter = view.letter
        value = msg.value()
        try:
            event = orjson.loads(value) if value is not None else None
        except orjson.JSONDecodeError:
            event = f"<{len(value)} bytes, not JSON>"
        sample = {
            "partition": letter.partition,
            "offset": letter.offset,
            "delivery_id": letter.get("delivery_id"),
            "subscription": letter.subscription,
            "attempts": letter.attempts,
            "parks": view.parks,
            "next_attempt_at": _iso(view.next_attempt_at),
            "value": self.masker.value(event),
        }
        return sample | (self.detail(msg, letter) if self.detail is not None else {})

    def to_json(self) -> dict[str, Any]:
        samples = {"samples": self.samples} if self.samples_per_destination > 0 else {}
        return samples | {
            "total": self.total,
            "by_destination": {
                d: {
                    "parked": n,
                    "due": self.due.get(d, 0),
                    "overdue": self.overdue.get(d, 0),
                    "oldest_first_attempt": _iso(self.oldest.get(d)),
                    "oldest_age_seconds": round(self.now - self.oldest[d], 1) if d in self.oldest else None,
                }
                for d, n in self.by_destination.most_common()
            },
            "by_error_type": dict(self.by_error_type.most_common()),
            "by_status": dict(self.by_status.most_common()),
        }

    def render(self) -> str:
        if not self.total:
            return "0 retry records waiting: no parked delivery is due or pending"
        lines = [
            f"{self.total} retry records waiting (a delivery parked again counts once per record until"
            " the workers commit past the older one)"
        ]
        lines.append("\nby destination (parked, due now, past their budget, oldest first attempt):")
        for d, n in self.by_destination.most_common():
            age = f"{self.now - self.oldest[d]:.0f}s ago" if d in self.oldest else "unknown"
            lines.append(
                f"  {n:>8}  {d}  due={self.due.get(d, 0)} overdue={self.overdue.get(d, 0)} oldest={age}"
            )
        for title, counter in (("by error type", self.by_error_type), ("by HTTP status", self.by_status)):
            lines.append(f"\n{title}:")
            lines.extend(f"  {n:>8}  {k}" for k, n in counter.most_common())
        for dest, samples in self.samples.items():
            lines.append(f"\n{dest}: the first {len(samples)} waiting")
            for sample in samples:
                lines.extend(sample_lines(sample))
        return "\n".join(lines)


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def dumps(doc: Any) -> str:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
