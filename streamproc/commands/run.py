"""`streamproc run`: the worker — consume, route, deliver at least once, dead-letter, commit."""

from __future__ import annotations

import argparse
from typing import Any

from streamproc.config import load_config


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="run the worker: consume the configured topics and deliver to the partners",
        description=(
            "Join the consumer group of the config's `kafka` section, deliver every matching event at"
            " least once, dead-letter what cannot be delivered, and commit only finished offsets."
            " SIGTERM/SIGINT drain in-flight work (limits.shutdown_timeout), commit and exit 0."
        ),
    )
    p.add_argument(
        "--config", "-c", required=True, metavar="FILE", help="the YAML or JSON configuration file"
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from streamproc.app import build_worker

    config = load_config(args.config)
    try:
        from streamproc.logging import configure_logging
    except ImportError:
        pass
    else:
        configure_logging(config.log)
    return build_worker(config).run()
