"""The steps the live and the retry consumer both run on their Kafka thread: their commits, the
refresh of the partitions' high watermarks, the batch read, and a watermark read that waits out a
leader election."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import confluent_kafka
import structlog
from confluent_kafka import TopicPartition

if TYPE_CHECKING:
    from prometheus_client import Histogram

    from streamproc.kafka.reader import Partition

__all__ = [
    "REFUSED_WHILE_REBALANCING",
    "Commits",
    "consume_batch",
    "read_watermarks",
    "refresh_high_watermarks",
]

log = structlog.get_logger("streamproc.consumer")


REFUSED_WHILE_REBALANCING = frozenset(
    {
        confluent_kafka.KafkaError.REBALANCE_IN_PROGRESS,
        confluent_kafka.KafkaError.ILLEGAL_GENERATION,
        confluent_kafka.KafkaError.UNKNOWN_MEMBER_ID,
    }
)
"""Commit refusals that say the group is between generations: once the consumer has polled its way
through the rebalance, the partitions it still owns can be committed."""


class Commits:
    """The commits of one consumer: each partition's watermark with what is finished past it in the
    metadata (streamproc.kafka.progress), made on the consumer's Kafka thread.

    A commit the group refuses while it rebalances is owed again (`again`): the consumer commits
    once more right after its next poll, which is when the rebalance's callbacks run, so only the
    partitions it still owns are committed. Metadata the broker finds too long (its
    `offset.metadata.max.bytes` is below `kafka.offset_metadata_max_bytes`) is halved until it fits.
    """

    def __init__(
        self,
        *,
        logger: Any,
        failed_event: str,
        metadata_max_bytes: int = 4096,
        latency: Histogram | None = None,
    ) -> None:
        self._log = logger
        self._failed_event = failed_event
        self._latency = latency
        self.metadata_max_bytes = metadata_max_bytes
        self.again = False
        self.count = 0

    def due(self, parts: Iterable[Partition]) -> list[TopicPartition]:
        """The commit points of these partitions that differ from what they last committed."""
        out = []
        for part in parts:
            tp = part.commit_point(self.metadata_max_bytes)
            if tp is not None:
                out.append(tp)
        return out

    def commit(
        self, consumer: Any, offsets: list[TopicPartition], parts: Mapping[tuple[str, int], Partition]
    ) -> bool:
        """Commit `offsets` synchronously and record on each still-assigned partition what was
        committed; False (logged) when the broker refused."""
        self.again = False
        started = time.perf_counter()
        try:
            result = consumer.commit(offsets=offsets, asynchronous=False)
        except confluent_kafka.KafkaException as exc:
            err = exc.args[0] if exc.args else None
            code = err.code() if isinstance(err, confluent_kafka.KafkaError) else None
            text = err.str() if isinstance(err, confluent_kafka.KafkaError) else str(exc)
            if code in REFUSED_WHILE_REBALANCING:
                self.again = True
            elif code == confluent_kafka.KafkaError.OFFSET_METADATA_TOO_LARGE:
                self.metadata_max_bytes //= 2
                self.again = True
                text += (
                    f"; the metadata is cut to {self.metadata_max_bytes} bytes from now on: set "
                    "kafka.offset_metadata_max_bytes to the broker's offset.metadata.max.bytes"
                )
            # Otherwise retried with the next interval; a lost partition's offsets are its new owner's.
            self._log.warning(self._failed_event, error=text, again=self.again)
            return False
        if self._latency is not None:
            self._latency.observe(time.perf_counter() - started)
        self.count += 1
        for tp in result or ():
            if tp.error is None:
                part = parts.get((tp.topic, tp.partition))
                if part is not None:
                    part.committed = tp.offset
                    part.committed_metadata = tp.metadata or ""
        return True


def refresh_high_watermarks(consumer: Any, parts: Iterable[Partition]) -> None:
    """Set each partition's `high` from the client's cached end offsets (no broker round trip)."""
    for part in list(parts):
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(part.topic, part.partition), cached=True)
        except confluent_kafka.KafkaException:
            continue
        if high >= 0:
            part.high = high


def consume_batch(consumer: Any, size: int, timeout: float) -> list[Any]:
    """Up to `size` messages: what is queued at once, and only when nothing is, wait up to
    `timeout` for the first one (then take what is queued behind it)."""
    # consume(n, timeout) waits for n messages or the timeout, so asking for a full batch with a
    # timeout would hold a trickle of messages back for the whole timeout.
    batch: list[Any] = consumer.consume(size, 0)
    if not batch:
        batch = consumer.consume(1, timeout)
        if batch and size > 1:
            batch.extend(consumer.consume(size - 1, 0))
    return batch


_LEADER_MOVING = frozenset(
    {
        confluent_kafka.KafkaError.NOT_LEADER_FOR_PARTITION,
        confluent_kafka.KafkaError.LEADER_NOT_AVAILABLE,
        confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART,
        confluent_kafka.KafkaError._TIMED_OUT,
        confluent_kafka.KafkaError.REQUEST_TIMED_OUT,
    }
)


def read_watermarks(c: Any, tp: TopicPartition, timeout: float = 30.0) -> tuple[int, int]:
    """(low, high) of a partition, asked again while its leader is being elected or moved
    (a topic just created, a broker restarting) rather than failing the worker."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            low, high = c.get_watermark_offsets(tp, timeout=10, cached=False)
            return int(low), int(high)
        except confluent_kafka.KafkaException as exc:
            err = exc.args[0]
            code = err.code() if isinstance(err, confluent_kafka.KafkaError) else None
            if code not in _LEADER_MOVING or time.monotonic() + delay > deadline:
                raise
            log.info("partition_leader_wait", partition=f"{tp.topic}[{tp.partition}]", error=err.str())
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
