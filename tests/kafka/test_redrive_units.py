"""Redrive's markers and checkpoints without a broker: markers only below the watermark, written
through the dead-letter producer; deliveries keep flowing while a marker write waits for the broker;
every consumer call on the reader's thread; the position never passes an unacknowledged marker."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import orjson
import pytest
from confluent_kafka import TopicPartition
from kafka_helpers import async_wait_until
from scripted_consumer import ScriptedMessage

from streamproc.errors import KafkaError
from streamproc.handoff import DeliveryResult
from streamproc.kafka.dlq import DeadLetterFilter, marker_of
from streamproc.kafka.producer import AckedProducer
from streamproc.kafka.ranges import RangeReader
from streamproc.metrics import Metrics
from streamproc.pipeline import EventProcessor
from streamproc.router import Delivery
from streamproc.runs.feed import RangeFeed, run_ranges
from streamproc.runs.redrive import RedriveMarks, redrive_checkpoint, redrive_handler
from streamproc.senders import marking, senders_for
from streamproc.summary import Summary

N = 40


class SlowAcks:
    """A librdkafka producer stand-in: dead letters are acknowledged at once, markers (records
    without value) only after `release()` while `hold` is set."""

    def __init__(self, *, hold: bool = False, error: str | None = None) -> None:
        self.hold = hold
        self.error = error
        self.records: list[dict[str, Any]] = []
        self.held: list[Any] = []
        self.acked: set[str] = set()
        self.on_first_hold: Any = None

    def produce(self, topic: str, *, on_delivery: Any, **record: Any) -> None:
        self.records.append({"topic": topic, **record})
        if record["value"] is None and self.hold:
            if not self.held and self.on_first_hold is not None:
                self.on_first_hold()
            self.held.append((record, on_delivery))
            return
        self._ack(record, on_delivery)

    def _ack(self, record: dict[str, Any], on_delivery: Any) -> None:
        if record["value"] is None and self.error is None:
            self.acked.add(dict(record["headers"])["streamproc.redriven"].decode())
        on_delivery(self.error, None)

    def release(self) -> None:
        self.hold = False
        held, self.held = self.held, []
        for record, on_delivery in held:
            self._ack(record, on_delivery)

    def poll(self, timeout: float) -> int:
        time.sleep(timeout)
        return 0

    def flush(self, timeout: float) -> int:
        return 0


class DeadLetterRecord(ScriptedMessage):
    def __init__(self, offset: int, headers: list[tuple[str, bytes]] | None = None) -> None:
        super().__init__(offset)
        self._h = headers or [
            ("trace", b"t"),
            ("streamproc.destination", b"a"),
            ("streamproc.subscription", b"s"),
            ("streamproc.error.type", b"RetryableError"),
            ("streamproc.original.topic", b"events"),
            ("streamproc.original.partition", b"0"),
            ("streamproc.original.offset", str(100 + offset).encode()),
        ]

    def topic(self) -> str:
        return "dlq"

    def headers(self) -> list[tuple[str, bytes]]:
        return self._h


class DeadLetterTopic:
    """A consumer stand-in for RangeReader over one partition of dead letters; records the thread
    of every call and each commit with the markers acknowledged when it was made."""

    def __init__(self, producer: SlowAcks) -> None:
        self.msgs = [DeadLetterRecord(o) for o in range(N)]
        self.producer = producer
        self.pos = 0
        self.threads: set[str] = set()
        self.commits: list[tuple[int, bool, frozenset[str]]] = []

    def _call(self) -> None:
        self.threads.add(threading.current_thread().name)

    def assign(self, tps: list[Any]) -> None:
        self._call()
        self.pos = tps[0].offset

    def consume(self, num_messages: int, timeout: float) -> list[DeadLetterRecord]:
        self._call()
        batch = self.msgs[self.pos : self.pos + 4]
        if not batch:
            time.sleep(timeout / 4)
        self.pos += len(batch)
        return batch

    def position(self, tps: list[Any]) -> list[TopicPartition]:
        self._call()
        return [TopicPartition(tp.topic, tp.partition, self.pos) for tp in tps]

    def pause(self, tps: list[Any]) -> None:
        self._call()

    def commit(self, *, offsets: list[Any], asynchronous: bool) -> None:
        self._call()
        (tp,) = offsets
        self.commits.append((tp.offset, asynchronous, frozenset(self.producer.acked)))

    def close(self) -> None:
        self._call()


class OneSubscription:
    def route(self, event: Any, **_filters: Any) -> list[Delivery]:
        return [Delivery(f"{event['messageId']}:a:s", "a", "s", "track", [])]

    def routed(self, event: Any, **filters: Any) -> tuple[list[Delivery], tuple[tuple[str, str], ...]]:
        return self.route(event, **filters), ()


class Partner:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def admits(self, destination: str) -> bool:
        return False  # every delivery through `deliver`

    async def deliver(self, d: Delivery) -> DeliveryResult:
        await asyncio.sleep(0)
        self.sent.append(d.delivery_id)
        return DeliveryResult("delivered", attempts=1)


async def test_deliveries_keep_flowing_while_a_marker_write_waits_for_the_broker() -> None:
    producer = SlowAcks(hold=True)
    topic = DeadLetterTopic(producer)
    partner, summary = Partner(), Summary()
    delivered_at_first_hold: list[int] = []
    producer.on_first_hold = lambda: delivered_at_first_hold.append(len(partner.sent))
    dlq = AckedProducer("dlq", {}, attempts=1, backoff=0.0, producer=producer)
    marks = RedriveMarks("dlq", dlq)
    feed = RangeFeed("dlq", summary=summary, max_in_flight=8)
    processor = EventProcessor(
        router=OneSubscription(),  # type: ignore[arg-type]
        decode=orjson.loads,
        senders=marking(senders_for(partner, ["a"]), marks),  # type: ignore[arg-type]
        dead_letters=dlq,
        metrics=Metrics(),
        complete=feed.complete,
        halt=feed.fail,
        summary=summary,
        undecodable="count",
    )
    reader = RangeReader({}, "dlq")
    reader.consumer = topic
    run = asyncio.create_task(
        run_ranges(
            reader,
            {0: (0, N)},
            feed,
            redrive_handler(processor, DeadLetterFilter(), summary, marks),
            redrive_checkpoint(reader, marks),
            every=0.0,
        )
    )
    try:
        await async_wait_until(lambda: producer.held, timeout=10, message="no marker was written")
        # While the broker sits on those markers, the rest of the dead letters are delivered.
        await async_wait_until(lambda: len(partner.sent) == N, timeout=10, message="deliveries stalled")
        assert delivered_at_first_hold[0] < N
        assert producer.held and feed.watermarks() == {0: N}
        producer.release()
        await asyncio.wait_for(run, 10)
    finally:
        if not run.done():
            run.cancel()
        await reader.close()
        dlq.close()

    assert producer.acked == {f"0:{o}" for o in range(N)}
    assert topic.commits[-1][:2] == (N, False)  # the final commit waits for the broker
    for offset, _asynchronous, acked in topic.commits:
        # The position never passes a record whose marker the broker has not acknowledged.
        assert {f"0:{o}" for o in range(offset)} <= acked
    assert topic.threads and all(name.startswith("kafka-range") for name in topic.threads)
    assert summary.tally("a").delivered == N


async def test_markers_are_written_only_below_the_watermark_and_kept_until_acknowledged() -> None:
    producer = SlowAcks()
    dlq = AckedProducer("dlq", {}, attempts=1, backoff=0.0, producer=producer)
    try:
        marks = RedriveMarks("dlq", dlq)
        for o in (3, 5, 9):
            marks.note(0, o)
        await marks.write({0: 6})
        assert [r["headers"][-1] for r in producer.records] == [
            ("streamproc.redriven", b"0:3"),
            ("streamproc.redriven", b"0:5"),
        ]
        assert all(r["value"] is None and r["partition"] == 0 for r in producer.records)
        await marks.write({0: 6})
        assert len(producer.records) == 2  # nothing written twice
        marker = DeadLetterRecord(20, headers=producer.records[0]["headers"])
        marks.seen(marker)
        assert marker_of(marker) == (0, 3) and (0, 3) in marks.done

        producer.error = "Broker: Topic authorization failed"
        marks.note(1, 0)
        with pytest.raises(KafkaError, match="not committed"):
            await marks.write({1: 1})
        assert marks.pending[1] == [0]  # tried again at the next checkpoint
        producer.error = None
        await marks.write({1: 1})
        assert marks.pending[1] == [] and "1:0" in producer.acked
    finally:
        dlq.close()
