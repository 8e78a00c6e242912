"""`streamproc retry inspect`: what waits in the retry topics, by destination, error, status and due state."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from confluent_kafka import TopicPartition

from streamproc import masking
from streamproc.errors import StreamprocError
from streamproc.failed_request import FailedRequests
from streamproc.inspection import RetryInspection, dumps
from streamproc.kafka.ranges import RangeReader, range_consumer_config, start_offsets
from streamproc.kafka.retry import retry_group
from streamproc.runs.compose import install_stop, load

NO_PARKING = (
    "no destination parks deliveries (none sets retry.park_after_attempts or retry.park_after_seconds),"
    " so nothing waits in retry topics; failed deliveries go to the dead-letter topic: streamproc dlq"
    " inspect"
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("retry", help="inspect the retry topics of parked deliveries")
    sub = p.add_subparsers(dest="retry_command", metavar="ACTION", required=True)
    inspect = sub.add_parser(
        "inspect",
        help="parked deliveries by destination, error type, status, due and overdue, and the oldest",
        description=(
            "Reads each parking destination's retry topic from the position of the workers' retry"
            " group (<group_id>.retry) to its end: the deliveries still waiting. Nothing is committed."
        ),
    )
    inspect.add_argument("--config", "-c", required=True, metavar="FILE")
    inspect.add_argument("--destination", "-d", action="append", metavar="ID", help="repeatable")
    inspect.add_argument("--all", action="store_true", help="read from the beginning (finished records too)")
    inspect.add_argument("--json", action="store_true", help="print one JSON document")
    inspect.add_argument(
        "--show-request",
        action="store_true",
        help="show the first records of each destination with their request to the destination"
        " (rebuilt from the record) and the last response",
    )
    inspect.add_argument(
        "--samples",
        type=int,
        metavar="N",
        help="show the first N records of each destination (default: none, 3 with --show-request)",
    )
    masking.add_arguments(inspect)
    inspect.set_defaults(handler=run_inspect)


async def inspect(args: argparse.Namespace, out: Any = None) -> RetryInspection:
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
                ranges = await reader.call(_whole, consumer, topic)
            async for batch in reader.read(ranges, stop):
                for msg in batch:
                    result.add(msg)
        finally:
            await reader.close()
    out.write((dumps(result.to_json()) if args.json else result.render()) + "\n")
    return result


def _whole(consumer: Any, topic: str) -> dict[int, tuple[int, int]]:
    md = consumer.list_topics(topic, timeout=10).topics[topic]
    out = {}
    for p in md.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
        if high > low:
            out[p] = (low, high)
    return out


def run_inspect(args: argparse.Namespace) -> int:
    asyncio.run(inspect(args))
    return 0
