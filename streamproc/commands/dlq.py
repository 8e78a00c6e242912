"""`streamproc dlq inspect|redrive`: look into the dead-letter topic, and re-deliver what failed."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from streamproc import masking
from streamproc.commands.replay import positive_float
from streamproc.errors import ErrorType
from streamproc.inspection import Inspection
from streamproc.kafka.dlq import DeadLetterFilter, parse_time, statuses
from streamproc.runs import inspect as runs_inspect
from streamproc.runs import redrive as runs_redrive
from streamproc.summary import Summary


def error_type(text: str) -> str:
    """A dead-letter error type, exactly as the dead letters write it."""
    try:
        return ErrorType(text).value
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown error type {text!r}; one of {', '.join(ErrorType)}"
        ) from None


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("dlq", help="inspect or redrive the dead-letter topic")
    sub = p.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)

    inspect = sub.add_parser("inspect", help="counts by destination, error type and status, with samples")
    _common(inspect)
    inspect.add_argument("--samples", type=int, default=3, metavar="N", help="samples per group (3)")
    inspect.add_argument("--json", action="store_true", help="print one JSON document")
    inspect.add_argument("--all", action="store_true", help="count dead letters that were redriven too")
    inspect.add_argument(
        "--show-request",
        action="store_true",
        help="show each sample's request to the destination (rebuilt from the dead letter) and the response",
    )
    masking.add_arguments(inspect)
    inspect.set_defaults(handler=run_inspect)

    redrive = sub.add_parser(
        "redrive",
        help="re-deliver the failed delivery each dead letter names",
        description=(
            "Re-route each dead letter's original value with only the subscription it names and send"
            " it; failures go back to the dead-letter topic. Progress is committed to the consumer"
            " group <group_id>.redrive (a hash of the filters is appended when filters are given),"
            " and every redriven record gets a marker on the dead-letter topic (a record without value"
            " and a streamproc.redriven header), so no later redrive, with any filters, sends it again."
        ),
    )
    _common(redrive)
    redrive.add_argument("--rate", type=positive_float, metavar="N", help="at most N dead letters per second")
    redrive.add_argument("--dry-run", action="store_true", help="print what would be sent; commit nothing")
    redrive.add_argument("--group", help="consumer group for the redrive position (default: see above)")
    redrive.add_argument("--max-in-flight", type=int, default=1000, metavar="N")
    masking.add_arguments(redrive)
    redrive.set_defaults(handler=run_redrive)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", required=True, metavar="FILE")
    p.add_argument("--since", type=parse_time, metavar="TIME", help="dead-lettered at or after (ISO-8601)")
    p.add_argument("--until", type=parse_time, metavar="TIME", help="dead-lettered before (ISO-8601)")
    p.add_argument("--destination", "-d", action="append", metavar="ID", help="repeatable")
    p.add_argument(
        "--error-type",
        action="append",
        metavar="TYPE",
        type=error_type,
        help="one of " + ", ".join(ErrorType) + " (repeatable)",
    )
    p.add_argument("--status", action="append", metavar="STATUS", help="503, 5xx or none (repeatable)")


def make_filter(args: argparse.Namespace) -> DeadLetterFilter:
    return DeadLetterFilter(
        since=args.since,
        until=args.until,
        destinations=frozenset(args.destination or ()),
        error_types=frozenset(args.error_type or ()),
        statuses=statuses(args.status),
    )


async def inspect(args: argparse.Namespace, out: Any = None) -> Inspection:
    return await runs_inspect.inspect_dead_letters(args, make_filter(args), out)


def run_inspect(args: argparse.Namespace) -> int:
    asyncio.run(inspect(args))
    return 0


async def redrive(args: argparse.Namespace, out: Any = None, err: Any = None) -> tuple[int, Summary]:
    """The whole redrive, callable from tests; returns the exit code and the summary."""
    return await runs_redrive.redrive(args, make_filter(args), out, err)


def run_redrive(args: argparse.Namespace) -> int:
    code, _summary = asyncio.run(redrive(args))
    return code
