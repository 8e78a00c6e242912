"""What the live and the retry consumer share: a partition being read (`Partition`: its offsets
tracker, its tasks, its last commit and what it finished past it), the hand-over of a partition's
work (`let_go`), and `PartitionReader`: the consumer on its own thread, the assigned partitions,
taking a polled message into work, the in-flight bound, and the commits.

Every call into the confluent-kafka consumer happens on the reader's one thread, so `consume` can
block without stalling asyncio. A message is taken into work only once: not when its partition is
being released, not below the partition's watermark, and not when the partition's last owner
finished it (its commit said so: it is passed over and counted as finished before).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import confluent_kafka
import structlog
from confluent_kafka import TopicPartition

from streamproc.errors import KafkaError
from streamproc.kafka.backpressure import HeldBytes, InFlightBound, message_size
from streamproc.kafka.offsets import OffsetTracker
from streamproc.kafka.polling import Commits
from streamproc.kafka.progress import decode, encode
from streamproc.metrics import Metrics

__all__ = ["Partition", "PartitionReader", "let_go", "wait_for_in_flight"]

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
    committed_metadata: str = ""
    high: int | None = None
    sizes: HeldBytes = field(default_factory=HeldBytes)
    """Key + value bytes of its consumed events at or past the watermark."""

    @property
    def key(self) -> tuple[str, int]:
        return self.topic, self.partition

    @property
    def released(self) -> bool:
        """Being revoked, lost or closed: its work still waiting to start is given up."""
        return self.revoking or self.tracker.closed

    def start_from(self, committed: TopicPartition) -> int:
        """The partition's last commit: where its reading starts, and what its last owner finished
        past that (passed over from now on). Returns how many offsets that is."""
        if committed.offset < 0:
            return 0
        self.committed = committed.offset
        self.committed_metadata = committed.metadata or ""
        progress = decode(committed.metadata, committed.offset)
        if progress is None:
            if self.committed_metadata:
                log.warning(
                    "commit_metadata_unreadable",
                    topic=self.topic,
                    partition=self.partition,
                    offset=committed.offset,
                )
            return 0
        self.tracker.inherit(progress)
        return sum(stop - start for start, stop in progress.finished)

    def commit_point(self, metadata_max_bytes: int) -> TopicPartition | None:
        """The watermark with what is finished past it, unless that is what was last committed."""
        progress = self.tracker.progress()
        if progress is None:
            return None
        metadata = encode(progress, metadata_max_bytes)
        if progress.watermark == self.committed and metadata == self.committed_metadata:
            return None
        return TopicPartition(self.topic, self.partition, progress.watermark, metadata=metadata)


async def wait_for_in_flight(parts: Iterable[Partition], deadline: float) -> None:
    """Until none of these partitions has work in flight, or `time.monotonic()` reaches `deadline`."""
    waiting = list(parts)
    while any(p.tracker.in_flight for p in waiting) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def let_go(parts: Iterable[Partition], deadline: float, waiting: Collection[asyncio.Task[Any]]) -> None:
    """End the work of partitions being released: the deliveries that wait (`waiting`: a retry
    backoff, a concurrency slot, a rate token, their key's turn, an open circuit) are cancelled at
    once, and stay unfinished for the next owner to send; those on the wire (a partner request, a
    dead letter or retry record being written) are awaited until `deadline` (monotonic), since the
    next owner would send again one whose answer was not awaited."""
    parts = list(parts)
    while True:
        tasks = [t for p in parts for t in p.tasks if not t.done()]
        if not tasks:
            return
        for task in tasks:
            if task in waiting:
                task.cancel()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        # Woken by the first to end, and at least every 20 ms: one on the wire may start a backoff.
        await asyncio.wait(tasks, timeout=min(left, 0.02), return_when=asyncio.FIRST_COMPLETED)


P = TypeVar("P", bound=Partition)


class PartitionReader(Generic[P]):
    """A consumer read on its own thread into partitions of type `P`, each message handed to
    `handler` once, with an in-flight bound and commits of the watermarks (the live consumer loop
    and the retry consumer are two)."""

    def __init__(
        self,
        config: Mapping[str, Any],
        handler: Callable[..., None],
        *,
        what: str,
        logger: Any,
        metrics: Metrics,
        commits: Commits,
        thread_name: str,
        poll_batch_size: int,
        max_in_flight_events: int,
        resume_in_flight_events: int,
        max_in_flight_bytes: int,
        resume_in_flight_bytes: int,
        commit_interval: float,
        poll_timeout: float,
        waiting: Collection[asyncio.Task[Any]],
        consumer_factory: Callable[[dict[str, Any]], Any],
    ) -> None:
        self._conf = dict(config)
        self._handler = handler
        self._what = what
        self._log = logger
        self._error_event = f"{what.removesuffix('consumer').replace(' ', '_')}consume_error"
        self._metrics = metrics
        self._commits = commits
        self._batch = poll_batch_size
        self._bound = InFlightBound(
            max_in_flight_events, resume_in_flight_events, max_in_flight_bytes, resume_in_flight_bytes
        )
        self._commit_interval = commit_interval
        self._poll_timeout = poll_timeout
        # The tasks of deliveries that wait rather than send (dispatch.Dispatcher.waiting): a
        # release cancels those of its partitions at once.
        self._waiting = waiting
        self._factory = consumer_factory
        self._consumer: Any = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._parts: dict[tuple[str, int], P] = {}
        self._stopping = False
        self._fatal: BaseException | None = None
        self._want_paused = False
        self._paused = False
        self._m_finished_before: dict[str, Any] = {}

    # -- state seen by the worker --------------------------------------------------------------
    @property
    def partitions(self) -> Mapping[tuple[str, int], P]:
        return self._parts

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def commits(self) -> int:
        """Commits the broker accepted."""
        return self._commits.count

    def in_flight(self) -> int:
        """Consumed events whose work is not finished, over the assigned partitions."""
        return sum(p.tracker.in_flight for p in self._parts.values())

    def fail(self, exc: BaseException) -> None:
        """Stop reading because something must not be skipped (a dead letter that cannot be written)."""
        if self._fatal is None:
            self._fatal = exc
        self._stopping = True

    def request_stop(self) -> None:
        self._stopping = True

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- taking a message into work ----------------------------------------------------------------
    def _readable(self, msg: Any) -> bool:
        """Whether a polled message is a record (not an error, which is handled here)."""
        err = msg.error()
        if err is None:
            return True
        if err.code() == confluent_kafka.KafkaError._PARTITION_EOF:
            return False
        if err.fatal():
            self.fail(KafkaError(f"the {self._what} hit a fatal error: {err.str()}; restart the worker"))
        else:
            self._log.warning(self._error_event, error=err.str(), code=err.name())
        return False

    def _fresh(self, part: P, offset: int) -> bool:
        """Whether the record at `offset` still has work to do: not below the watermark, and not
        finished by the partition's last owner (passed over and counted)."""
        tracker = part.tracker
        last = tracker.watermark()
        if last is not None and offset < last:
            return False
        if tracker.skips(offset):
            counter = self._m_finished_before.get(part.topic)
            if counter is None:
                counter = self._m_finished_before[part.topic] = self._metrics.finished_before.labels(
                    part.topic, "event"
                )
            counter.inc()
            self._passed(part)
            return False
        return True

    def _take(self, part: P, msg: Any, offset: int) -> bool:
        """Track the record as in flight (False: it is already being processed)."""
        try:
            part.tracker.add(offset)
        except ValueError:
            return False
        part.sizes.add(offset, message_size(msg))
        return True

    def _passed(self, part: P) -> None:
        """A record of `part` was passed over as finished before (for subclasses that follow it)."""
