"""`streamproc demo` once its arguments are parsed: the terminal, the logging, the run and its summary."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from streamproc.devtools.demo.report import DemoSummary, format_summary, what_next
from streamproc.devtools.demo.run import DemoOptions, run_demo
from streamproc.devtools.terminal import own_terminal

__all__ = ["program", "run"]


def program() -> str:
    """How to call streamproc again from this shell: the name, when it is the one on PATH."""
    me = Path(sys.argv[0])
    if me.name == "streamproc":
        found = shutil.which("streamproc")
        if found and Path(found).resolve() == me.resolve():
            return "streamproc"
        try:
            shown = me.resolve().relative_to(Path.cwd().resolve())
        except ValueError:
            shown = me
        return shlex.quote(str(shown))
    return f"{shlex.quote(sys.executable)} -m streamproc"


def run(args: argparse.Namespace) -> int:
    from streamproc.config import LogConfig
    from streamproc.logging import configure_logging

    workdir = Path(tempfile.mkdtemp(prefix="streamproc-demo-"))
    log_path = workdir / "demo.log"
    # Library lines written straight to stderr (librdkafka, the broker's start and stop) go to the log
    # file; the terminal keeps the progress line, the summary and warnings of the worker.
    with own_terminal(log_path) as terminal:
        options = DemoOptions(
            events=args.events,
            duration=args.duration,
            rate=args.rate,
            bootstrap=args.bootstrap
            or (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") if args.broker == "auto" else None),
            broker=args.broker,
            config=args.config,
            metrics_port=args.metrics_port,
            partitions=args.partitions,
            seed=args.seed,
            poison_every=args.poison_every,
            faults=args.faults,
            out=terminal,
            workdir=workdir,
            keep=args.keep,
        )
        # The progress line owns the terminal: only warnings and errors from the worker.
        configure_logging(LogConfig(format="console", level="warning"), stream=terminal)

        def done(summary: DemoSummary) -> None:
            print(format_summary(summary), file=terminal)
            print(what_next(summary, program=program(), keep=args.keep, log_path=log_path), file=terminal)

        summary = asyncio.run(run_demo(options, done))
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
    return 130 if summary.interrupted else 0
