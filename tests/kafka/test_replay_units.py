"""Replay and redrive logic that needs no broker: positions, ranges, state files, dead-letter filters,
the event processor fed from ranges (watermarks, dead letters), and the progress display."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from manual_clock import ManualClock

from streamproc.errors import DecodeError, StreamprocError
from streamproc.handoff import DeliveryResult, Failure
from streamproc.kafka.dlq import DeadLetterFilter, DeadLetterView, statuses
from streamproc.kafka.ranges import Position, parse_position, resolve_ranges
from streamproc.metrics import Metrics
from streamproc.pipeline import EventProcessor
from streamproc.progress import Progress, format_duration
from streamproc.router import Delivery
from streamproc.runs.feed import RangeFeed
from streamproc.runs.redrive import redrive_group
from streamproc.runs.replay_progress import ReplayState
from streamproc.senders import senders_for
from streamproc.summary import Summary


def test_positions() -> None:
    assert parse_position(None, edge="beginning") == Position("edge", offset=0)
    assert parse_position(None, edge="end") == Position("edge", offset=-1)
    assert parse_position("1200", edge="end") == Position("offset", offset=1200)
    assert parse_position("0:10, 2:30", edge="end") == Position("offsets", offsets={0: 10, 2: 30})
    t = parse_position("2026-11-23T10:00:00Z", edge="end")
    assert t.time_ms == int(datetime(2026, 11, 23, 10, tzinfo=UTC).timestamp() * 1000)
    assert parse_position("2026-11-23T10:00:00", edge="end") == t  # no zone means UTC
    with pytest.raises(StreamprocError, match="ISO-8601"):
        parse_position("yesterday", edge="end")


@dataclass
class _TP:
    topic: str
    partition: int
    offset: int = -1001


@dataclass
class FakeConsumer:
    """Three partitions holding offsets [low, high); message i of partition p has time 1000 * i."""

    marks: dict[int, tuple[int, int]] = field(default_factory=lambda: {0: (0, 100), 1: (20, 50), 2: (0, 0)})

    def list_topics(self, topic: str, timeout: float) -> Any:
        md = type("MD", (), {"error": None, "partitions": dict.fromkeys(self.marks)})()
        return type("Topics", (), {"topics": {topic: md}})()

    def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool) -> tuple[int, int]:
        return self.marks[tp.partition]

    def offsets_for_times(self, tps: list[Any], timeout: float) -> list[_TP]:
        out = []
        for tp in tps:
            low, high = self.marks[tp.partition]
            first = max(low, -(-tp.offset // 1000))
            out.append(_TP(tp.topic, tp.partition, first if first < high else -1))
        return out


def test_ranges_from_offsets_times_and_edges() -> None:
    c = FakeConsumer()
    every = resolve_ranges(c, "t", parse_position(None, edge="beginning"), parse_position(None, edge="end"))
    assert every == {0: (0, 100), 1: (20, 50)}  # the empty partition has nothing to read
    assert resolve_ranges(c, "t", parse_position("30", edge="b"), parse_position("40", edge="e")) == {
        0: (30, 40),
        1: (30, 40),
    }
    assert resolve_ranges(c, "t", parse_position("0:5", edge="b"), parse_position("0:7,1:30", edge="e")) == {
        0: (5, 7)
    }
    by_time = resolve_ranges(c, "t", Position("time", time_ms=10_000), Position("time", time_ms=60_000))
    assert by_time == {0: (10, 60), 1: (20, 50)}  # partition 1 has nothing after 50: to its end
    with pytest.raises(StreamprocError, match="no partition 7"):
        resolve_ranges(c, "t", parse_position("7:1", edge="b"), parse_position(None, edge="end"))


def test_state_file_round_trip_and_remaining(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    state = ReplayState(path, "events", "2026-01-01T00:00:00Z", None, {0: (0, 10), 1: (5, 8)}, {0: 0, 1: 5})
    state.save()
    state.next.update({0: 4, 1: 8})
    state.save()
    loaded = ReplayState.load(path)
    assert loaded is not None
    assert loaded.remaining() == {0: (4, 10)}
    assert loaded.total_left() == 6
    assert ReplayState.load(tmp_path / "missing.json") is None


class Msg:
    def __init__(self, partition: int, offset: int, value: bytes = b"{}", headers: Any = None) -> None:
        self._p, self._o, self._v, self._h = partition, offset, value, headers

    def topic(self) -> str:
        return "events"

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return self._v

    def key(self) -> bytes:
        return b"k"

    def headers(self) -> Any:
        return self._h

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


def delivery(dest: str, offset: int) -> Delivery:
    return Delivery(f"m{offset}:{dest}:s", dest, "s", "track", [])


class FakeDispatcher:
    def __init__(self, fail: set[int]) -> None:
        self.fail = fail
        self.release = asyncio.Event()

    def admits(self, destination: str) -> bool:
        return False  # every delivery through `deliver`

    async def deliver(self, d: Delivery) -> DeliveryResult:
        offset = int(d.delivery_id.split(":")[0][1:])
        if offset == 3:
            await self.release.wait()  # offset 3 is slow
        if offset in self.fail:
            return DeliveryResult(
                "dead_lettered", Failure("PermanentError", "HTTP 400", 400, None, 1, 1.0, 2.0)
            )
        return DeliveryResult("delivered", attempts=1)


class FakeDLQ:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, letter: Any) -> None:
        self.sent.append(letter)


async def batches(msgs: list[Msg]) -> AsyncIterator[list[Msg]]:
    yield msgs


class FakeRouter:
    """Offset 6 matches nothing; every other message gets one delivery to `a`."""

    def route(self, event: Any, **_filters: Any) -> list[Delivery]:
        offset = event["offset"]
        return [] if offset == 6 else [delivery("a", offset)]

    def routed(self, event: Any, **filters: Any) -> tuple[list[Delivery], tuple[tuple[str, str], ...]]:
        return self.route(event, **filters), ()


def decode(value: bytes) -> dict[str, Any]:
    if value == b"bad":
        raise DecodeError("not JSON")
    return {"offset": int(value)}


def replay_of(dispatcher: Any, dlq: Any, summary: Summary) -> tuple[RangeFeed, EventProcessor]:
    feed = RangeFeed("events", summary=summary)
    processor = EventProcessor(
        router=FakeRouter(),  # type: ignore[arg-type]
        decode=decode,
        senders=senders_for(dispatcher, ["a"]) if dispatcher is not None else None,
        dead_letters=dlq,
        metrics=Metrics(),
        complete=feed.complete,
        halt=feed.fail,
        summary=summary,
    )
    return feed, processor


async def test_replay_watermark_waits_for_the_slowest_and_dead_letters_failures_and_poison() -> None:
    dispatcher, dlq, summary = FakeDispatcher(fail={5}), FakeDLQ(), Summary()
    feed, processor = replay_of(dispatcher, dlq, summary)
    msgs = [Msg(0, o, b"bad" if o == 7 else str(o).encode(), [("trace", b"t")]) for o in range(10)]
    await feed.feed(batches(msgs), processor.process)
    for _ in range(20):
        await asyncio.sleep(0)
    assert feed.watermarks() == {0: 3}  # offset 3 is still in flight
    dispatcher.release.set()
    await feed.drain(5)
    assert feed.watermarks() == {0: 10}
    assert feed.in_flight == 0
    assert summary.read == 10 and summary.undecodable == 1 and summary.unmatched == 1
    assert vars(summary.tally("a")) == {"matched": 8, "delivered": 7, "skipped": 0, "dead_lettered": 1}
    failed, poison = sorted(dlq.sent, key=lambda letter: letter.offset)
    assert (failed.offset, failed.destination, failed.http_status, failed.error_type) == (
        5,
        "a",
        400,
        "PermanentError",
    )
    # A replayed message that cannot be decoded is dead-lettered with its reason, as by the worker.
    assert (poison.offset, poison.destination, poison.error_type, poison.value) == (
        7,
        None,
        "DecodeError",
        b"bad",
    )
    assert poison.error_message == "not JSON" and list(poison.original_headers) == [("trace", b"t")]
    assert "dead-lettered" in summary.render()


async def test_replay_stops_without_completing_an_offset_whose_dead_letter_failed() -> None:
    class BrokenDLQ:
        async def send(self, letter: Any) -> None:
            raise StreamprocError("broker down")

    dispatcher = FakeDispatcher(fail={0, 1, 2})
    dispatcher.release.set()
    feed, processor = replay_of(dispatcher, BrokenDLQ(), Summary())
    with pytest.raises(StreamprocError, match="broker down"):
        await feed.feed(batches([Msg(0, o, str(o).encode()) for o in range(3)]), processor.process)
        await feed.drain(5)
        if feed.fatal:
            raise feed.fatal
    assert feed.watermarks() == {0: 0}


def view(**headers: str) -> DeadLetterView:
    return DeadLetterView(0, 1, 1_700_000_000_000, {f"streamproc.{k}": v for k, v in headers.items()}, [])


def test_dead_letter_filters() -> None:
    v = view(
        destination="seg",
        **{"error.type": "RetryableError", "http.status": "503"},
        last_attempt_at="2026-11-23T10:00:00.000Z",
    )
    assert DeadLetterFilter().matches(v)
    assert DeadLetterFilter(destinations=frozenset({"seg"}), statuses=statuses(["5xx"])).matches(v)
    assert DeadLetterFilter(statuses=statuses(["503,429"])).matches(v)
    assert not DeadLetterFilter(statuses=statuses(["4xx"])).matches(v)
    assert not DeadLetterFilter(error_types=frozenset({"PermanentError"})).matches(v)
    assert DeadLetterFilter(since=datetime(2026, 11, 23, 9, tzinfo=UTC)).matches(v)
    assert not DeadLetterFilter(until=datetime(2026, 11, 23, 10, tzinfo=UTC)).matches(v)
    assert DeadLetterFilter(statuses=statuses(["none"])).matches(view(destination="x"))


def test_redrive_group_depends_on_the_filters() -> None:
    assert redrive_group("live", DeadLetterFilter()) == "live.redrive"
    one = redrive_group("live", DeadLetterFilter(destinations=frozenset({"seg"})))
    assert one.startswith("live.redrive.") and one == redrive_group(
        "live", DeadLetterFilter(destinations=frozenset({"seg"}))
    )
    assert one != redrive_group("live", DeadLetterFilter(destinations=frozenset({"tiktok"})))


def test_progress_plain_lines_with_rate_and_eta() -> None:
    out, clock = io.StringIO(), ManualClock()
    p = Progress(1000, stream=out, tty=False, every=5, clock=clock)
    for step in range(1, 11):
        clock.now = step
        p.update(step * 50)
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # at 5 s, at 10 s, and the final one
    assert lines[-1].startswith("500/1000 events") and "50.0/s" in lines[-1] and "ETA 10s" in lines[-1]


def test_progress_bar_redraws_in_place_on_a_terminal() -> None:
    out, clock = io.StringIO(), ManualClock()
    p = Progress(10, stream=out, tty=True, clock=clock)
    clock.now = 1
    p.update(5)
    p.close()
    text = out.getvalue()
    assert text.startswith("\r") and "[" + "#" * 15 in text and text.endswith("\n")


def test_durations() -> None:
    assert [format_duration(s) for s in (None, 5, 65, 3700)] == ["?", "5s", "1m05s", "1h01m"]


async def test_the_feed_waits_for_room_in_bytes_but_always_lets_one_message_in() -> None:
    feed = RangeFeed("events", max_in_flight=1000, max_bytes=250)
    taken: list[int] = []

    def handle(msg: Any, lane: Any) -> None:
        taken.append(msg.offset())

    msgs = [Msg(0, 0, b"x" * 100), Msg(0, 1, b"x" * 100), Msg(0, 2, b"x" * 100), Msg(0, 3, b"x" * 1000)]
    task = asyncio.create_task(feed.feed(batches(msgs), handle))
    for _ in range(10):
        await asyncio.sleep(0)
    assert taken == [0, 1]  # 2 x (100 + 1 key byte); a third would pass 250
    feed.complete(feed.lane(0), 0)
    for _ in range(10):
        await asyncio.sleep(0)
    assert taken == [0, 1, 2]
    feed.complete(feed.lane(0), 1)
    feed.complete(feed.lane(0), 2)
    await asyncio.wait_for(task, 5)
    assert taken == [0, 1, 2, 3]  # larger than the bound alone: let in once nothing else is held
