"""Records of a range that are gone before they are read (retention, a deletion of records): a
replay resuming below what the topic holds, and a reader meeting them mid-run, name them rather
than pass over them in silence."""

from __future__ import annotations

import asyncio

import confluent_kafka
import pytest
from confluent_kafka import TopicPartition
from kafka_helpers import admin, create_topic, delete_topics, produce, unique_name

from streamproc.config import KafkaConfig
from streamproc.kafka.ranges import RangeReader, deleted_from, range_consumer_config

pytestmark = pytest.mark.kafka


def _delete_below(bootstrap: str, topic: str, partition: int, offset: int) -> None:
    client = admin(bootstrap)  # kept until its future answers
    for future in client.delete_records(
        [TopicPartition(topic, partition, offset)], request_timeout=30
    ).values():
        future.result(30)


def test_the_part_of_a_range_below_the_first_offset_left_is_reported(kafka_bootstrap: str) -> None:
    topic = create_topic(kafka_bootstrap, unique_name("ranges-deleted"), partitions=2)
    try:
        for p in (0, 1):
            produce(kafka_bootstrap, topic, [b"e%d" % i for i in range(10)], partition=p)
        # What retention does to old segments: the records below offset 4 of partition 0 go.
        _delete_below(kafka_bootstrap, topic, 0, 4)
        consumer = confluent_kafka.Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": topic})
        try:
            assert deleted_from(consumer, topic, {0: (1, 10), 1: (1, 10)}) == {0: (1, 4)}
            assert deleted_from(consumer, topic, {0: (0, 3)}) == {0: (0, 3)}  # the whole range is gone
            assert deleted_from(consumer, topic, {0: (4, 10), 1: (0, 10)}) == {}
        finally:
            consumer.close()
    finally:
        delete_topics(kafka_bootstrap, [topic])


async def _read_all(
    bootstrap: str,
    topic: str,
    ranges: dict[int, tuple[int, int]],
    told: dict[int, tuple[int, int]] | None = None,
) -> tuple[list[tuple[int, int]], list[tuple[int, int, int]]]:
    """(partition, offset) of every record read, and what the reader said was deleted."""
    said: list[tuple[int, int, int]] = []
    kafka = KafkaConfig(bootstrap, (topic,), topic, f"{topic}-dlq")
    reader = RangeReader(range_consumer_config(kafka, topic), topic, on_deleted=lambda *gap: said.append(gap))
    read: list[tuple[int, int]] = []
    try:
        await reader.open()
        if told:
            reader.told(told)
        stop = asyncio.Event()
        async with asyncio.timeout(60):
            async for batch in reader.read(ranges, stop):
                read += [(m.partition(), m.offset()) for m in batch]
    finally:
        await reader.close()
    return sorted(read), said


async def test_records_deleted_before_the_reader_reaches_them_are_said_then_read_past(
    kafka_bootstrap: str,
) -> None:
    # What retention does while a long replay or redrive runs: the range was resolved when the
    # records were there; by the time they are read they are gone. Said, never passed over.
    topic = create_topic(kafka_bootstrap, unique_name("ranges-gone-mid-run"), partitions=2)
    try:
        for p in (0, 1):
            produce(kafka_bootstrap, topic, [b"e%d" % i for i in range(10)], partition=p)
        ranges = {0: (0, 10), 1: (0, 10)}
        _delete_below(kafka_bootstrap, topic, 0, 4)
        read, said = await _read_all(kafka_bootstrap, topic, ranges)
        assert said == [(0, 0, 4)]
        assert read == [(0, o) for o in range(4, 10)] + [(1, o) for o in range(10)]
    finally:
        delete_topics(kafka_bootstrap, [topic])


async def test_a_range_whose_rest_is_gone_ends_and_what_the_caller_said_is_not_said_again(
    kafka_bootstrap: str,
) -> None:
    topic = create_topic(kafka_bootstrap, unique_name("ranges-gone-whole"), partitions=2)
    try:
        for p in (0, 1):
            produce(kafka_bootstrap, topic, [b"e%d" % i for i in range(10)], partition=p)
        _delete_below(kafka_bootstrap, topic, 0, 9)
        _delete_below(kafka_bootstrap, topic, 1, 3)
        # Partition 0's range ends at 8: all of it is gone, and reading it ends at once. Partition
        # 1's gap was already reported by the caller (replay's check before reading).
        read, said = await _read_all(kafka_bootstrap, topic, {0: (2, 8), 1: (1, 10)}, told={1: (1, 3)})
        assert said == [(0, 2, 8)]
        assert read == [(1, o) for o in range(3, 10)]
    finally:
        delete_topics(kafka_bootstrap, [topic])
