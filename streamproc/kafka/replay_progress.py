"""Replay progress kept in Kafka, as the commits of a consumer group of the replay's own.

A replay run as a Kubernetes Job has no disk that outlives its pod, so `--progress-group GROUP` keeps
what `--state FILE` keeps in the broker instead: each partition's committed offset is the next offset
to replay, and the commit's metadata holds that partition's range and the replay's `--from`/`--to`, so
a rerun (a retried pod, a new Job for the same replay) reads the same ranges back even when `--to`
was "the end now". The group only ever commits: it never subscribes, so it has no members and the
live group is never touched.
"""

from __future__ import annotations

from typing import Any

import orjson
from confluent_kafka import TopicPartition

from streamproc.errors import StreamprocError
from streamproc.kafka.replay import RangeReader, ReplayState

__all__ = ["GroupProgress"]

_VERSION = 1


class GroupProgress:
    """Loads and saves a `ReplayState` as the commits of `group` (the reader's consumer's group id)."""

    def __init__(self, reader: RangeReader, group: str, timeout: float = 30.0) -> None:
        self._reader = reader
        self.group = group
        self._timeout = timeout

    async def load(self, topic: str) -> ReplayState | None:
        """The state a previous run committed, or None when this group has committed nothing for `topic`."""
        return await self._reader.call(self._load, topic)

    def _load(self, topic: str) -> ReplayState | None:
        consumer = self._reader.consumer
        md = consumer.list_topics(topic, timeout=self._timeout).topics.get(topic)
        if md is None or md.error is not None:
            return None
        committed = consumer.committed(
            [TopicPartition(topic, p) for p in sorted(md.partitions)], timeout=self._timeout
        )
        ranges: dict[int, tuple[int, int]] = {}
        next_offsets: dict[int, int] = {}
        spec: tuple[Any, Any] | None = None
        for tp in committed:
            if tp.offset < 0 or not tp.metadata:
                continue
            try:
                meta = orjson.loads(tp.metadata)
                start, end = int(meta["range"][0]), int(meta["range"][1])
                this = (meta.get("from"), meta.get("to"))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError):
                raise StreamprocError(
                    f"consumer group {self.group} has commits on {topic} that are not a replay's progress;"
                    " use another --progress-group"
                ) from None
            if spec is not None and this != spec:
                raise StreamprocError(f"consumer group {self.group} holds progress of two different replays")
            spec = this
            ranges[tp.partition] = (start, end)
            next_offsets[tp.partition] = tp.offset
        if spec is None:
            return None
        return ReplayState(None, topic, spec[0], spec[1], ranges, next_offsets)

    async def save(self, state: ReplayState) -> None:
        """Commit every partition's next offset, with its range and the replay's bounds as metadata."""
        offsets = [
            TopicPartition(
                state.topic,
                p,
                max(start, state.next.get(p, start)),
                metadata=orjson.dumps(
                    {"v": _VERSION, "range": [start, end], "from": state.start, "to": state.end}
                ).decode(),
            )
            for p, (start, end) in sorted(state.ranges.items())
        ]
        if offsets:
            await self._reader.call(self._commit, offsets)

    def _commit(self, offsets: list[TopicPartition]) -> None:
        for tp in self._reader.consumer.commit(offsets=offsets, asynchronous=False) or ():
            if tp.error is not None:
                raise StreamprocError(f"saving replay progress in group {self.group}: {tp.error}")
