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

import argparse
import asyncio
import hashlib
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import structlog
from confluent_kafka import TopicPartition

from streamproc.errors import KafkaError
from streamproc.kafka.dlq import (
    DLQ_VERSION,
    REDRIVEN_HEADER,
    DeadLetterFilter,
    DeadLetterView,
    is_marker,
    marker_of,
)
from streamproc.kafka.producer import AckedProducer
from streamproc.kafka.ranges import RangeReader, range_consumer_config, start_offsets
from streamproc.kafka.reader import Partition
from streamproc.logging import flush_suppressed
from streamproc.pipeline import EventProcessor
from streamproc.progress import Progress
from streamproc.runs.compose import build_stack, close_run, load, start_run
from streamproc.runs.feed import run_ranges
from streamproc.summary import Summary

__all__ = [
    "RedriveMarks",
    "redrive_checkpoint",
    "redrive_group",
    "redrive_handler",
]

log = structlog.get_logger("streamproc.redrive")


def redrive_group(group_id: str, flt: DeadLetterFilter) -> str:
    """`<group>.redrive`, plus a short hash of the filters when there are any: each filter set keeps
    its own position, so a filtered redrive never hides other dead letters from a later one."""
    if flt.empty:
        return f"{group_id}.redrive"
    digest = hashlib.sha1(flt.describe().encode()).hexdigest()[:10]
    return f"{group_id}.redrive.{digest}"


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


async def redrive(
    args: argparse.Namespace, flt: DeadLetterFilter, out: Any = None, err: Any = None
) -> tuple[int, Summary]:
    """The whole redrive, callable from tests; returns the exit code and the summary."""
    out = out if out is not None else sys.stdout.buffer
    err = err if err is not None else sys.stderr
    config, kafka = load(args.config, "dlq redrive")
    topic = kafka.dead_letter_topic
    group = args.group or redrive_group(kafka.group_id, flt)
    stack = build_stack(config, kafka, dry_run=args.dry_run)
    unknown = sorted(set(flt.destinations) - set(stack.router.destinations))
    if unknown:
        print(f"note: destination(s) {', '.join(unknown)} are not in the configuration", file=err)
    summary = Summary()
    # Markers go through the dead-letter producer (none in a dry run, which writes nothing).
    marks = RedriveMarks(topic, stack.dlq)
    feed, processor = start_run(stack, topic, summary, args, out, undecodable="count", marks=marks)
    handle = redrive_handler(processor, flt, summary, marks)
    # The group only holds the position: partitions are assigned, never balanced, and a dry run
    # reads the position without committing.
    reader = RangeReader(range_consumer_config(kafka, group), topic)
    progress: Progress | None = None
    try:
        consumer = await reader.open()
        ranges = await reader.call(start_offsets, consumer, topic)
        total = sum(e - s for s, e in ranges.values())
        print(f"redrive of {topic} as group {group}: {total} dead letters to read", file=err)
        await scan_markers(kafka, topic, ranges, marks)

        checkpoint = redrive_checkpoint(reader, marks)

        async def commit(watermarks: dict[int, int], final: bool) -> None:
            if not args.dry_run:
                await checkpoint(watermarks, final)

        progress = Progress(total, label="dead letters", stream=err)
        await run_ranges(
            reader,
            ranges,
            feed,
            handle,
            commit,
            shutdown_timeout=config.limits.shutdown_timeout,
            on_progress=progress.update,
        )
    finally:
        await close_run(progress, reader, stack)
    out.flush()
    flush_suppressed(force=True)
    print(summary.render(dry_run=args.dry_run), file=err)
    if args.dry_run:
        print("dry run: nothing was sent or committed", file=err)
    if feed.stop.is_set() and feed.fatal is None:
        print("interrupted: rerun to continue from the committed position", file=err)
        return 130, summary
    return 0, summary


async def scan_markers(
    kafka: Any, topic: str, ranges: dict[int, tuple[int, int]], marks: RedriveMarks
) -> None:
    """Read the range once for redrive markers, so records redriven under other filters are skipped."""
    group = f"{kafka.group_id}.redrive-scan.{uuid.uuid4().hex[:8]}"
    reader = RangeReader(range_consumer_config(kafka, group), topic)
    try:
        await reader.open()
        async for batch in reader.read(ranges, asyncio.Event()):
            for msg in batch:
                marks.seen(msg)
    finally:
        await reader.close()
