"""A replay that resumes below what the topic still holds: the records retention deleted meanwhile
are named, not passed over in silence."""

from __future__ import annotations

import confluent_kafka
import pytest
from confluent_kafka import TopicPartition
from kafka_helpers import admin, create_topic, delete_topics, produce, unique_name

from streamproc.kafka.ranges import deleted_from

pytestmark = pytest.mark.kafka


def test_the_part_of_a_range_below_the_first_offset_left_is_reported(kafka_bootstrap: str) -> None:
    topic = create_topic(kafka_bootstrap, unique_name("ranges-deleted"), partitions=2)
    try:
        for p in (0, 1):
            produce(kafka_bootstrap, topic, [b"e%d" % i for i in range(10)], partition=p)
        # What retention does to old segments: the records below offset 4 of partition 0 go.
        client = admin(kafka_bootstrap)  # kept until its future answers
        futures = client.delete_records([TopicPartition(topic, 0, 4)], request_timeout=30)
        for future in futures.values():
            future.result(30)
        consumer = confluent_kafka.Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": topic})
        try:
            assert deleted_from(consumer, topic, {0: (1, 10), 1: (1, 10)}) == {0: (1, 4)}
            assert deleted_from(consumer, topic, {0: (0, 3)}) == {0: (0, 3)}  # the whole range is gone
            assert deleted_from(consumer, topic, {0: (4, 10), 1: (0, 10)}) == {}
        finally:
            consumer.close()
    finally:
        delete_topics(kafka_bootstrap, [topic])
