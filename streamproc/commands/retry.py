"""`streamproc retry inspect`: what waits in the retry topics, by destination, error, status and due state."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from streamproc import masking
from streamproc.inspection import RetryInspection
from streamproc.runs import inspect as runs_inspect


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
    return await runs_inspect.inspect_retry_topics(args, out)


def run_inspect(args: argparse.Namespace) -> int:
    asyncio.run(inspect(args))
    return 0
