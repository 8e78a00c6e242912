"""The runs of `dlq inspect` and `retry inspect`: read the dead-letter topic or the retry topics
with assigned partitions (nothing is committed) into a report (streamproc.inspection) and print it."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import Any

from streamproc import masking
from streamproc.errors import StreamprocError
from streamproc.failed_request import FailedRequests
from streamproc.inspection import Inspection, RetryInspection, dumps
from streamproc.kafka.dlq import DeadLetterFilter
from streamproc.kafka.ranges import RangeReader, range_consumer_config, start_offsets, whole_topic
from streamproc.kafka.retry import retry_group
from streamproc.output import json_line
from streamproc.runs.compose import install_stop, load
from streamproc.runs.redrive import RedriveMarks, scan_markers

__all__ = ["NO_PARKING", "inspect_dead_letters", "inspect_retry_topics"]

NO_PARKING = (
    "no destination parks deliveries (none sets retry.park_after_attempts or retry.park_after_seconds),"
    " so nothing waits in retry topics; failed deliveries go to the dead-letter topic: streamproc dlq"
    " inspect"
)


async def inspect_dead_letters(
    args: argparse.Namespace, flt: DeadLetterFilter, out: Any = None
) -> Inspection:
    """`dlq inspect`: count and sample the dead-letter topic (masked), and print the report."""
    out = out if out is not None else sys.stdout
    config, kafka = load(args.config, "dlq inspect")
    topic = kafka.dead_letter_topic
    group = f"{kafka.group_id}.inspect.{uuid.uuid4().hex[:8]}"
    reader = RangeReader(range_consumer_config(kafka, group), topic)
    masker = masking.for_config(config, args)
    detail = FailedRequests(config, masker).show if args.show_request else None
    result = Inspection(samples_per_group=args.samples, masker=masker, detail=detail)
    stop = asyncio.Event()
    install_stop(stop)
    try:
        consumer = await reader.open()

        ranges = await reader.call(whole_topic, consumer, topic, "dead-letter topic")
        marks = RedriveMarks(topic, None)
        if not args.all:
            await scan_markers(kafka, topic, ranges, marks)
        async for batch in reader.read(ranges, stop):
            for msg in batch:
                result.add(msg, flt, marks.done)
    finally:
        await reader.close()
    if args.json:
        out.write(json_line(result.to_json(), pretty=True).decode())
    else:
        out.write(result.render() + "\n")
    return result


async def inspect_retry_topics(args: argparse.Namespace, out: Any = None) -> RetryInspection:
    """`retry inspect`: count and sample what waits in the retry topics, and print the report."""
    out = out if out is not None else sys.stdout
    config, kafka = load(args.config, "retry inspect")
    parking = [
        d.id
        for d in config.destinations
        if d.limits.retry.park_after_attempts is not None or d.limits.retry.park_after_seconds is not None
    ]
    if not parking and not args.destination:
        # Nothing can wait in a retry topic: say so rather than print empty counts.
        empty = RetryInspection()
        out.write(
            (dumps({**empty.to_json(), "parking_destinations": []}) if args.json else NO_PARKING) + "\n"
        )
        return empty
    wanted = set(args.destination or parking)
    unknown = sorted(wanted - set(parking))
    if unknown:
        raise StreamprocError(
            f"destination(s) {', '.join(unknown)} do not park (no retry.park_after_attempts or "
            "park_after_seconds in the configuration)"
        )
    masker = masking.for_config(config, args)
    detail = FailedRequests(config, masker).show if args.show_request else None
    samples = args.samples if args.samples is not None else (3 if args.show_request else 0)
    result = RetryInspection(samples_per_destination=samples, masker=masker, detail=detail)
    stop = asyncio.Event()
    install_stop(stop)
    for dest in sorted(wanted):
        topic = kafka.retry_topic(dest)
        reader = RangeReader(range_consumer_config(kafka, retry_group(kafka.group_id)), topic)
        try:
            consumer = await reader.open()
            try:
                ranges = await reader.call(start_offsets, consumer, topic)
            except StreamprocError:
                continue  # no retry topic yet: nothing was ever parked there
            if args.all:
                ranges = await reader.call(whole_topic, consumer, topic)
            async for batch in reader.read(ranges, stop):
                for msg in batch:
                    result.add(msg)
        finally:
            await reader.close()
    out.write((dumps(result.to_json()) if args.json else result.render()) + "\n")
    return result
