"""What a demo run did: its summary, read from the worker's metrics and the dead-letter topic."""

from __future__ import annotations

import shlex
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamproc.kafka.dlq import DeadLetterView

__all__ = [
    "DemoSummary",
    "dead_letter_error_types",
    "format_summary",
    "metric_totals",
    "read_dead_letters",
    "what_next",
]


@dataclass
class DemoSummary:
    """What happened, as printed at the end (and as JSON with --json)."""

    broker: str
    bootstrap: str
    topic: str
    dead_letter_topic: str
    metrics_url: str
    produced: int = 0
    produced_by_kind: dict[str, int] = field(default_factory=dict)
    consumed: int = 0
    delivered: dict[str, int] = field(default_factory=dict)
    dead_lettered: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    partner_requests: dict[str, int] = field(default_factory=dict)
    dead_letter_topic_records: int = 0
    dead_letter_error_types: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False
    partner_url: str = ""
    config_path: str = ""
    """This run's configuration with every value filled in: other commands can use it as it is."""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def metric_totals(registry: Any) -> dict[str, Counter[str]]:
    """Sums of the demo's counters by destination (or topic), read from the worker's registry."""
    totals: dict[str, Counter[str]] = {
        "consumed": Counter(),
        "delivered": Counter(),
        "dead_lettered": Counter(),
        "skipped": Counter(),
        "requests": Counter(),
        "in_flight": Counter(),
    }
    for family in registry.collect():
        for s in family.samples:
            if s.name == "streamproc_events_consumed_total":
                totals["consumed"][s.labels["topic"]] += int(s.value)
            elif s.name == "streamproc_deliveries_total":
                outcome = s.labels["outcome"]
                if outcome in totals:
                    totals[outcome][s.labels["destination"]] += int(s.value)
            elif s.name == "streamproc_dead_letters_total" and not s.labels["destination"]:
                totals["dead_lettered"]["(undecodable)"] += int(s.value)
            elif s.name == "streamproc_partner_responses_total":
                totals["requests"][s.labels["destination"]] += int(s.value)
            elif s.name == "streamproc_events_in_flight":
                totals["in_flight"]["events"] += int(s.value)
    return totals


def read_dead_letters(bootstrap: str, topic: str, timeout: float = 20.0) -> list[Any]:
    """Every record of the dead-letter topic (assigned partitions, start to end)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"streamproc-demo-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        md = c.list_topics(topic, timeout=10)
        ends = {}
        for p in md.topics[topic].partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if hi > lo:
                ends[p] = hi
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        out: list[Any] = []
        pos = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + timeout
        while any(pos[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for msg in c.consume(500, 0.5):
                if msg.error():
                    continue
                out.append(msg)
                pos[msg.partition()] = (msg.offset() or 0) + 1
        return out
    finally:
        c.close()


def dead_letter_error_types(letters: list[Any]) -> dict[str, int]:
    """Dead-letter records counted by their error type, as the dead-letter record reader reads it."""
    types = Counter(DeadLetterView.of(msg).error_type for msg in letters)
    return dict(sorted(types.items()))


def format_summary(s: DemoSummary) -> str:
    """The closing report, for people."""
    lines = [
        "",
        f"streamproc demo: {s.produced} events produced, {s.consumed} consumed in {s.seconds:g}s"
        + (" (interrupted)" if s.interrupted else ""),
        "  events by type: "
        + ", ".join(f"{k} {v}" for k, v in s.produced_by_kind.items() if not k.startswith("poison:")),
        "  poison messages: "
        + ", ".join(f"{k[7:]} {v}" for k, v in s.produced_by_kind.items() if k.startswith("poison:")),
        "  destination        delivered  dead-lettered  skipped  partner requests",
    ]
    for dest in sorted(set(s.delivered) | set(s.dead_lettered) | set(s.partner_requests)):
        lines.append(
            f"  {dest:<18} {s.delivered.get(dest, 0):>9}  {s.dead_lettered.get(dest, 0):>13}"
            f"  {s.skipped.get(dest, 0):>7}  {s.partner_requests.get(dest, 0):>16}"
        )
    lines.append(
        f"  dead-letter topic {s.dead_letter_topic}: {s.dead_letter_topic_records} records"
        + (
            " (" + ", ".join(f"{k} {v}" for k, v in s.dead_letter_error_types.items()) + ")"
            if s.dead_letter_error_types
            else ""
        )
    )
    return "\n".join(lines)


def what_next(s: DemoSummary, *, program: str, keep: bool, log_path: Path | None) -> str:
    """Where this run's configuration is, and commands to try against what it left behind."""
    lines = [
        "",
        "what next: this run's configuration (every value filled in) and commands that use it",
        f"  CONFIG={shlex.quote(s.config_path)}",
        f'  {program} dlq inspect --config "$CONFIG"             # dead letters by cause',
        f'  {program} replay --config "$CONFIG" --dry-run --to 3 # what a replay would send',
        f'  {program} retry inspect --config "$CONFIG"           # parked deliveries',
    ]
    running = "the partner simulator" if s.broker == "external" else "the broker and the partner simulator"
    if keep:
        lines.append(
            f"  {running} keep running for these ({s.bootstrap}, {s.partner_url}); Ctrl-C stops them"
        )
    else:
        lines.append(f"  ({running} have stopped: `demo --keep` keeps them up for these commands)")
    if log_path is not None:
        lines.append(f"  the Kafka clients' and the broker's own output: {log_path}")
    return "\n".join(lines)
