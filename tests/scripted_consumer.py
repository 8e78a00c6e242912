"""A scripted stand-in for confluent-kafka's Consumer, for consumer-loop tests without a broker:
one partition, t[0], whose offsets from the last commit to `end - 1` are handed out once."""

from __future__ import annotations

import time
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, TopicPartition


class ScriptedMessage:
    """Offset o of t[0]: the event {"messageId": "m<o>"}."""

    def __init__(self, offset: int) -> None:
        self._o = offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return orjson.dumps({"messageId": f"m{self._o}"})

    def key(self) -> bytes:
        return b"k"

    def headers(self) -> list[tuple[str, bytes]]:
        return []

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


class ScriptedConsumer:
    """Assigns t[0] at the first poll, hands out its offsets from the last commit to `end - 1` at
    the next, revokes it when told (`revoke_next`), and keeps its commits with their metadata as
    the broker would (`last_commit`, what `committed()` answers); `refuse` holds the error codes
    the next commits are refused with."""

    def __init__(self, end: int, last_commit: TopicPartition | None = None) -> None:
        self.end = end
        self.commits: list[int] = []
        self.last_commit = last_commit
        self.refuse: list[int] = []
        self.polls = 0
        self.paused = 0
        self.resumed = 0
        self.revoke_next = False
        self._callbacks: dict[str, Any] = {}
        self._assigned = False
        self._sent = False
        self._tp = TopicPartition("t", 0)

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self._callbacks = callbacks

    def consume(self, num: int, timeout: float) -> list[ScriptedMessage]:
        self.polls += 1
        if not self._assigned:
            self._assigned = True
            self._callbacks["on_assign"](self, [self._tp])
            return []
        if self.revoke_next:
            self.revoke_next = False
            self._callbacks["on_revoke"](self, [self._tp])
            return []
        if not self._sent:
            self._sent = True
            start = self.last_commit.offset if self.last_commit is not None else 0
            return [ScriptedMessage(o) for o in range(start, self.end)]
        time.sleep(min(timeout, 0.01))
        return []

    def assignment(self) -> list[TopicPartition]:
        return [self._tp]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused += 1

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.resumed += 1

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        if self.refuse:
            raise KafkaException(KafkaError(self.refuse.pop(0)))
        self.commits.extend(tp.offset for tp in offsets)
        self.last_commit = offsets[-1]
        return offsets

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [self.last_commit or TopicPartition("t", 0, -1001)]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]:
        return 0, self.end

    def close(self) -> None:
        pass
