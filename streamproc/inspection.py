"""What `dlq inspect` and `retry inspect` report: counts of dead letters and of parked deliveries
by destination, error type and status, with a few masked samples."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from streamproc.kafka.dlq import DeadLetterFilter, DeadLetterView, RetryView, is_marker
from streamproc.masking import Masker
from streamproc.output import dumps as compact

__all__ = ["Detail", "Inspection", "RetryInspection", "dumps", "sample_lines"]

Detail = Callable[[Any, DeadLetterView], dict[str, Any]]
"""More to show about one dead-letter or retry record, from the record and its headers."""


@dataclass
class Inspection:
    """Counts of dead letters by destination, error type and status, with a few masked samples."""

    samples_per_group: int = 3
    masker: Masker = field(default_factory=Masker)
    detail: Detail | None = None
    """More for each sample (`--show-request`: the partner request and its response)."""
    total: int = 0
    filtered: int = 0
    redriven: int = 0
    by_destination: Counter[str] = field(default_factory=Counter)
    by_error_type: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    by_group: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    samples: dict[tuple[str, str, str], list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, msg: Any, flt: DeadLetterFilter, redriven: set[tuple[int, int]] | None = None) -> None:
        """Count one record; markers, and dead letters in `redriven`, only count as redriven."""
        if is_marker(msg):
            return
        view = DeadLetterView.of(msg)
        if redriven is not None and (view.partition, view.offset) in redriven:
            self.redriven += 1
            return
        if not flt.matches(view):
            self.filtered += 1
            return
        self.total += 1
        dest = view.destination or "(none: undecodable)"
        key = (dest, view.error_type, view.status)
        self.by_destination[dest] += 1
        self.by_error_type[view.error_type] += 1
        self.by_status[view.status] += 1
        self.by_group[key] += 1
        bucket = self.samples.setdefault(key, [])
        if len(bucket) < self.samples_per_group:
            bucket.append(self.sample(msg, view))

    def sample(self, msg: Any, view: DeadLetterView) -> dict[str, Any]:
        value = msg.value()
        shown: Any
        try:
            shown = orjson.loads(value) if value is not None else None
        except orjson.JSONDecodeError:
            shown = f"<{len(value)} bytes, not JSON>" if value is not None else None
        when = view.time()
        return {
            "partition": view.partition,
            "offset": view.offset,
            "dead_lettered_at": when.isoformat() if when else None,
            "delivery_id": view.get("delivery_id"),
            "subscription": view.subscription,
            "action": view.get("action"),
            "attempts": view.attempts,
            "message": self.masker.text(view.get("error.message") or ""),
            "response_body": self.masker.value(view.get("response.body")),
            "original": f"{view.get('original.topic')}[{view.get('original.partition')}]"
            f"@{view.get('original.offset')}",
            "value_truncated": view.number("value_truncated", 0) or None,
            "value": self.masker.value(shown),
        } | (self.detail(msg, view) if self.detail is not None else {})

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "left_out_by_filters": self.filtered,
            "redriven_already": self.redriven,
            "by_destination": dict(self.by_destination.most_common()),
            "by_error_type": dict(self.by_error_type.most_common()),
            "by_status": dict(self.by_status.most_common()),
            "groups": [
                {
                    "destination": d,
                    "error_type": e,
                    "status": s,
                    "count": n,
                    "samples": self.samples.get((d, e, s), []),
                }
                for (d, e, s), n in self.by_group.most_common()
            ],
        }

    def render(self) -> str:
        lines = [
            f"{self.total} dead letters"
            + (f" ({self.filtered} left out by the filters)" if self.filtered else "")
            + (f"; {self.redriven} more were redriven already and are not counted" if self.redriven else "")
        ]
        for title, counter in (
            ("by destination", self.by_destination),
            ("by error type", self.by_error_type),
            ("by HTTP status", self.by_status),
        ):
            lines.append(f"\n{title}:")
            lines.extend(f"  {n:>8}  {k}" for k, n in counter.most_common())
        for (d, e, s), n in self.by_group.most_common():
            lines.append(f"\n{d} / {e} / status {s}: {n}")
            for sample in self.samples.get((d, e, s), []):
                lines.extend(sample_lines(sample))
        return "\n".join(lines)


_EXCHANGE = ("request", "request_note", "response")


def sample_lines(sample: Mapping[str, Any]) -> list[str]:
    """A sample as `inspect` prints it: one JSON line, then the request to the destination and the
    response, when the sample has them, one part per line."""
    lines = ["  " + compact({k: v for k, v in sample.items() if k not in _EXCHANGE}).decode()]
    if "response" not in sample:
        return lines
    lines.append("    request to destination:")
    for request in sample.get("request") or ():
        lines.append(f"      {request['method']} {request['url']}")
        lines.append(f"      headers: {compact(request['headers']).decode()}")
        if request.get("body") is not None:
            lines.append(f"      body: {compact(request['body']).decode()}")
    if sample.get("request_note"):
        lines.append(f"      ({sample['request_note']})")
    response = sample["response"]
    status = response.get("status")
    lines.append(
        f"    response: {'HTTP ' + str(status) if status is not None else 'no HTTP status'},"
        f" {response.get('error_type')}: {response.get('error')}"
    )
    if response.get("body") is not None:
        lines.append(f"      body: {compact(response['body']).decode()}")
    return lines


@dataclass
class RetryInspection:
    """Counts of parked deliveries by destination, error type, status and due state, with the oldest."""

    now: float = field(default_factory=time.time)
    total: int = 0
    by_destination: Counter[str] = field(default_factory=Counter)
    by_error_type: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    due: Counter[str] = field(default_factory=Counter)
    """destination -> records due now (their next attempt time has passed)."""
    overdue: Counter[str] = field(default_factory=Counter)
    """destination -> records whose retry budget has ended (dead-lettered when read)."""
    oldest: dict[str, float] = field(default_factory=dict)
    """destination -> first attempt time of its oldest parked delivery."""
    samples_per_destination: int = 0
    """The first records of each destination kept as samples (their event masked by `masker`)."""
    masker: Masker = field(default_factory=Masker)
    detail: Detail | None = None
    """More for each sample (`--show-request`: the partner request and its response)."""
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, msg: Any) -> None:
        view = RetryView.of(msg)
        dest = view.destination or "(none)"
        if self.samples_per_destination > 0:
            bucket = self.samples.setdefault(dest, [])
            if len(bucket) < self.samples_per_destination:
                bucket.append(self.sample(msg, view))
        self.total += 1
        self.by_destination[dest] += 1
        self.by_error_type[view.letter.error_type] += 1
        self.by_status[view.letter.status] += 1
        if view.deadline_at is not None and view.deadline_at <= self.now:
            self.overdue[dest] += 1
        elif view.next_attempt_at <= self.now:
            self.due[dest] += 1
        first = view.first_attempt_at
        if first is None and view.letter.timestamp_ms is not None:
            first = view.letter.timestamp_ms / 1000
        if first is not None and first < self.oldest.get(dest, float("inf")):
            self.oldest[dest] = first

    def sample(self, msg: Any, view: RetryView) -> dict[str, Any]:
        letter = view.letter
        value = msg.value()
        try:
            event = orjson.loads(value) if value is not None else None
        except orjson.JSONDecodeError:
            event = f"<{len(value)} bytes, not JSON>"
        sample = {
            "partition": letter.partition,
            "offset": letter.offset,
            "delivery_id": letter.get("delivery_id"),
            "subscription": letter.subscription,
            "attempts": letter.attempts,
            "parks": view.parks,
            "next_attempt_at": _iso(view.next_attempt_at),
            "value": self.masker.value(event),
        }
        return sample | (self.detail(msg, letter) if self.detail is not None else {})

    def to_json(self) -> dict[str, Any]:
        samples = {"samples": self.samples} if self.samples_per_destination > 0 else {}
        return samples | {
            "total": self.total,
            "by_destination": {
                d: {
                    "parked": n,
                    "due": self.due.get(d, 0),
                    "overdue": self.overdue.get(d, 0),
                    "oldest_first_attempt": _iso(self.oldest.get(d)),
                    "oldest_age_seconds": round(self.now - self.oldest[d], 1) if d in self.oldest else None,
                }
                for d, n in self.by_destination.most_common()
            },
            "by_error_type": dict(self.by_error_type.most_common()),
            "by_status": dict(self.by_status.most_common()),
        }

    def render(self) -> str:
        if not self.total:
            return "0 retry records waiting: no parked delivery is due or pending"
        lines = [
            f"{self.total} retry records waiting (a delivery parked again counts once per record until"
            " the workers commit past the older one)"
        ]
        lines.append("\nby destination (parked, due now, past their budget, oldest first attempt):")
        for d, n in self.by_destination.most_common():
            age = f"{self.now - self.oldest[d]:.0f}s ago" if d in self.oldest else "unknown"
            lines.append(
                f"  {n:>8}  {d}  due={self.due.get(d, 0)} overdue={self.overdue.get(d, 0)} oldest={age}"
            )
        for title, counter in (("by error type", self.by_error_type), ("by HTTP status", self.by_status)):
            lines.append(f"\n{title}:")
            lines.extend(f"  {n:>8}  {k}" for k, n in counter.most_common())
        for dest, samples in self.samples.items():
            lines.append(f"\n{dest}: the first {len(samples)} waiting")
            for sample in samples:
                lines.extend(sample_lines(sample))
        return "\n".join(lines)


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def dumps(doc: Any) -> str:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
