"""What gets committed: the OffsetTracker watermark, and the consumer loop that commits it."""

import asyncio
import random
import time
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from streamproc.kafka.consumer import ConsumerLoop, Partition
from streamproc.kafka.offsets import OffsetTracker
from streamproc.metrics import Metrics


def test_empty_tracker_has_nothing_to_commit() -> None:
    assert OffsetTracker("t", 0).watermark() is None


def test_watermark_waits_for_the_oldest_unfinished_offset() -> None:
    t = OffsetTracker("t", 0)
    for o in (10, 11, 12):
        t.add(o)
    assert t.watermark() == 10
    assert t.complete(12) is False
    assert t.complete(11) is False
    assert t.watermark() == 10
    assert t.complete(10) is True
    assert t.watermark() == 13
    assert t.in_flight == 0


def test_gaps_in_offsets_do_not_block_the_watermark() -> None:
    t = OffsetTracker("t", 3)
    for o in (5, 7, 20):
        t.add(o)
    t.complete(7)
    t.complete(5)
    assert t.watermark() == 20
    t.complete(20)
    assert t.watermark() == 21


def test_completing_twice_or_unknown_offsets_changes_nothing() -> None:
    t = OffsetTracker("t", 0)
    t.add(1)
    t.add(2)
    t.complete(2)
    t.complete(2)
    t.complete(99)
    t.complete(0)
    assert t.in_flight == 1
    assert t.watermark() == 1


def test_offsets_must_be_added_in_order() -> None:
    t = OffsetTracker("t", 0)
    t.add(5)
    with pytest.raises(ValueError, match="consumption order"):
        t.add(5)


def test_closed_tracker_ignores_late_completions() -> None:
    t = OffsetTracker("t", 0)
    t.add(1)
    t.add(2)
    assert t.close() == 2
    t.complete(1)
    assert t.watermark() == 1


@given(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=200), st.randoms())
def test_watermark_is_always_the_first_unfinished_offset(steps: list[int], rnd: random.Random) -> None:
    offsets = []
    o = 0
    for s in steps:
        o += s
        offsets.append(o)
    t = OffsetTracker("t", 0)
    for off in offsets:
        t.add(off)
    order = offsets[:]
    rnd.shuffle(order)
    finished: set[int] = set()
    for off in order:
        t.complete(off)
        finished.add(off)
        unfinished = [x for x in offsets if x not in finished]
        assert t.watermark() == (unfinished[0] if unfinished else offsets[-1] + 1)
        assert t.in_flight == len(unfinished)


# -- the consumer loop's commits, against a scripted stand-in for confluent-kafka's Consumer --------


class _Msg:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._t, self._p, self._o = topic, partition, offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> None:
        return None

    def value(self) -> bytes:
        return b"{}"


class _ScriptedConsumer:
    """Assigns one partition, hands out offsets 0..n-1 once, and can be told to revoke it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.commits: list[int] = []
        self.paused = 0
        self.resumed = 0
        self.revoke_next = False
        self._callbacks: dict[str, Any] = {}
        self._assigned = False
        self._sent = False
        self._tp = TopicPartition("t", 0)

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self._callbacks = callbacks

    def consume(self, num: int, timeout: float) -> list[_Msg]:
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
            return [_Msg("t", 0, o) for o in range(self.n)]
        time.sleep(min(timeout, 0.01))
        return []

    def assignment(self) -> list[TopicPartition]:
        return [self._tp]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused += 1

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.resumed += 1

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        self.commits.extend(tp.offset for tp in offsets)
        return offsets

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]:
        return 0, self.n

    def close(self) -> None:
        pass


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.01)


def _scripted_loop(
    fake: _ScriptedConsumer, seen: list[tuple[int, Partition]], **options: Any
) -> ConsumerLoop:
    """A loop over the scripted consumer whose handler only records each message with its partition."""
    return ConsumerLoop(
        {},
        ["t"],
        lambda msg, part: seen.append((msg.offset(), part)),
        metrics=Metrics(),
        consumer_factory=lambda conf: fake,
        **options,
    )


async def test_revoke_commits_the_watermark_and_late_completions_never_commit() -> None:
    fake = _ScriptedConsumer(10)
    seen: list[tuple[int, Partition]] = []
    loop = _scripted_loop(
        fake, seen, commit_interval=0.01, revoke_timeout=0.2, max_in_flight=8, resume_in_flight=3
    )
    task = asyncio.create_task(loop.run())
    await _until(lambda: len(seen) == 10)
    await _until(lambda: fake.paused == 1)  # 10 in flight is above the bound of 8
    for offset, part in seen[:7]:
        loop.complete(part, offset)
    await _until(lambda: fake.resumed == 1)  # 3 left in flight: back at the low-water mark
    await _until(lambda: fake.commits and fake.commits[-1] == 7)
    fake.revoke_next = True
    await _until(lambda: not loop.partitions)  # waited up to the bound for offsets 7..9, then let go
    assert fake.commits[-1] == 7
    for offset, part in seen[7:]:
        loop.complete(part, offset)  # finished after the partition moved on
    await asyncio.sleep(0.1)
    loop.request_stop()
    await task
    await loop.close()
    assert max(fake.commits) == 7


async def test_a_revoke_asks_for_open_batches_first_so_their_offsets_commit() -> None:
    fake = _ScriptedConsumer(3)
    seen: list[tuple[int, Partition]] = []
    drains: list[str] = []

    def on_drain() -> None:
        # What dispatch does here: send every open batch now. The batches finish, completing
        # the offsets that were waiting for them.
        drains.append("drain")
        for offset, part in seen:
            loop.complete(part, offset)

    loop = _scripted_loop(fake, seen, commit_interval=60.0, revoke_timeout=30.0, on_drain=on_drain)
    task = asyncio.create_task(loop.run())
    await _until(lambda: len(seen) == 3)
    fake.revoke_next = True
    await _until(lambda: not loop.partitions, timeout=10.0)
    assert drains == ["drain"]
    assert fake.commits[-1] == 3  # everything, not the offset the revoke started at
    loop.request_stop()
    await task
    assert await loop.drain(0.0) == 0 and drains == ["drain", "drain"]
    await loop.close()


async def test_finished_events_behind_a_slow_one_count_against_the_bound() -> None:
    # One slow event holds the watermark while the nine after it finish: all ten would be read
    # again after a crash, so the worker stays paused until the slow one is done.
    fake = _ScriptedConsumer(10)
    seen: list[tuple[int, Partition]] = []
    loop = _scripted_loop(fake, seen, commit_interval=0.01, max_in_flight=8, resume_in_flight=3)
    task = asyncio.create_task(loop.run())
    await _until(lambda: len(seen) == 10)
    await _until(lambda: fake.paused == 1)
    for offset, part in seen[1:]:
        loop.complete(part, offset)
    assert loop.in_flight() == 1 and loop.window() == 10
    await asyncio.sleep(0.1)
    assert fake.resumed == 0 and fake.commits[-1] == 0
    offset, part = seen[0]
    loop.complete(part, offset)
    await _until(lambda: fake.resumed == 1)
    await _until(lambda: fake.commits[-1] == 10)
    loop.request_stop()
    await task
    await loop.close()
