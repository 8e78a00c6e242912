"""The consumer loop: batch polls off the event loop, per-partition offset tracking, watermark
commits with what is finished past the watermark, backpressure pauses and cooperative rebalances.

Every call into the confluent-kafka consumer happens on one dedicated thread, so `consume` can
block without stalling asyncio and the rebalance callbacks (which librdkafka runs inside
`consume`) can wait for the event loop to finish a revoked partition's work.

Handing a partition over. Each commit carries the watermark and, in its metadata, the offsets and
deliveries finished past it (streamproc.kafka.progress); the next owner reads both when the
partition is assigned and passes over what is finished. A revoke never waits for a retry backoff:
the partition's deliveries that wait (a backoff, a concurrency slot, a rate token, their key's
turn, an open circuit) are given up at once and stay unfinished, neither dead-lettered nor parked,
for the next owner to send; requests already on the wire are awaited up to `revoke_timeout`,
since an answer not awaited would make the next owner send them again. Then the partition is
committed and released. A worker that stops keeps polling, its partitions paused, while its work
drains (`drain`), so the group's rebalances run their callbacks and commit in time; a commit the
group refuses while it rebalances is made again after the next poll, for the partitions still
owned (polling.Commits).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import confluent_kafka
import structlog
from confluent_kafka import TopicPartition

from streamproc.kafka.backpressure import held_bytes
from streamproc.kafka.offsets import OffsetTracker
from streamproc.kafka.polling import Commits, consume_batch, refresh_high_watermarks
from streamproc.kafka.reader import Partition, PartitionReader, let_go
from streamproc.metrics import Metrics

__all__ = ["ConsumerLoop", "consumer_config"]

FINAL_COMMIT_WAIT = 10.0
"""Seconds a stopping worker keeps polling for its last commit while the group rebalances (within
the Helm chart's margin of the grace period over `shutdown_timeout`)."""

HOLD_BEFORE_PAUSE = 2.0
"""Seconds a full window is held before the partitions pause: the loop stops polling and waits for
the window to fall to its resume marks. On a backlog the window fills and falls back many times a
second, and a pause would cost each time: librdkafka drops what it prefetched for paused partitions,
and after the resume fetches again only when its fetcher thread next wakes (up to a second later),
so the worker would run out of work meanwhile. While held, librdkafka keeps its prefetch (bounded,
`backpressure.prefetch_settings`) and the next poll takes from it at once. Rebalance callbacks and
commits, which run in polls, wait at most this long; a window still full after it (a slow partner)
pauses as before, and the loop polls on."""

HOLD_CHECK = 0.005
"""Seconds between two looks at the window while it is held."""

log = structlog.get_logger("streamproc.consumer")


MessageHandler = Callable[[Any, Partition], None]
"""Starts the work for one message; must call `ConsumerLoop.complete` when it is all done."""


def consumer_config(
    bootstrap_servers: str, group_id: str, client: Mapping[str, Any], *, group_instance_id: str | None = None
) -> dict[str, Any]:
    """librdkafka settings of the worker's consumer: the user's settings (`consumer_settings`:
    security, timeouts) with the ones at-least-once delivery depends on forced on top;
    `group_instance_id` makes it a static member of the group (the live consumer only: the retry
    consumer assigns its partitions and is no member)."""
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
    if group_instance_id:
        conf["group.instance.id"] = group_instance_id
    return conf


class ConsumerLoop(PartitionReader[Partition]):
    """Owns the Kafka consumer and decides what is safe to commit."""

    def __init__(
        self,
        config: Mapping[str, Any],
        topics: tuple[str, ...] | list[str],
        handler: MessageHandler,
        *,
        metrics: Metrics,
        poll_batch_size: int = 500,
        max_in_flight_events: int = 10000,
        resume_in_flight_events: int = 5000,
        max_in_flight_bytes: int = 1 << 62,
        resume_in_flight_bytes: int = 1 << 61,
        commit_interval: float = 5.0,
        revoke_timeout: float = 15.0,
        poll_timeout: float = 0.1,
        metadata_max_bytes: int = 4096,
        waiting: Collection[asyncio.Task[Any]] = frozenset(),
        consumer_factory: Callable[[dict[str, Any]], Any] = confluent_kafka.Consumer,
        on_poll: Callable[[], None] | None = None,
        on_assignment: Callable[[int], None] | None = None,
        on_drain: Callable[[], None] | None = None,
        on_assigned: Callable[[list[int]], None] | None = None,
        on_release: Callable[[list[int], float], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(
            config,
            handler,
            what="consumer",
            logger=log,
            metrics=metrics,
            commits=Commits(
                logger=log,
                failed_event="commit_failed",
                metadata_max_bytes=metadata_max_bytes,
                latency=metrics.commit_latency,
            ),
            thread_name="kafka",
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
        self.topics = list(topics)
        self._revoke_timeout = revoke_timeout
        self._on_poll = on_poll or (lambda: None)
        self._on_assignment = on_assignment or (lambda n: None)
        # Called when a revoke or shutdown starts waiting for in-flight work (dispatch sends its
        # open batches at once instead of after their wait).
        self._on_drain = on_drain or (lambda: None)
        # Partition numbers newly assigned (called on the consumer's thread, before their messages),
        # and given up (awaited before their watermarks are committed and they are released).
        self._on_assigned = on_assigned
        self._on_release = on_release
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_commit = 0.0
        self._closing = False
        self._drain_until: float | None = None
        self._assigned_since_pause = False
        self._m_lag: dict[tuple[str, int], Any] = {}

    # -- state seen by the worker --------------------------------------------------------------
    def window(self) -> int:
        """Consumed events at or past the watermarks, finished or not, over the live partitions.

        Backpressure bounds this rather than `in_flight`: one slow event holds its partition's
        watermark while the events after it finish, and the tracker keeps each of them until it
        does. Bounding the window bounds that memory, and the commit's metadata with it."""
        return sum(p.tracker.window for p in self._parts.values())

    def window_bytes(self) -> int:
        """Key + value bytes of the events `window` counts (the bytes bound)."""
        return held_bytes(self._parts.values())

    @staticmethod
    def complete(part: Partition, offset: int) -> None:
        """All work for one message is done (delivered, skipped or dead-lettered and acknowledged).

        Static, so the worker hands `ConsumerLoop.complete` itself to its EventProcessor."""
        part.tracker.complete(offset)

    # -- the loop --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the consumer and join the group (assignment arrives with the first polls)."""
        self._loop = asyncio.get_running_loop()
        self._consumer = await self._in_thread(self._factory, self._conf)
        await self._in_thread(
            lambda: self._consumer.subscribe(
                self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
        )

    async def run(self) -> None:
        """Poll and hand messages to the handler until asked to stop; raises what `fail` was given."""
        if self._consumer is None:
            await self.start()
        self._next_commit = time.monotonic() + self._commit_interval
        m_in_flight = self._metrics.in_flight_events
        while not self._stopping:
            m_in_flight.set(self.in_flight())
            self._want_paused = self._full()
            if self._want_paused and not self._paused and await self._held():
                continue
            batch = await self._step(self._want_paused)
            for msg in batch:
                if self._stopping:
                    break
                self._accept(msg)
        if self._fatal is not None:
            raise self._fatal

    async def _held(self) -> bool:
        """Wait without polling, up to HOLD_BEFORE_PAUSE, for the window to fall to its resume
        marks: True if it did, False (the partitions pause then) if not or if the loop stops."""
        deadline = time.monotonic() + HOLD_BEFORE_PAUSE
        while not self._stopping and time.monotonic() < deadline:
            await asyncio.sleep(HOLD_CHECK)
            if not self._full():
                return True
        return False

    def _full(self) -> bool:
        """Whether the window is at its bound (until it falls to its resume marks)."""
        return self._bound.update(self.window(), self.window_bytes())

    async def _step(self, paused: bool) -> list[Any]:
        """One poll (serving the group: rebalance callbacks run inside it), with the commit when
        it is due or owed again after a refusal."""
        offsets = None
        if self._commits.again or time.monotonic() >= self._next_commit:
            offsets = self._commits.due(self._parts.values())
            self._next_commit = time.monotonic() + self._commit_interval
        batch: list[Any] = await self._in_thread(self._poll, paused, offsets)
        self._on_poll()
        if offsets is not None:
            self._update_lag()
        return batch

    def _accept(self, msg: Any) -> None:
        if not self._readable(msg):
            return
        part = self._parts.get((msg.topic(), msg.partition()))
        if part is None or part.revoking:
            # Fetched just before the partition moved on; its new owner reads it from the commit.
            return
        offset = msg.offset()
        if self._fresh(part, offset) and self._take(part, msg, offset):
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
            self._commits.commit(c, offsets, self._parts)
        if offsets is not None:
            refresh_high_watermarks(c, self._parts.values())
        return consume_batch(c, self._batch, self._poll_timeout)

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._metrics.rebalances.labels("assign").inc()
        committed = self._committed(consumer, partitions)
        inherited = 0
        for tp in partitions:
            key = (tp.topic, tp.partition)
            part = Partition(tp.topic, tp.partition, OffsetTracker(tp.topic, tp.partition))
            last = committed.get(key)
            if last is not None:
                inherited += part.start_from(last)
            self._parts[key] = part
        self._assigned_since_pause = True
        if self._on_assigned is not None:
            self._on_assigned([tp.partition for tp in partitions])
        self._metrics.assigned_partitions.set(len(self._parts))
        self._on_assignment(len(self._parts))
        log.info(
            "partitions_assigned",
            partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions],
            finished_past_commit=inherited,
        )

    @staticmethod
    def _committed(consumer: Any, partitions: list[TopicPartition]) -> dict[tuple[str, int], TopicPartition]:
        """The last commit of each newly assigned partition, with its metadata."""
        try:
            found = consumer.committed(
                [TopicPartition(tp.topic, tp.partition) for tp in partitions], timeout=10
            )
        except confluent_kafka.KafkaException as exc:
            # Reading starts at the committed offsets all the same: only what the last owner
            # finished past them is sent again.
            log.warning("committed_offsets_unreadable", error=str(exc.args[0] if exc.args else exc))
            return {}
        return {(tp.topic, tp.partition): tp for tp in found if tp.error is None}

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._metrics.rebalances.labels("revoke").inc()
        timeout = 0.0 if self._closing else self._revoke_timeout
        if self._drain_until is not None:
            timeout = min(timeout, max(0.0, self._drain_until - time.monotonic()))
        offsets = self._release_from_thread(partitions, timeout)
        if offsets:
            self._commits.commit(consumer, offsets, self._parts)
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
        """Stop taking work for these partitions, give up their deliveries that wait, await those on
        the wire up to `timeout`, then forget them. Returns the commit points to commit; late
        completions are ignored from now on."""
        parts = [p for tp in partitions if (p := self._parts.get((tp.topic, tp.partition))) is not None]
        await self._let_go(parts, time.monotonic() + timeout)
        return self._forget(parts)

    async def _let_go(self, parts: list[Partition], deadline: float) -> None:
        """Mark the partitions as being released and end their work (see `let_go`); their retry
        partitions are let go at the same time (`on_release`)."""
        if not parts:
            return
        for part in parts:
            part.revoking = True
        self._on_drain()  # open batches go now: their deliveries are on the wire from here
        work: list[Awaitable[None]] = [let_go(parts, deadline, self._waiting)]
        if self._on_release is not None:
            left = max(0.0, deadline - time.monotonic())
            work.append(self._on_release(sorted({p.partition for p in parts}), left))
        await asyncio.gather(*work)

    def _forget(self, parts: list[Partition]) -> list[TopicPartition]:
        offsets = []
        for part in parts:
            point = part.commit_point(self._commits.metadata_max_bytes)
            left = part.tracker.close()
            cut = [t for t in part.tasks if not t.done() and not t.cancelling()]
            for task in list(part.tasks):
                task.cancel()
            if cut:
                # Their answers were not awaited: a partner may have accepted them, and the next
                # owner sends them again.
                log.warning(
                    "partition_released_with_requests_unanswered",
                    topic=part.topic,
                    partition=part.partition,
                    requests=len(cut),
                )
            log.info("partition_released", topic=part.topic, partition=part.partition, unfinished=left)
            self._parts.pop(part.key, None)
            gauge = self._m_lag.pop(part.key, None)
            if gauge is not None:
                self._metrics.consumer_lag.remove(part.topic, str(part.partition))
            if point is not None:
                offsets.append(point)
        self._metrics.assigned_partitions.set(len(self._parts))
        self._on_assignment(len(self._parts))
        return offsets

    async def drain(self, until: float, idle: Callable[[], bool] | None = None) -> int:
        """Take no new messages and keep serving the group, partitions paused, until the work in
        flight is done (`idle()`; by default this consumer's own), `until` (monotonic) or a fatal
        error; returns this consumer's work left. Revokes meanwhile commit in their callbacks, and
        the commits go on at their interval."""
        self._on_drain()
        self._drain_until = until
        done = idle or (lambda: self.in_flight() == 0)
        if self._consumer is not None:
            while not done() and time.monotonic() < until and self._fatal is None:
                await self._step(True)  # what it reads was fetched before the pause: left for later
        return self.in_flight()

    async def close(self, until: float | None = None) -> None:
        """Give up the deliveries that wait, await those on the wire until `until` (monotonic;
        default now), commit every partition's watermark and progress (once more after the group's
        rebalance if the group refuses it, for up to FINAL_COMMIT_WAIT), then leave the group."""
        if self._consumer is None:
            self._executor.shutdown(wait=False)
            return
        await self._let_go(list(self._parts.values()), time.monotonic() if until is None else until)
        give_up = time.monotonic() + FINAL_COMMIT_WAIT
        while True:
            offsets = self._commits.due(self._parts.values())
            if not offsets:
                break
            committed = await self._in_thread(self._commits.commit, self._consumer, offsets, self._parts)
            if committed or not self._commits.again or time.monotonic() >= give_up:
                break
            # Poll through the rebalance: a partition revoked meanwhile commits in its callback.
            await self._in_thread(self._poll, True, None)
        self._forget(list(self._parts.values()))
        self._closing = True
        await self._in_thread(self._consumer.close)
        self._consumer = None
        self._executor.shutdown(wait=True)
