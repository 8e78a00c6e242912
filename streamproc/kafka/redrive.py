"""Reads the dead-letter topic: counts and samples for `dlq inspect`, re-delivery for `dlq redrive`.

A dead letter names one failed delivery (destination + subscription headers) of one original
message (its bytes, unchanged). Redrive decodes the original value again, routes it with only that
subscription, and sends what the router builds now; nothing that succeeded the first time is sent
again. What fails again goes back to the dead-letter topic with the attempts added up and the
original topic/partition/offset/timestamp kept. Redrive commits its own consumer group (offsets of
the dead-letter topic, up to the contiguous watermark) as it goes, so a second run with the same
filters finds nothing new to send; and it writes a marker record for every dead letter it handled
(no value, header `streamproc.redriven: partition:offset`), so a redrive with other filters, which
keeps another position, skips what was redriven already.

The re-delivery itself is the worker's `EventProcessor`; what is redrive's own is the choice of
records (`redrive_handler`) and the checkpoint (`redrive_checkpoint`): markers written through the
dead-letter producer and acknowledged, then the position committed on the reader's thread.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import structlog
from confluent_kafka import OFFSET_INVALID, TopicPartition

from streamproc.errors import KafkaError, StreamprocError
from streamproc.handoff import Job, Lane, Redelivery, Sender
from streamproc.kafka.consumer import Partition
from streamproc.kafka.dlq import (
    DLQ_VERSION,
    REDRIVEN_HEADER,
    DeadLetterFilter,
    DeadLetterView,
    is_marker,
    marker_of,
)
from streamproc.kafka.producer import AckedProducer
from streamproc.kafka.replay import RangeReader
from streamproc.pipeline import EventProcessor
from streamproc.router import Delivery
from streamproc.summary import Summary

__all__ = [
    "RedriveMarks",
    "redrive_checkpoint",
    "redrive_group",
    "redrive_handler",
    "start_offsets",
]

log = structlog.get_logger("streamproc.redrive")


def redrive_group(group_id: str, flt: DeadLetterFilter) -> str:
    """`<group>.redrive`, plus a short hash of the filters when there are any: each filter set keeps
    its own position, so a filtered redrive never hides other dead letters from a later one."""
    if flt.empty:
        return f"{group_id}.redrive"
    digest = hashlib.sha1(flt.describe().encode()).hexdigest()[:10]
    return f"{group_id}.redrive.{digest}"


def start_offsets(consumer: Any, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """For each partition: (the group's committed offset, else the beginning; the end right now)."""
    md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if md is None or md.error is not None:
        raise StreamprocError(f"dead-letter topic {topic!r} not found ({md.error if md else 'no metadata'})")
    parts = sorted(md.partitions)
    committed = {
        tp.partition: tp.offset
        for tp in consumer.committed([TopicPartition(topic, p) for p in parts], timeout=timeout)
    }
    out: dict[int, tuple[int, int]] = {}
    for p in parts:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
        c = committed.get(p, OFFSET_INVALID)
        start = c if c is not None and c >= 0 else low
        start = min(max(start, low), high)
        if high > start:
            out[p] = (start, high)
    return out


class RedriveMarks:
    """Which dead letters were redriven already (by a redrive with any filters), and the markers
    this redrive still has to write.

    Markers are written at each checkpoint for the records below the watermark, through the
    dead-letter producer, and acknowledged before the group's position is committed past them:
    whatever crashes in between, a record is either offered again or known to be done.
    """

    def __init__(self, topic: str, dead_letters: AckedProducer | None) -> None:
        self.topic = topic
        self.dead_letters = dead_letters
        self.done: set[tuple[int, int]] = set()
        self.pending: dict[int, list[int]] = {}

    def seen(self, msg: Any) -> None:
        mark = marker_of(msg)
        if mark is not None:
            self.done.add(mark)

    def note(self, partition: int, offset: int) -> None:
        self.pending.setdefault(partition, []).append(offset)

    async def write(self, watermarks: Mapping[int, int]) -> None:
        """Write markers for the noted records now complete, and wait for the broker to have them.

        Only acknowledged markers leave `pending`, so a failed write is tried again at the next
        checkpoint, and the position is not committed until it succeeds."""
        ready = {
            p: [o for o in offsets if o < wm]
            for p, offsets in self.pending.items()
            if (wm := watermarks.get(p)) is not None
        }
        ready = {p: offsets for p, offsets in ready.items() if offsets}
        if not ready:
            return
        assert self.dead_letters is not None
        results = await asyncio.gather(
            *(self._write_one(p, o) for p, offsets in ready.items() for o in offsets),
            return_exceptions=True,
        )
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            raise KafkaError(
                f"could not write redrive markers to {self.topic!r} ({failed}); the redrive position "
                "was not committed, so a rerun offers these dead letters again"
            ) from failed
        for p, offsets in ready.items():
            written = set(offsets)
            self.pending[p] = [o for o in self.pending[p] if o not in written]

    async def _write_one(self, partition: int, offset: int) -> None:
        assert self.dead_letters is not None
        await self.dead_letters.write(
            value=None,
            key=None,
            headers=[
                ("streamproc.dlq.version", DLQ_VERSION.encode()),
                (REDRIVEN_HEADER, f"{partition}:{offset}".encode()),
            ],
            partition=partition,
        )


def redrive_checkpoint(
    reader: RangeReader, marks: RedriveMarks
) -> Callable[[dict[int, int], bool], Awaitable[None]]:
    """Redrive's checkpoint: markers first, acknowledged, then the group's position, committed on
    the reader's consumer thread (asynchronously, except the final one), so the event loop never
    waits on the broker and the position never passes a record whose marker is not written."""

    async def checkpoint(watermarks: dict[int, int], final: bool) -> None:
        if not watermarks:
            return
        await marks.write(watermarks)
        offsets = [TopicPartition(reader.topic, p, o) for p, o in watermarks.items()]
        await reader.call(partial(reader.consumer.commit, offsets=offsets, asynchronous=not final))

    return checkpoint


class MarkingSender:
    """Redrive's sender: the dead letter a delivery is made from owes a marker (routing found its
    delivery again); the delivery itself is sent as `inner` sends it."""

    __slots__ = ("_inner", "_marks")

    def __init__(self, inner: Sender, marks: RedriveMarks) -> None:
        self._inner = inner
        self._marks = marks

    def send(self, delivery: Delivery, job: Job) -> None:
        self._marks.note(job.lane.partition, job.offset)
        self._inner.send(delivery, job)

    def unrouted(self, redelivery: Redelivery, lane: Lane, event: Mapping[str, Any]) -> None:
        self._inner.unrouted(redelivery, lane, event)


def marking(senders: Mapping[str, Sender], marks: RedriveMarks) -> dict[str, Sender]:
    """`senders`, each noting the markers its deliveries owe."""
    return {dest: MarkingSender(sender, marks) for dest, sender in senders.items()}


def redrive_handler(
    processor: EventProcessor,
    flt: DeadLetterFilter,
    summary: Summary,
    marks: RedriveMarks | None = None,
) -> Callable[[Any, Partition], None]:
    """Takes one dead-letter record: the one delivery it names goes to `processor` again, re-built
    from the original value; markers, filtered and already redriven records are left out."""

    def handle(msg: Any, lane: Partition) -> None:
        if is_marker(msg):
            summary.markers += 1
            processor.leave_out(msg, lane)
            return
        view = DeadLetterView.of(msg)
        if marks is not None and (view.partition, view.offset) in marks.done:
            summary.already_redriven += 1
            processor.leave_out(msg, lane)
            return
        if not flt.matches(view):
            summary.filtered += 1
            processor.leave_out(msg, lane)
            return
        if view.get("value_truncated") is not None:
            # Its value was cut to fit the dead-letter topic: there is nothing whole to send.
            summary.truncated += 1
            log.warning(
                "redrive_value_truncated",
                partition=view.partition,
                offset=view.offset,
                original=f"{view.get('original.topic')}[{view.get('original.partition')}]"
                f"@{view.get('original.offset')}",
                subscription=f"{view.destination}/{view.subscription}",
                value_bytes=view.get("value_truncated"),
            )
            processor.leave_out(msg, lane)
            return
        again = view.redelivery()
        if again is None:
            summary.not_redrivable += 1
            processor.leave_out(msg, lane)
            return
        processor.process(msg, lane, again)

    return handle
