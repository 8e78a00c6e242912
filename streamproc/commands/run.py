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
    import structlog

    from streamproc.logging import config_secrets, configure_logging, register_secrets
    from streamproc.runs.worker import Worker

    config = load_config(args.config)
    configure_logging(config.log)
    # Partner credentials end up in request URLs (the Seg apiKey is a path segment).
    register_secrets(config_secrets(config))
    for warning in config.warnings:
        structlog.get_logger("streamproc.config").warning("config_warning", problem=str(warning))
    return Worker(config).run()
