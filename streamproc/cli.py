"""The `streamproc` command line: finds each sub-command module and runs the one asked for."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys
from collections.abc import Sequence

import streamproc.commands
from streamproc import __version__
from streamproc.errors import StreamprocError


def command_names() -> list[str]:
    """Every sub-command, by the name of its module in `streamproc.commands`."""
    infos = pkgutil.iter_modules(streamproc.commands.__path__)
    return sorted(info.name for info in infos if not info.name.startswith("_"))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with `only` the one sub-command: each command module imports what
    its command needs, so `streamproc run` never loads the simulator, the demo or replay's and
    redrive's machinery (memory a worker would carry for nothing)."""
    parser = argparse.ArgumentParser(
        prog="streamproc",
        description="Route Segment events from Kafka to partner APIs, at least once.",
    )
    parser.add_argument("--version", action="version", version=f"streamproc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in command_names():
        if only is not None and name != only:
            continue
        module = importlib.import_module(f"streamproc.commands.{name}")
        module.register(sub)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The sub-command `argv` names, when its first word is one (options come after it)."""
    if argv and argv[0] in command_names():
        return argv[0]
    return None


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    # Until a command installs its own graceful handling (the worker drains, commits and exits 0),
    # SIGTERM finds nothing in flight: end cleanly instead of dying by the signal.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=_command_of(words))
    args = parser.parse_args(words)
    try:
        code: int = args.handler(args)
    except StreamprocError as exc:
        print(f"streamproc {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
