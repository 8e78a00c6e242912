"""Reading a partition's offsets while its leader is being elected: a retry topic the worker has
just created, or a broker that restarts, must not stop the worker."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from kafka_helpers import delete_topics

from streamproc.kafka.admin import ensure_retry_topics
from streamproc.kafka.polling import read_watermarks


class Flaky:
    """A consumer whose first answers are the given errors."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = list(errors)
        self.calls = 0

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float, cached: bool) -> tuple[int, int]:
        self.calls += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return 3, 17


def test_offsets_are_asked_again_while_the_leader_moves() -> None:
    c = Flaky([KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE])
    assert read_watermarks(c, TopicPartition("t", 0)) == (3, 17)
    assert c.calls == 3


def test_other_errors_and_a_leader_that_never_comes_still_fail() -> None:
    with pytest.raises(KafkaException) as info:
        read_watermarks(Flaky([KafkaError.TOPIC_AUTHORIZATION_FAILED]), TopicPartition("t", 0))
    assert info.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    forever: Any = Flaky([KafkaError.NOT_LEADER_FOR_PARTITION] * 1000)
    with pytest.raises(KafkaException):
        read_watermarks(forever, TopicPartition("t", 0), timeout=0.3)


@pytest.mark.kafka
def test_created_retry_topics_answer_offset_reads_at_once(
    kafka_bootstrap: str, topic: Callable[..., str]
) -> None:
    names = [f"retry-{uuid.uuid4().hex[:10]}.{d}" for d in ("a", "b", "c")]
    try:
        assert ensure_retry_topics(kafka_bootstrap, {}, names, 4) == names
        c = confluent_kafka.Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "wm-check"})
        try:
            for name in names:
                for p in range(4):
                    # No retry here: ensure_retry_topics returned only once every partition had a leader.
                    assert c.get_watermark_offsets(TopicPartition(name, p), timeout=10, cached=False) == (
                        0,
                        0,
                    )
        finally:
            c.close()
        assert ensure_retry_topics(kafka_bootstrap, {}, names, 4) == []
    finally:
        delete_topics(kafka_bootstrap, names)
