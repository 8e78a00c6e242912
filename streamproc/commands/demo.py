"""`streamproc demo`: broker, partner simulator, generated Segment traffic and a worker, with progress."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run everything locally: broker, simulated partners, generated events, the worker",
        description=(
            "Start a Kafka broker (a local Kafka where Java and its jars are there, else librdkafka's"
            " mock cluster), the partner simulator and the worker with all three destinations pointed"
            " at it, then produce a stream of Segment events (all six types, shop sessions, sign-ups,"
            " and some poison messages) and show progress. Ctrl-C stops everything cleanly."
        ),
    )
    p.add_argument("--events", type=_positive_int, metavar="N", help="produce N events, then finish")
    p.add_argument("--duration", type=_positive_float, metavar="SECONDS", help="stop after SECONDS")
    p.add_argument("--rate", type=_positive_float, default=100.0, metavar="N", help="events per second (100)")
    p.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="use this broker instead of starting one (default with --broker auto: $KAFKA_BOOTSTRAP_SERVERS)",
    )
    p.add_argument(
        "--broker",
        choices=["auto", "local", "mock"],
        default="auto",
        help="auto: local Kafka when possible, else the mock cluster (default auto)",
    )
    p.add_argument(
        "--config", type=Path, metavar="FILE", help="demo configuration (default: the one in the package)"
    )
    p.add_argument(
        "--metrics-port", type=int, default=0, metavar="PORT", help="0 picks a free port (default)"
    )
    p.add_argument("--partitions", type=_positive_int, default=3, metavar="N", help="input partitions (3)")
    p.add_argument("--poison-every", type=int, default=50, metavar="N", help="every Nth message is bad input")
    p.add_argument(
        "--no-faults",
        dest="faults",
        action="store_false",
        help="partners answer at once and never fail (default: some latency and a TikTok hiccup)",
    )
    p.add_argument("--seed", type=int, default=7, help="random seed of the event stream (7)")
    p.add_argument(
        "--keep",
        action="store_true",
        help="after the run, keep the broker and the partner simulator up (until Ctrl-C) to try"
        " `dlq inspect`, `replay --dry-run` and `retry inspect` on them with the printed configuration",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # The dev tools load only for this command: the runtime never imports them.
    from streamproc.devtools.demo.command import run as run_demo_command

    return run_demo_command(args)
