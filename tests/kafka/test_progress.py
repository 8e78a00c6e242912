"""The commit's metadata: what is finished past the watermark survives the trip through the broker's
metadata string, within its size limit, and anything it cannot say means "send again"."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from streamproc.kafka.offsets import OffsetTracker
from streamproc.kafka.progress import Progress, decode, delivery_key, encode

A, B, C = (delivery_key("seg", "Track"), delivery_key("tiktok", "Buy"), delivery_key("stackadapt", "Conv"))


def _finished_offsets(p: Progress) -> set[int]:
    return {o for start, stop in p.finished for o in range(start, stop)}


@st.composite
def progresses(draw: st.DrawFn) -> Progress:
    watermark = draw(st.integers(min_value=0, max_value=2**40))
    states = draw(st.lists(st.sampled_from("fuup"), max_size=400))  # finished, unfinished, part
    keys = [A, B, C]
    finished: list[tuple[int, int]] = []
    parts: dict[int, frozenset[int]] = {}
    for i, state in enumerate(states, start=1):
        o = watermark + i
        if state == "f":
            if finished and finished[-1][1] == o:
                finished[-1] = (finished[-1][0], o + 1)
            else:
                finished.append((o, o + 1))
        elif state == "p":
            parts[o] = frozenset(draw(st.sets(st.sampled_from(keys), min_size=1)))
    return Progress(watermark, tuple(finished), parts)


@given(progresses())
def test_progress_round_trips_through_the_metadata_text(p: Progress) -> None:
    text = encode(p, max_bytes=1_000_000)
    if not p.finished and not p.parts:
        assert text == ""
        return
    assert text.isascii() and text.startswith("sp1")
    back = decode(text, p.watermark)
    assert back is not None
    assert back.finished == p.finished
    assert dict(back.parts) == dict(p.parts)


@given(progresses(), st.integers(min_value=0, max_value=200))
def test_a_text_over_the_limit_is_cut_and_never_claims_more(p: Progress, limit: int) -> None:
    text = encode(p, max_bytes=limit)
    assert len(text) <= limit
    back = decode(text, p.watermark) or Progress(p.watermark)
    assert _finished_offsets(back) <= _finished_offsets(p)
    for offset, keys in back.parts.items():
        assert keys <= p.parts[offset]
    if text:
        # What was cut is the far end: everything before the cut is still there.
        end = back.end
        assert _finished_offsets(back) == {o for o in _finished_offsets(p) if o < end}


def test_a_long_scattered_window_still_fits_the_brokers_default_limit() -> None:
    # 10,000 offsets past the watermark, one in fifty unfinished at random, and 200 events with
    # some of their deliveries done: what a worker at its in-flight bound could hold at a revoke.
    rnd = random.Random(7)
    tracker = OffsetTracker("t", 0)
    for o in range(10_001):
        tracker.add(o)
    for o in range(1, 10_001):
        if rnd.random() > 0.02:
            tracker.complete(o)
    for o in rnd.sample([o for o in range(1, 10_001) if tracker.finished_deliveries(o) is None], 200):
        tracker.finish_delivery(o, rnd.choice([A, B, C]))
    p = tracker.progress()
    assert p is not None
    text = encode(p)
    assert len(text) <= 4096
    assert decode(text, 0) == p


def test_metadata_that_is_not_ours_or_for_another_offset_is_ignored() -> None:
    text = encode(Progress(10, ((12, 20),)))
    assert decode(text, 10) is not None
    assert decode(text, 11) is None  # the offset was reset since
    assert decode("", 10) is None
    assert decode(None, 10) is None
    assert decode("consumer-x v1", 10) is None
    assert decode("sp9r" + text[4:], 10) is None
    assert decode(text[:-3], 10) is None  # truncated
    assert decode("sp1r!!!", 10) is None


def test_a_delivery_is_known_by_destination_and_subscription_only() -> None:
    assert delivery_key("seg", "Track") == delivery_key("seg", "Track")
    keys = {delivery_key("seg", "Track"), delivery_key("seg", "Page"), delivery_key("seg2", "Track")}
    assert len(keys) == 3
    # Not a concatenation: the separator keeps ("a", "bc") and ("ab", "c") apart.
    assert delivery_key("a", "bc") != delivery_key("ab", "c")
