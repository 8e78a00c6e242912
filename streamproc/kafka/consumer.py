"""The consumer loop: batch polls off the event loop, per-partition offset tracking, watermark
commits, backpressure pauses and cooperative rebalances.

Every call into the confluent-kafka consumer happens on one dedicated thread, so `consume` can
block without stalling asyncio and the rebalance callbacks (which librdkafka runs inside
`consume`) can wait for the event loop to finish a revoked partition's work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import confluent_kafka
import structlog
from confluent_kafka import TopicPartition

from streamproc.errors import KafkaError
from streamproc.kafka.backpressure import HeldBytes, InFlightBound, held_bytes, message_size
from streamproc.kafka.offsets import OffsetTracker
from streamproc.kafka.polling import commit_sync, consume_batch, refresh_high_watermarks
from streamproc.metrics import Metrics

__all__ = ["ConsumerLoop", "Partition", "committable", "consumer_config", "wait_for_in_flight"]

log = structlog.get_logger("streamproc.consumer")


@dataclass(eq=False)
class Partition:
    """One assigned partition: its offsets and the tasks working on its messages."""

    topic: str
    partition: int
    tracker: OffsetTracker
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    revoking: bool = False
    committed: int | None = None
    high: int | None = None
    sizes: HeldBytes = field(default_factory=HeldBytes)
    """Key + value bytes of its consumed events at or past the watermark."""

    @property
    def key(self) -> tuple[str, int]:
        return self.topic, self.partition

    @property
    def released(self) -> bool:
        """Revoked, lost or closed: its work still waiting to start is given up."""
        return self.tracker.closed


def committable(parts: Iterable[Partition]) -> list[TopicPartition]:
    """The watermarks of these partitions that are not committed yet."""
    out = []
    for part in parts:
        wm = part.tracker.watermark()
        if wm is not None and wm != part.committed:
            out.append(TopicPartition(part.topic, part.partition, wm))
    return out


async def wait_for_in_flight(parts: Iterable[Partition], deadline: float) -> None:
    """Until none of these partitions has work in flight, or `time.monotonic()` reaches `deadline`."""
    waiting = list(parts)
    while any(p.tracker.in_flight for p in waiting) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


MessageHandler = Callable[[Any, Partition], None]
"""Starts the work for one message; must call `ConsumerLoop.complete` when it is all done."""


def consumer_config(bootstrap_servers: str, group_id: str, client: Mapping[str, Any]) -> dict[str, Any]:
    """librdkafka settings of the worker's consumer: the user's settings (`consumer_settings`:
    security, timeouts) with the ones at-least-once delivery depends on forced on top."""
    conf: dict[str, Any] = {
        "auto.offset.reset": "earliest",
        # Bounds the prefetched bytes for the whole consumer, whatever the lag.
        "queued.max.messages.kbytes": 16384,
        "statistics.interval.ms": 0,
    }
    conf.update(client)
    conf.update(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "partition.assignment.strategy": "cooperative-sticky",
            # Offsets are committed by the loop, only up to the contiguous watermark.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
    )
    return conf


class ConsumerLoop:
    """Owns the Kafka consumer and decides what is safe to commit."""

    def __init__(
        self,
        config: Mapping[str, Any],
        topics: tuple[str, ...] | list[str],
        handler: MessageHandler,
        *,
        metrics: Metrics,
        poll_batch_size: int = 500,
        max_in_flight: int = 10000,
        resume_in_flight: int = 5000,
        max_in_flight_bytes: int = 1 << 62,
        resume_in_flight_bytes: int = 1 << 61,
        commit_interval: float = 5.0,
        revoke_timeout: float = 15.0,
        poll_timeout: float = 0.1,
        consumer_factory: Callable[[dict[str, Any]], Any] = confluent_kafka.Consumer,
        on_poll: Callable[[], None] | None = None,
        on_assignment: Callable[[int], None] | None = None,
        on_drain: Callable[[], None] | None = None,
        on_assigned: Callable[[list[int]], None] | None = None,
        on_release: Callable[[list[int], float], Awaitable[None]] | None = None,
    ) -> None:
        self._conf = dict(config)
        self.topics = list(topics)
        self._handler = handler
        self._metrics = metrics
        self._batch = poll_batch_size
        self._bound = InFlightBound(
            max_in_flight, resume_in_flight, max_in_flight_bytes, resume_in_flight_bytes
        )
        self._commit_interval = commit_interval
        self._revoke_timeout = revoke_timeout
        self._poll_timeout = poll_timeout
        self._factory = consumer_factory
        self._on_poll = on_poll or (lambda: None)
        self._on_assignment = on_assignment or (lambda n: None)
        # Called when a revoke or shutdown starts waiting for in-flight work (dispatch sends its
        # open batches at once instead of after their wait).
        self._on_drain = on_drain or (lambda: None)
        # Partition numbers newly assigned (called on the consumer's thread, before their messages),
        # and given up (awaited before their watermarks are committed and they are released).
        self._on_assigned = on_assigned
        self._on_release = on_release
        self._consumer: Any = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._parts: dict[tuple[str, int], Partition] = {}
        self._stopping = False
        self._closing = False
        self._fatal: BaseException | None = None
        self._want_paused = False
        self._paused = False
        self._assigned_since_pause = False
        self.commits = 0
        self._m_lag: dict[tuple[str, int], Any] = {}

    # -- state seen by the worker --------------------------------------------------------------
    @property
    def partitions(self) -> Mapping[tuple[str, int], Partition]:
        return self._parts

    @property
    def paused(self) -> bool:
        return self._paused

    def in_flight(self) -> int:
        """Consumed events whose work is not finished, over the live partitions."""
        return sum(p.tracker.in_flight for p in self._parts.values())

    def window(self) -> int:
        """Consumed events at or past the watermarks, finished or not, over the live partitions.

        Backpressure bounds this rather than `in_flight`: one slow event holds its partition's
        watermark while the events after it finish, and every one of them would be read and sent
        again after a crash. Bounding the window bounds both memory and those replays."""
        return sum(p.tracker.window for p in self._parts.values())

    def window_bytes(self) -> int:
        """Key + value bytes of the events `window` counts (the bytes bound)."""
        return held_bytes(self._parts.values())

    @staticmethod
    def complete(part: Partition, offset: int) -> None:
        """All work for one message is done (delivered, skipped or dead-lettered and acknowledged).

        Static, so the worker hands `ConsumerLoop.complete` itself to its EventProcessor."""
        part.tracker.complete(offset)

    def fail(self, exc: BaseException) -> None:
        """Stop the loop because something must not be skipped (a dead letter that cannot be written)."""
        if self._fatal is None:
            self._fatal = exc
        self._stopping = True

    def request_stop(self) -> None:
        self._stopping = True

    # -- the loop --------------------------------------------------------------------------------
    async def _in_kafka_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        """Create the consumer and join the group (assignment arrives with the first polls)."""
        self._loop = asyncio.get_running_loop()
        self._consumer = await self._in_kafka_thread(self._factory, self._conf)
        await self._in_kafka_thread(
            lambda: self._consumer.subscribe(
                self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
        )

    async def run(self) -> None:
        """Poll and hand messages to the handler until asked to stop; raises what `fail` was given."""
        if self._consumer is None:
            await self.start()
        next_commit = time.monotonic() + self._commit_interval
        m_in_flight = self._metrics.in_flight_events
        while not self._stopping:
            m_in_flight.set(self.in_flight())
            self._want_paused = self._bound.update(self.window(), self.window_bytes())
            offsets = None
            if time.monotonic() >= next_commit:
                offsets = committable(self._parts.values())
                next_commit = time.monotonic() + self._commit_interval
            batch = await self._in_kafka_thread(self._poll, self._want_paused, offsets)
            self._on_poll()
            if offsets is not None:
                self._update_lag()
            for msg in batch:
                if self._stopping:
                    break
                self._accept(msg)
        if self._fatal is not None:
            raise self._fatal

    def _accept(self, msg: Any) -> None:
        err = msg.error()
        if err is not None:
            if err.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                return
            if err.fatal():
                self.fail(KafkaError(f"the consumer hit a fatal error: {err.str()}; restart the worker"))
                return
            log.warning("consume_error", error=err.str(), code=err.name())
            return
        part = self._parts.get((msg.topic(), msg.partition()))
        if part is None or part.revoking:
            # Fetched just before the partition moved on; its new owner reads it from the commit.
            return
        offset = msg.offset()
        last = part.tracker.watermark()
        if last is not None and offset < last:
            return
        try:
            part.tracker.add(offset)
        except ValueError:
            return  # already being processed
        part.sizes.add(offset, message_size(msg))
        self._handler(msg, part)

    def _update_lag(self) -> None:
        for part in self._parts.values():
            wm = part.tracker.watermark()
            if part.high is None or wm is None:
                continue
            gauge = self._m_lag.get(part.key)
            if gauge is None:
                gauge = self._m_lag[part.key] = self._metrics.consumer_lag.labels(
                    part.topic, str(part.partition)
                )
            gauge.set(max(0, part.high - wm))

    # -- kafka thread ------------------------------------------------------------------------------
    def _poll(self, want_paused: bool, offsets: list[TopicPartition] | None) -> list[Any]:
        c = self._consumer
        if want_paused != self._paused or (want_paused and self._assigned_since_pause):
            assignment = c.assignment()
            if want_paused:
                c.pause(assignment)
                log.info("partitions_paused", partitions=len(assignment))
            else:
                c.resume(assignment)
                log.info("partitions_resumed", partitions=len(assignment))
            self._paused = want_paused
            self._assigned_since_pause = False
            self._metrics.paused_partitions.set(len(assignment) if want_paused else 0)
        if offsets:
            self._commit_sync(offsets)
        if offsets is not None:
            refresh_high_watermarks(c, self._parts.values())
        return consume_batch(c, self._batch, self._poll_timeout)

    def _commit_sync(self, offsets: list[TopicPartition]) -> bool:
        committed = commit_sync(
            self._consumer,
            offsets,
            self._parts,
            logger=log,
            failed_event="commit_failed",
            latency=self._metrics.commit_latency,
        )
        if committed:
            self.commits += 1
        return committed

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._metrics.rebalances.labels("assign").inc()
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._parts[key] = Partition(tp.topic, tp.partition, OffsetTracker(tp.topic, tp.partition))
        self._assigned_since_pause = True
        if self._on_assigned is not None:
            self._on_assigned([tp.partition for tp in partitions])
        self._metrics.assigned_partitions.set(len(self._parts))
        self._on_assignment(len(self._parts))
        log.info("partitions_assigned", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._metrics.rebalances.labels("revoke").inc()
        offsets = self._release_from_thread(partitions, 0.0 if self._closing else self._revoke_timeout)
        if offsets:
            self._commit_sync(offsets)
        log.info("partitions_revoked", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._metrics.rebalances.labels("lost").inc()
        # Someone else owns them now: their offsets are not ours to commit.
        self._release_from_thread(partitions, 0.0)
        log.warning("partitions_lost", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _release_from_thread(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        loop = self._loop
        if loop is None or loop.is_closed():
            return []
        future = asyncio.run_coroutine_threadsafe(self.release(partitions, timeout), loop)
        try:
            return future.result(timeout + 30.0)
        except Exception as exc:  # the loop is going away; nothing is committed
            log.error("release_failed", error=repr(exc))
            return []

    # -- loop side of rebalance and shutdown -----------------------------------------------------
    async def release(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        """Stop taking work for these partitions, wait up to `timeout` for what is in flight, then
        forget them. Returns the watermarks to commit; late completions are ignored from now on."""
        parts = [p for tp in partitions if (p := self._parts.get((tp.topic, tp.partition))) is not None]
        for part in parts:
            part.revoking = True
        if timeout > 0 and parts:
            self._on_drain()
        deadline = time.monotonic() + timeout
        await wait_for_in_flight(parts, deadline)
        if self._on_release is not None and parts:
            left_time = max(0.0, deadline - time.monotonic())
            await self._on_release(sorted({p.partition for p in parts}), left_time)
        offsets = []
        for part in parts:
            wm = part.tracker.watermark()
            left = part.tracker.close()
            for task in list(part.tasks):
                task.cancel()
            if left:
                log.warning(
                    "partition_released_with_work_left",
                    topic=part.topic,
                    partition=part.partition,
                    in_flight=left,
                )
            self._parts.pop(part.key, None)
            gauge = self._m_lag.pop(part.key, None)
            if gauge is not None:
                self._metrics.consumer_lag.remove(part.topic, str(part.partition))
            if wm is not None and wm != part.committed:
                offsets.append(TopicPartition(part.topic, part.partition, wm))
        self._metrics.assigned_partitions.set(len(self._parts))
        self._on_assignment(len(self._parts))
        return offsets

    async def drain(self, timeout: float) -> int:
        """Wait up to `timeout` for in-flight work; returns how much was left."""
        self._on_drain()
        await wait_for_in_flight(self._parts.values(), time.monotonic() + timeout)
        return self.in_flight()

    async def close(self) -> None:
        """Commit every partition's watermark, cancel what is left, leave the group."""
        if self._consumer is None:
            self._executor.shutdown(wait=False)
            return
        offsets = await self.release([TopicPartition(t, p) for t, p in list(self._parts)], 0.0)
        if offsets:
            await self._in_kafka_thread(self._commit_sync, offsets)
        self._closing = True
        await self._in_kafka_thread(self._consumer.close)
        self._consumer = None
        self._executor.shutdown(wait=True)
