"""What gets committed: the OffsetTracker watermark, and the consumer loop that commits it."""

import asyncio
import random
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError
from hypothesis import given
from hypothesis import strategies as st
from scripted_consumer import ScriptedConsumer

from streamproc.kafka.consumer import ConsumerLoop
from streamproc.kafka.offsets import OffsetTracker
from streamproc.kafka.progress import Progress
from streamproc.kafka.reader import Partition
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


# -- what is finished past the watermark, and a new owner taking it over ---------------------------


def test_progress_lists_what_finished_past_the_watermark() -> None:
    t = OffsetTracker("t", 0)
    for o in (10, 11, 12, 14, 15, 16):  # 13: a gap (compaction), no message
        t.add(o)
    for o in (11, 12, 15):
        t.complete(o)
    t.finish_delivery(14, 7)
    t.finish_delivery(14, 9)
    t.finish_delivery(11, 7)  # already finished: nothing to say
    p = t.progress()
    assert p == Progress(10, ((11, 14), (15, 16)), {14: frozenset({7, 9})})
    t.complete(14)
    t.complete(10)
    assert t.progress() == Progress(16, (), {})


def test_a_new_owner_passes_over_what_the_last_one_finished_and_commits_it_again() -> None:
    # The last owner committed 10 with 11..19 finished, and two deliveries of 20 done.
    t = OffsetTracker("t", 0)
    t.inherit(Progress(10, ((11, 20),), {20: frozenset({7, 9})}))
    assert not t.skips(10)
    t.add(10)
    assert [o for o in range(11, 15) if t.skips(o)] == [11, 12, 13, 14]
    # A commit now, before 15..19 are read, still says they are finished.
    assert t.progress() == Progress(10, ((11, 20),), {20: frozenset({7, 9})})
    t.complete(10)
    assert t.watermark() == 20  # 15..19 are finished and unread: the watermark passes them
    for o in range(15, 20):
        assert t.skips(o)
    assert not t.skips(20)
    t.add(20)
    assert t.finished_deliveries(20) == {7, 9}
    t.finish_delivery(20, 3)
    assert t.progress() == Progress(20, (), {20: frozenset({3, 7, 9})})
    t.complete(20)
    assert t.watermark() == 21 and t.finished_deliveries(20) is None


def test_an_inherited_offset_read_again_is_not_skipped_twice() -> None:
    t = OffsetTracker("t", 0)
    t.inherit(Progress(0, ((1, 3),)))
    t.add(0)
    assert t.skips(1) and t.skips(2)
    assert not t.skips(2)  # a second read of 2 (a seek back): add() refuses it as usual
    with pytest.raises(ValueError):
        t.add(2)


@given(st.lists(st.sampled_from("fop"), min_size=1, max_size=120))
def test_an_owner_chain_never_loses_or_repeats_finished_work(states: list[str]) -> None:
    # Owner 1 reads offsets 0..n-1 and finishes some ("f"), some partly ("p"), leaves others open
    # ("o"); owner 2 inherits its progress: it processes exactly the unfinished offsets, and the
    # partly finished ones with the deliveries done already.
    first = OffsetTracker("t", 0)
    for o in range(len(states)):
        first.add(o)
    for o, state in enumerate(states):
        if state == "f":
            first.complete(o)
        elif state == "p":
            first.finish_delivery(o, 1)
    handed = first.progress()
    assert handed is not None
    second = OffsetTracker("t", 0)
    second.inherit(handed)
    processed, parts = [], {}
    for o in range(handed.watermark, len(states)):
        if second.skips(o):
            continue
        second.add(o)
        processed.append(o)
        if second.finished_deliveries(o):
            parts[o] = set(second.finished_deliveries(o) or ())
    assert processed == [o for o, s in enumerate(states) if s != "f" and o >= handed.watermark]
    assert parts == {o: {1} for o, s in enumerate(states) if s == "p" and o >= handed.watermark}
    for o in processed:
        second.complete(o)
    # Nothing left to read when everything was finished: the earlier commit stands.
    assert second.watermark() == (len(states) if processed else None)


# -- the consumer loop's commits, against a scripted stand-in for confluent-kafka's Consumer --------


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.01)


def _scripted_loop(fake: ScriptedConsumer, seen: list[tuple[int, Partition]], **options: Any) -> ConsumerLoop:
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
    fake = ScriptedConsumer(10)
    seen: list[tuple[int, Partition]] = []
    loop = _scripted_loop(
        fake,
        seen,
        commit_interval=0.01,
        revoke_timeout=0.2,
        max_in_flight_events=8,
        resume_in_flight_events=3,
    )
    task = asyncio.create_task(loop.run())
    await _until(lambda: len(seen) == 10)
    await _until(lambda: fake.paused == 1)  # 10 in flight is above the bound of 8
    for offset, part in seen[:7]:
        loop.complete(part, offset)
    await _until(lambda: fake.resumed == 1)  # 3 left in flight: back at the low-water mark
    await _until(lambda: fake.commits and fake.commits[-1] == 7)
    fake.revoke_next = True
    await _until(lambda: not loop.partitions)  # offsets 7..9 have no work on the wire: let go at once
    assert fake.commits[-1] == 7
    for offset, part in seen[7:]:
        loop.complete(part, offset)  # finished after the partition moved on
    await asyncio.sleep(0.1)
    loop.request_stop()
    await task
    await loop.close()
    assert max(fake.commits) == 7


async def test_a_revoke_asks_for_open_batches_first_so_their_offsets_commit() -> None:
    fake = ScriptedConsumer(3)
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


async def test_a_full_window_that_falls_back_soon_is_held_not_paused() -> None:
    # On a backlog the window fills and falls back many times a second. The loop stops polling
    # while it is full instead of pausing: a pause would drop what librdkafka prefetched, and the
    # worker would wait for it to be fetched again after the resume.
    fake = ScriptedConsumer(10)
    seen: list[tuple[int, Partition]] = []
    loop = _scripted_loop(fake, seen, commit_interval=60.0, max_in_flight_events=8, resume_in_flight_events=3)
    task = asyncio.create_task(loop.run())
    await _until(lambda: len(seen) == 10)
    polls = fake.polls
    await asyncio.sleep(0.2)
    assert fake.polls == polls  # full: no poll, which would take more messages
    for offset, part in seen[:7]:
        loop.complete(part, offset)
    await _until(lambda: fake.polls > polls)  # at its resume mark: polling again at once
    assert fake.paused == 0 and fake.resumed == 0
    loop.request_stop()
    await task
    await loop.close()


async def test_finished_events_behind_a_slow_one_count_against_the_bound() -> None:
    # One slow event holds the watermark while the nine after it finish: all ten would be read
    # again after a crash, so the worker stays paused until the slow one is done.
    fake = ScriptedConsumer(10)
    seen: list[tuple[int, Partition]] = []
    loop = _scripted_loop(fake, seen, commit_interval=0.01, max_in_flight_events=8, resume_in_flight_events=3)
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


async def test_a_stopping_worker_keeps_serving_the_group_while_it_drains() -> None:
    # The group takes the partition away while the worker drains: the revoke runs (the worker
    # polls, paused) and commits in its callback, and the drain ends with nothing left.
    fake = ScriptedConsumer(10)
    seen: list[tuple[int, Partition]] = []
    loop = _scripted_loop(fake, seen, commit_interval=60.0)
    task = asyncio.create_task(loop.run())
    await _until(lambda: len(seen) == 10)
    for offset, part in seen[:5]:
        loop.complete(part, offset)
    loop.request_stop()
    await task
    polls = fake.polls
    fake.revoke_next = True
    assert await loop.drain(time.monotonic() + 5.0) == 0
    assert fake.polls > polls and not loop.partitions
    assert fake.commits == [5]
    await loop.close()
    assert fake.commits == [5]


async def test_a_commit_refused_while_the_group_rebalances_is_made_again_after_a_poll() -> None:
    fake = ScriptedConsumer(4)
    seen: list[tuple[int, Partition]] = []
    loop = _scripted_loop(fake, seen, commit_interval=60.0)
    task = asyncio.create_task(loop.run())
    await _until(lambda: len(seen) == 4)
    for offset, part in seen:
        loop.complete(part, offset)
    loop.request_stop()
    await task
    fake.refuse = [KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION]
    polls = fake.polls
    await loop.close()
    assert fake.commits == [4]
    assert fake.polls >= polls + 2  # it polled through the rebalance before each new attempt
