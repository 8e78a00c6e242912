"""The kafka_bootstrap fixture gives a working broker: topics, produce, consume, group offsets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, KafkaException
from kafka_helpers import admin, committed_offsets, end_offsets, produce, read_all, unique_name, wait_until

pytestmark = pytest.mark.kafka


def test_produce_and_read_back_1000_messages(kafka_bootstrap: str, topic: Callable[..., str]) -> None:
    name = topic("roundtrip")
    values = [f"event-{i}".encode() for i in range(1000)]
    keys = [f"user-{i % 37}".encode() for i in range(1000)]
    headers = [[("seq", str(i).encode())] for i in range(1000)]

    assert produce(kafka_bootstrap, name, values, keys=keys, headers=headers) == 1000

    records = read_all(kafka_bootstrap, name)
    assert sorted(r.value for r in records) == sorted(values)
    assert sum(end_offsets(kafka_bootstrap, name).values()) == 1000
    # Keys hash to partitions, so every message of one user lands in one partition, in produce order.
    by_key: dict[bytes | None, set[int]] = {}
    for r in records:
        by_key.setdefault(r.key, set()).add(r.partition)
        assert r.value == b"event-" + (r.header("seq") or b"?")
        assert r.timestamp > 0
    assert all(len(parts) == 1 for parts in by_key.values())
    assert len({r.partition for r in records}) == 4


def test_group_consumes_everything_and_commits(kafka_bootstrap: str, topic: Callable[..., str]) -> None:
    name = topic("group")
    produce(
        kafka_bootstrap,
        name,
        [str(i).encode() for i in range(1000)],
        keys=[str(i).encode() for i in range(1000)],
    )
    group = unique_name("group")
    assert committed_offsets(kafka_bootstrap, group, name) == {}

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    seen: Counter[bytes] = Counter()
    try:
        consumer.subscribe([name])

        def consumed_all() -> bool:
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                assert msg.error() is None, msg.error()
                seen[msg.value()] += 1
            return sum(seen.values()) >= 1000

        wait_until(consumed_all, timeout=60, interval=0)
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()

    assert len(seen) == 1000 and max(seen.values()) == 1
    assert committed_offsets(kafka_bootstrap, group, name) == end_offsets(kafka_bootstrap, name)


def test_topic_auto_creation_is_disabled(kafka_bootstrap: str) -> None:
    # Producing to a missing topic must fail rather than silently create it: the worker's DLQ and
    # input topics are provisioned explicitly.
    missing = unique_name("missing")
    with pytest.raises((KafkaException, TimeoutError)):
        produce(kafka_bootstrap, missing, [b"x"], timeout=5, config={"message.timeout.ms": 3000})
    assert missing not in admin(kafka_bootstrap).list_topics(timeout=5).topics
