"""`streamproc replay`: backfill a time or offset range of a topic through the configured routing."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from streamproc import masking
from streamproc.runs import replay as runs_replay
from streamproc.summary import Summary


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "replay",
        help="backfill a time or offset range of a topic through the routing (own consumer, no group commit)",
        description=(
            "Read a range of a topic with partitions assigned (the live consumer group is never touched),"
            " route every event like the worker, deliver, and dead-letter what fails. Positions are"
            " ISO-8601 times, one offset for every partition (1200), per-partition offsets"
            " (0:1200,1:980), beginning or end; --to is exclusive."
        ),
    )
    p.add_argument("--config", "-c", required=True, metavar="FILE")
    p.add_argument("--from", dest="start", metavar="POSITION", help="first position (default: beginning)")
    p.add_argument(
        "--to", dest="end", metavar="POSITION", help="end position, exclusive (default: the end now)"
    )
    p.add_argument("--topic", help="the topic to replay (default: the configured topic, if only one)")
    add_filter_arguments(p)
    p.add_argument("--rate", type=positive_float, metavar="N", help="at most N events per second")
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be sent (like `send`), send nothing"
    )
    progress = p.add_mutually_exclusive_group()
    progress.add_argument(
        "--state", type=Path, metavar="FILE", help="save progress here; rerun with it to resume"
    )
    progress.add_argument(
        "--progress-group",
        metavar="GROUP",
        help="save progress in Kafka as the commits of this consumer group (not the live one); rerun"
        " with it to resume, e.g. in a Job whose pod may be retried; a finished replay sends nothing again",
    )
    p.add_argument("--max-in-flight", type=int, default=1000, metavar="N", help="events in flight (1000)")
    masking.add_arguments(p)
    p.set_defaults(handler=run)


def add_filter_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--destination", "-d", action="append", metavar="ID", help="only this destination (repeatable)"
    )
    p.add_argument(
        "--subscription",
        "-s",
        action="append",
        metavar="ID/NAME",
        help="only this subscription: DESTINATION_ID/NAME, or NAME when unambiguous (repeatable)",
    )


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


async def replay(args: argparse.Namespace, out: Any = None, err: Any = None) -> tuple[int, Summary]:
    """The whole command, callable from tests; returns the exit code and the summary."""
    return await runs_replay.replay(args, out, err)


def run(args: argparse.Namespace) -> int:
    code, _summary = asyncio.run(replay(args))
    return code
