"""Where a replay keeps its progress: a state file (`ReplayState`), or Kafka, as the commits of a
consumer group of the replay's own (`GroupProgress`).

A replay run as a Kubernetes Job has no disk that outlives its pod, so `--progress-group GROUP` keeps
what `--state FILE` keeps in the broker instead: each partition's committed offset is the next offset
to replay, and the commit's metadata holds that partition's range and the replay's `--from`/`--to`, so
a rerun (a retried pod, a new Job for the same replay) reads the same ranges back even when `--to`
was "the end now". The group only ever commits: it never subscribes, so it has no members and the
live group is never touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import TopicPartition

from streamproc.errors import StreamprocError
from streamproc.kafka.ranges import PartitionRanges, RangeReader

__all__ = ["GroupProgress", "ReplayState"]


@dataclass
class ReplayState:
    """What a replay has finished, so a rerun can continue: the ranges and the next offset per partition."""

    path: Path | None
    topic: str
    start: str | None
    end: str | None
    ranges: PartitionRanges
    next: dict[int, int]

    @classmethod
    def load(cls, path: Path) -> ReplayState | None:
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise StreamprocError(f"cannot read replay state {path}: {exc}") from None
        return cls(
            path,
            data["topic"],
            data.get("from"),
            data.get("to"),
            {int(p): (int(r[0]), int(r[1])) for p, r in data["ranges"].items()},
            {int(p): int(o) for p, o in data["next"].items()},
        )

    def save(self) -> None:
        if self.path is None:
            return
        data = {
            "version": 1,
            "topic": self.topic,
            "from": self.start,
            "to": self.end,
            "ranges": {str(p): list(r) for p, r in sorted(self.ranges.items())},
            "next": {str(p): o for p, o in sorted(self.next.items())},
            "saved_at": datetime.now(UTC).isoformat(),
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.path)

    def remaining(self) -> dict[int, tuple[int, int]]:
        return {
            p: (max(s, self.next.get(p, s)), e)
            for p, (s, e) in self.ranges.items()
            if self.next.get(p, s) < e
        }

    def total_left(self) -> int:
        return sum(e - s for s, e in self.remaining().values())


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
