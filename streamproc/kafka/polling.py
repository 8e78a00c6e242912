"""The steps the live and the retry consumer both run on their Kafka thread: a synchronous commit,
the refresh of the partitions' high watermarks, the batch read, and a watermark read that waits
out a leader election."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import confluent_kafka
import structlog
from confluent_kafka import TopicPartition

if TYPE_CHECKING:
    from prometheus_client import Histogram

    from streamproc.kafka.consumer import Partition

__all__ = ["commit_sync", "consume_batch", "read_watermarks", "refresh_high_watermarks"]

log = structlog.get_logger("streamproc.consumer")


def commit_sync(
    consumer: Any,
    offsets: list[TopicPartition],
    parts: Mapping[tuple[str, int], Partition],
    *,
    logger: Any,
    failed_event: str,
    latency: Histogram | None = None,
) -> bool:
    """Commit `offsets` and record on each still-assigned partition what was committed; returns
    False (after logging `failed_event` to `logger`) when the broker refused."""
    started = time.perf_counter()
    try:
        result = consumer.commit(offsets=offsets, asynchronous=False)
    except confluent_kafka.KafkaException as exc:
        # Retried with the next interval; a lost partition's offsets are its new owner's.
        logger.warning(failed_event, error=str(exc.args[0] if exc.args else exc))
        return False
    if latency is not None:
        latency.observe(time.perf_counter() - started)
    for tp in result or ():
        if tp.error is None:
            part = parts.get((tp.topic, tp.partition))
            if part is not None:
                part.committed = tp.offset
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
