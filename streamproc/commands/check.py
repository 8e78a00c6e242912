"""`streamproc check`: load a configuration file, print every problem, or a summary when there is none."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from streamproc.config import Config, load_config
from streamproc.errors import ConfigError, ConfigProblem


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "check",
        help="check a configuration file (settings, triggers, mappings) and print every problem",
        description="Check a configuration file: every problem is printed with its file and key path.",
    )
    p.add_argument(
        "--config", "-c", required=True, metavar="FILE", help="the YAML or JSON configuration file"
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        config = load_config(args.config)
        _compile(config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=out)
        count = len(exc.problems)
        print(f"{count} problem{'s' if count != 1 else ''} found in {args.config}", file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(warning, file=out)
    print(summary(config), file=out)
    return 0


def _compile(config: Config) -> None:
    """Compile the router too: whatever the worker would refuse at start-up, check refuses now."""
    from streamproc.router import Router

    try:
        Router(config)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(ConfigProblem(config.source, "", f"cannot compile the routing: {exc}")) from None


def summary(config: Config) -> str:
    """A human overview: input, Kafka, and each destination with its subscriptions."""
    lines = [f"{config.source}: OK"]
    if config.kafka is not None:
        k = config.kafka
        lines.append(
            f"kafka: {', '.join(k.topics)} (group {k.group_id}) -> dead letters to {k.dead_letter_topic};"
            f" input {config.input.format}"
        )
    else:
        lines.append(f"kafka: not configured (send/check only); input {config.input.format}")
    total = enabled = 0
    for dest in config.destinations:
        subs = dest.subscriptions
        on = sum(1 for s in subs if s.enabled)
        total += len(subs)
        enabled += on
        lines.append(
            f"destination {dest.id} ({dest.type}) -> {dest.endpoint}; ordering {dest.ordering};"
            f" {on} of {len(subs)} subscriptions enabled"
        )
        gates = []
        if dest.consent_categories:
            gates.append(f"consent {', '.join(dest.consent_categories)}")
        if dest.integrations == "ignore":
            gates.append("integrations object ignored")
        if dest.filters:
            gates.append(f"{len(dest.filters)} filter{'s' if len(dest.filters) != 1 else ''}")
        if gates:
            lines.append(f"  gates: {'; '.join(gates)}")
        for sub in subs:
            origin = f" [preset {sub.preset}]" if sub.preset else ""
            state = "" if sub.enabled else " (disabled)"
            lines.append(f"  - {sub.name}{origin}{state}: {sub.action} when {sub.trigger}")
    lines.append(
        f"{len(config.destinations)} destination{'s' if len(config.destinations) != 1 else ''},"
        f" {enabled} enabled subscription{'s' if enabled != 1 else ''} ({total} in all)"
    )
    return "\n".join(lines)
