"""The retry consumer against a stand-in consumer (due times, pauses, commits, the in-flight bound),
the per-key bookkeeping of parked deliveries, and `retry inspect`'s counts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition

from streamproc.inspection import RetryInspection
from streamproc.kafka.dlq import DeadLetter, RetryView, iso_utc
from streamproc.kafka.reader import Partition
from streamproc.kafka.retry import RetryConsumer
from streamproc.metrics import Metrics
from streamproc.parking import ParkedKeys

T0 = 1_800_000_000.0


@dataclass
class Msg:
    _topic: str
    _partition: int
    _offset: int
    _headers: list[tuple[str, bytes | None]]
    _value: bytes = b"{}"

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def headers(self) -> list[tuple[str, bytes | None]]:
        return self._headers

    def value(self) -> bytes:
        return self._value

    def key(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return 1, int(T0 * 1000)

    def error(self) -> None:
        return None


def record(topic: str, partition: int, offset: int, due: float, **extra: Any) -> Msg:
    letter = DeadLetter(
        topic="events",
        partition=partition,
        offset=100 + offset,
        timestamp_ms=int(T0 * 1000),
        key=None,
        value=b"{}",
        original_headers=[],
        error_type=extra.get("error_type", "RetryableError"),
        error_message="503",
        destination=extra.get("destination", "a"),
        subscription="s",
        http_status=extra.get("status", 503),
        attempts=2,
        first_attempt_at=extra.get("first", T0 - 30),
        next_attempt_at=due,
        deadline_at=extra.get("deadline", T0 + 300),
        parks=1,
        parked_by="run-1",
    )
    headers = [(k, v if isinstance(v, bytes) or v is None else str(v).encode()) for k, v in letter.headers()]
    return Msg(topic, partition, offset, headers)


@dataclass
class StandInConsumer:
    """Just enough of confluent_kafka.Consumer: assigned partitions with positions, pause, seek."""

    logs: dict[tuple[str, int], list[Msg]]
    committed_at: dict[tuple[str, int], int] = field(default_factory=dict)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    paused: set[tuple[str, int]] = field(default_factory=set)
    commits: list[dict[tuple[str, int], int]] = field(default_factory=list)
    metadata: dict[tuple[str, int], str] = field(default_factory=dict)

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [
            TopicPartition(
                t.topic,
                t.partition,
                self.committed_at.get((t.topic, t.partition), -1001),
                metadata=self.metadata.get((t.topic, t.partition), ""),
            )
            for t in tps
        ]

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float = 0, cached: bool = False
    ) -> tuple[int, int]:
        return 0, len(self.logs.get((tp.topic, tp.partition), []))

    def incremental_assign(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self.positions[(tp.topic, tp.partition)] = tp.offset

    def incremental_unassign(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self.positions.pop((tp.topic, tp.partition), None)

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused.update((tp.topic, tp.partition) for tp in tps)

    def resume(self, tps: list[TopicPartition]) -> None:
        self.paused.difference_update((tp.topic, tp.partition) for tp in tps)

    def seek(self, tp: TopicPartition) -> None:
        self.positions[(tp.topic, tp.partition)] = tp.offset

    def consume(self, n: int, timeout: float) -> list[Msg]:
        out: list[Msg] = []
        for key, pos in list(self.positions.items()):
            if key in self.paused:
                continue
            log = self.logs.get(key, [])
            take = log[pos : pos + n - len(out)]
            self.positions[key] = pos + len(take)
            out.extend(take)
        if not out:
            import time

            time.sleep(min(timeout, 0.01))
        return out

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})
        for tp in offsets:
            self.committed_at[(tp.topic, tp.partition)] = tp.offset
            self.metadata[(tp.topic, tp.partition)] = tp.metadata
        return offsets

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


async def until(predicate: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met")


async def test_a_record_waits_for_its_due_time_without_holding_other_partitions_or_commits() -> None:
    logs = {
        ("r.a", 0): [record("r.a", 0, 0, due=T0 + 60), record("r.a", 0, 1, due=T0)],
        ("r.a", 1): [record("r.a", 1, 0, due=T0 - 1), record("r.a", 1, 1, due=T0 - 1)],
    }
    stand_in = StandInConsumer(logs)
    clock = Clock()
    handled: list[tuple[int, int]] = []
    held: list[tuple[Partition, int]] = []

    def handler(msg: Any, part: Partition, view: Any) -> None:
        handled.append((msg.partition(), msg.offset()))
        held.append((part, msg.offset()))

    retry = RetryConsumer(
        {},
        {"a": "r.a"},
        handler,
        live_partitions=lambda: {0, 1},
        metrics=Metrics(),
        commit_interval=0.01,
        consumer_factory=lambda conf: stand_in,
        clock=clock,
    )
    task = asyncio.create_task(retry.run())
    await until(lambda: len(handled) == 2)
    await asyncio.sleep(0.1)
    assert handled == [(1, 0), (1, 1)]  # partition 0's head is not due: nothing of it is read
    assert ("r.a", 0) in stand_in.paused
    for part, offset in held:
        retry.complete(part, offset)
    await until(lambda: stand_in.committed_at.get(("r.a", 1)) == 2)
    assert stand_in.committed_at.get(("r.a", 0), 0) == 0
    clock.now = T0 + 61
    await until(lambda: len(handled) == 4)
    assert handled[2:] == [(0, 0), (0, 1)]  # read again from its head, in order
    part0 = held[2][0]
    retry.complete(part0, 1)
    await asyncio.sleep(0.1)
    # Offset 0 is not finished: nothing on partition 0 is committed past it.
    assert all(c.get(("r.a", 0), 0) == 0 for c in stand_in.commits)
    retry.complete(part0, 0)
    await until(lambda: stand_in.committed_at.get(("r.a", 0)) == 2)
    retry.request_stop()
    await task
    await retry.close()


async def test_the_retry_consumer_pauses_at_its_in_flight_bound() -> None:
    logs = {("r.a", 0): [record("r.a", 0, i, due=T0 - 1) for i in range(50)]}
    stand_in = StandInConsumer(logs)
    handled: list[int] = []
    retry = RetryConsumer(
        {},
        {"a": "r.a"},
        lambda msg, part, view: handled.append(msg.offset()),
        live_partitions=lambda: {0},
        metrics=Metrics(),
        poll_batch_size=2,
        max_in_flight_events=10,
        resume_in_flight_events=5,
        consumer_factory=lambda conf: stand_in,
        clock=Clock(),
    )
    task = asyncio.create_task(retry.run())
    await until(lambda: ("r.a", 0) in stand_in.paused)
    await asyncio.sleep(0.1)
    assert 10 <= len(handled) <= 10 + 2  # the bound, one batch late at most
    retry.request_stop()
    await task
    await retry.close()


async def test_a_retry_partition_s_next_owner_passes_over_what_its_last_owner_finished() -> None:
    stand_in = StandInConsumer({("r.a", 0): [record("r.a", 0, i, due=T0 - 1) for i in range(5)]})

    def owner(handled: list[tuple[Partition, int]]) -> RetryConsumer:
        return RetryConsumer(
            {},
            {"a": "r.a"},
            lambda msg, part, view: handled.append((part, msg.offset())),
            live_partitions=lambda: {0},
            metrics=Metrics(),
            commit_interval=60.0,
            consumer_factory=lambda conf: stand_in,
            clock=Clock(),
        )

    first_handled: list[tuple[Partition, int]] = []
    first = owner(first_handled)
    task = asyncio.create_task(first.run())
    await until(lambda: len(first_handled) == 5)
    for part, offset in first_handled:
        if offset in (1, 3, 4):
            first.complete(part, offset)
    first.request_stop()
    await task
    await first.release_live([0], 0.0)  # its input partition moves: 0 and 2 were not finished
    assert stand_in.committed_at[("r.a", 0)] == 0
    await first.close()

    second_handled: list[tuple[Partition, int]] = []
    second = owner(second_handled)
    task = asyncio.create_task(second.run())
    await until(lambda: len(second_handled) == 2)
    await asyncio.sleep(0.1)
    assert [offset for _, offset in second_handled] == [0, 2]
    for part, offset in second_handled:
        second.complete(part, offset)
    second.request_stop()
    await task
    await second.close()
    assert stand_in.committed_at[("r.a", 0)] == 5


def test_parked_keys_keep_a_key_behind_its_parked_deliveries_and_follow_reparks() -> None:
    keys = ParkedKeys("run-1")
    ref = ("seg", 3, "user-1")
    assert not keys.holds(ref)
    keys.parked(ref, True, original_offset=100, retry_offset=10, again=False)
    keys.parked(ref, True, original_offset=101, retry_offset=11, again=False)
    assert keys.holds(ref) and not keys.holds(("seg", 3, "user-2"))
    # The first is parked again, to the end: the second must follow it, and then it goes first.
    keys.parked(ref, False, original_offset=100, retry_offset=20, again=True)
    assert keys.must_follow(ref, retry_offset=11, original_offset=101)
    keys.parked(ref, False, original_offset=101, retry_offset=21, again=True)
    assert not keys.must_follow(ref, retry_offset=20, original_offset=100)
    assert not keys.must_follow(ref, retry_offset=21, original_offset=101)
    keys.finished(ref, "run-1")
    assert keys.holds(ref)
    keys.finished(ref, "run-1")
    assert not keys.holds(ref) and len(keys) == 0
    # Records of an earlier owner are covered by the barrier until the retry consumer passes them.
    keys.block("seg", 4)
    assert keys.holds(("seg", 4, "anyone")) and keys.pending() == [("seg", 4)]
    keys.barrier("seg", 4, end=7, position=2)
    keys.finished(("seg", 4, "anyone"), "run-0")  # not ours: the counts are unchanged
    keys.passed("seg", 4, watermark=6)
    assert keys.holds(("seg", 4, "anyone"))
    keys.passed("seg", 4, watermark=7)
    assert not keys.holds(("seg", 4, "anyone"))
    keys.block("seg", 5)
    keys.drop(5)
    assert not keys.holds(("seg", 5, "x"))


def test_retry_records_read_back_and_inspected() -> None:
    msg = record("r.a", 0, 0, due=T0 + 5)
    view = RetryView.of(msg)
    assert view.destination == "a" and view.subscription == "s" and view.parks == 1
    assert abs(view.next_attempt_at - (T0 + 5)) < 0.01 and view.original_offset == 100
    assert view.parked_by == "run-1" and view.letter.attempts == 2
    assert dict(msg.headers())["streamproc.retry.deadline"] == iso_utc(T0 + 300).encode()
    inspection = RetryInspection(now=T0)
    inspection.add(msg)
    inspection.add(record("r.a", 0, 1, due=T0 - 1, first=T0 - 120))
    inspection.add(record("r.b", 0, 0, due=T0 - 1, destination="b", deadline=T0 - 1, status=500))
    doc = inspection.to_json()
    assert doc["total"] == 3
    assert doc["by_destination"]["a"]["parked"] == 2 and doc["by_destination"]["a"]["due"] == 1
    assert doc["by_destination"]["a"]["oldest_age_seconds"] == 120.0
    assert doc["by_destination"]["b"]["overdue"] == 1
    assert doc["by_status"] == {"503": 2, "500": 1}
    assert inspection.render().startswith("3 retry records waiting")


async def test_records_of_a_destination_whose_circuit_is_open_stay_in_the_topic_until_it_may_probe() -> None:
    logs = {("r.a", 0): [record("r.a", 0, 0, due=T0 - 5)], ("r.b", 0): [record("r.b", 0, 0, due=T0 - 5)]}
    stand_in = StandInConsumer(logs)
    clock = Clock()
    handled: list[str] = []
    retry = RetryConsumer(
        {},
        {"a": "r.a", "b": "r.b"},
        lambda msg, part, view: handled.append(msg.topic()),
        live_partitions=lambda: {0},
        metrics=Metrics(),
        not_before=lambda dest: T0 + 10 if dest == "a" else 0.0,
        consumer_factory=lambda conf: stand_in,
        clock=clock,
    )
    task = asyncio.create_task(retry.run())
    await until(lambda: handled == ["r.b"])
    await asyncio.sleep(0.1)
    assert handled == ["r.b"] and ("r.a", 0) in stand_in.paused
    clock.now = T0 + 11
    await until(lambda: handled == ["r.b", "r.a"])
    retry.request_stop()
    await task
    await retry.close()
