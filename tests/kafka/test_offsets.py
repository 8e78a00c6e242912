"""OffsetTracker: the committable position is the first offset not yet finished."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamproc.kafka.offsets import OffsetTracker


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
