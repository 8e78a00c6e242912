"""Dead letters: one record per failed delivery (or undecodable message) on the dead-letter topic.

A dead letter keeps the consumed key and value bytes unchanged and the original headers first,
then adds `streamproc.*` headers that say what failed and where the message came from. An event
counts as finished only once its dead letters are acknowledged by the broker (idempotent
producer, acks=all); a dead letter that cannot be written stops the worker rather than let it
commit past it.

A dead letter larger than its topic takes (`max.message.bytes`, read at start) would stop the
partition for good, so it is cut to fit: its value is shortened (to nothing if need be) and
`streamproc.value_truncated` gives the original size; if the original headers alone are too large
they are left out (`streamproc.original.headers_dropped`). The original topic/partition/offset
headers always stay, so the original can be found on its topic while it is retained.

Reading one back: `DeadLetterView` reads a dead letter's `streamproc.*` headers once,
`RetryView` the retry headers on top (kafka/retry.py says what they mean), and `marker_of` a
redrive marker (streamproc/runs/redrive.py). The producer that writes them is kafka/producer.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from streamproc.core.js import parse_iso_time
from streamproc.errors import StreamprocError
from streamproc.handoff import Failure, Origin, ParkedRecord, Redelivery
from streamproc.kafka.headers import read_headers, renamed, text
from streamproc.pii import sub_pii

if TYPE_CHECKING:
    from streamproc.dispatch.policy import DeliveryLike

__all__ = [
    "DLQ_VERSION",
    "REDRIVEN_HEADER",
    "DeadLetter",
    "DeadLetterFilter",
    "DeadLetterView",
    "RetryView",
    "dead_letter",
    "fit",
    "is_marker",
    "iso_utc",
    "marker_of",
    "next_attempt_at",
    "parse_time",
    "scrub_pii",
    "statuses",
]

DLQ_VERSION = "1"
BODY_LIMIT = 2048

RECORD_OVERHEAD = 512
"""Bytes kept free below a topic's limit for the record batch and record framing."""

PREFIX = "streamproc."


def _marker(kind: str, _: str) -> str:
    return f"[{kind}]"


def scrub_pii(text: str) -> str:
    """Replace emails, IP addresses and phone numbers so a partner's echo of an event leaks nothing."""
    # A response body echoes user fields, so bare digit runs are taken for phone numbers too.
    return sub_pii(text, _marker, digit_runs=True)


def iso_utc(ts: float) -> str:
    """Unix seconds as ISO-8601 UTC with milliseconds, e.g. 2026-11-23T13:56:05.123Z."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be delivered somewhere, and why."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    original_headers: Sequence[tuple[str, bytes | None]]
    error_type: str
    error_message: str
    delivery_id: str | None = None
    destination: str | None = None
    action: str | None = None
    subscription: str | None = None
    http_status: int | None = None
    response_body: str | None = None
    attempts: int = 0
    first_attempt_at: float | None = None
    last_attempt_at: float | None = None
    next_attempt_at: float | None = None
    """Retry records only: not to be tried before this Unix time."""
    deadline_at: float | None = None
    """Retry records only: the Unix time at which the delivery's retry budget ends."""
    parks: int = 0
    """Retry records only: how many times the delivery has been parked, this one included."""
    parked_by: str | None = None
    """Retry records only: the worker run that wrote it (its per-key order bookkeeping)."""
    unreadable_headers: int = 0
    """Headers of the original message that could not be read (names that are not UTF-8)."""
    value_truncated: int | None = None
    """The value's size in bytes when `value` holds only its beginning (cut to fit the topic)."""
    dropped_headers: int = 0
    """Original headers left out because they alone did not fit the topic."""

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        """Original headers first (their `streamproc.*` names renamed `original.streamproc.*`: only
        streamproc writes its own), then the `streamproc.*` ones (absent values are left out)."""
        out: list[tuple[str, str | bytes | None]] = list(renamed(self.original_headers))
        fields: list[tuple[str, Any]] = [
            ("streamproc.dlq.version", DLQ_VERSION),
            ("streamproc.delivery_id", self.delivery_id),
            ("streamproc.destination", self.destination),
            ("streamproc.action", self.action),
            ("streamproc.subscription", self.subscription),
            ("streamproc.error.type", self.error_type),
            ("streamproc.error.message", scrub_pii(self.error_message)[:BODY_LIMIT]),
            ("streamproc.http.status", self.http_status),
            (
                "streamproc.response.body",
                scrub_pii(self.response_body[:BODY_LIMIT]) if self.response_body else None,
            ),
            ("streamproc.attempts", self.attempts),
            (
                "streamproc.first_attempt_at",
                iso_utc(self.first_attempt_at) if self.first_attempt_at else None,
            ),
            ("streamproc.last_attempt_at", iso_utc(self.last_attempt_at) if self.last_attempt_at else None),
            ("streamproc.original.topic", self.topic),
            ("streamproc.original.partition", self.partition),
            ("streamproc.original.offset", self.offset),
            ("streamproc.original.headers_unreadable", self.unreadable_headers or None),
            ("streamproc.original.headers_dropped", self.dropped_headers or None),
            ("streamproc.value_truncated", self.value_truncated),
            (
                "streamproc.original.timestamp",
                iso_utc(self.timestamp_ms / 1000) if self.timestamp_ms is not None else None,
            ),
            (
                "streamproc.retry.next_attempt_at",
                iso_utc(self.next_attempt_at) if self.next_attempt_at else None,
            ),
            ("streamproc.retry.deadline", iso_utc(self.deadline_at) if self.deadline_at else None),
            ("streamproc.retry.parks", self.parks or None),
            ("streamproc.retry.parked_by", self.parked_by),
        ]
        for name, value in fields:
            if value is not None:
                out.append((name, str(value).encode("utf-8")))
        return out


def dead_letter(
    msg: Any, failure: Failure, delivery: DeliveryLike | None = None, redelivery: Redelivery | None = None
) -> DeadLetter:
    """The dead letter of a failed delivery of `msg`, or of `msg` itself when it had no delivery
    (undecodable, routing failed): the key and value unchanged, where the message came from, and
    why it failed. A dead letter redelivered (`redelivery`) keeps its first origin and first
    attempt, with the attempts added up."""
    if redelivery is None:
        kind, ts = msg.timestamp()
        headers, unreadable = read_headers(msg)
        origin = Origin(
            msg.topic(), msg.partition(), msg.offset(), ts if kind and ts >= 0 else None, headers, unreadable
        )
        attempts, first = failure.attempts, failure.first_attempt_at
    else:
        origin = redelivery.origin
        attempts = failure.attempts + redelivery.attempts
        first = redelivery.first_attempt_at or failure.first_attempt_at
    return DeadLetter(
        topic=origin.topic,
        partition=origin.partition,
        offset=origin.offset,
        timestamp_ms=origin.timestamp_ms,
        key=msg.key(),
        value=msg.value(),
        original_headers=origin.headers,
        unreadable_headers=origin.unreadable_headers,
        error_type=failure.type,
        error_message=failure.message,
        delivery_id=delivery.delivery_id if delivery else None,
        destination=delivery.destination if delivery else None,
        action=delivery.action if delivery else None,
        subscription=delivery.subscription if delivery else None,
        http_status=failure.status,
        response_body=failure.response_body,
        attempts=attempts,
        first_attempt_at=first,
        last_attempt_at=failure.last_attempt_at,
    )


def record_size(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, Any]]) -> int:
    """The bytes a record takes before compression, as the producer counts them against
    `message.max.bytes` (framing aside: see RECORD_OVERHEAD)."""
    size = len(key or b"") + len(value or b"")
    for name, data in headers:
        size += len(name.encode("utf-8", "surrogatepass")) + len(data or b"") + 8
    return size


def fit(letter: DeadLetter, max_bytes: int) -> DeadLetter:
    """`letter` as it fits a topic of `max_bytes`: unchanged when it fits, else with its value cut
    (to nothing if need be) and, if that is not enough, without its original headers."""
    budget = max_bytes - RECORD_OVERHEAD
    if record_size(letter.key, letter.value, letter.headers()) <= budget:
        return letter
    original = letter.value_truncated if letter.value_truncated is not None else len(letter.value or b"")
    cut = dataclasses.replace(letter, value=b"", value_truncated=original)
    rest = record_size(cut.key, b"", cut.headers())
    if rest > budget and cut.original_headers:
        cut = dataclasses.replace(cut, original_headers=(), dropped_headers=len(cut.original_headers))
        rest = record_size(cut.key, b"", cut.headers())
    keep = max(0, budget - rest)
    return dataclasses.replace(cut, value=(letter.value or b"")[:keep])


def parse_time(text: str) -> datetime:
    """ISO-8601 (UTC when no zone)."""
    try:
        when = parse_iso_time(text)
    except ValueError:
        raise StreamprocError(f"not an ISO-8601 time: {text!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def header_dict(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """The last value of each header, decoded as UTF-8."""
    out: dict[str, str] = {}
    for k, v in headers or ():
        out[k] = v.decode("utf-8", "replace") if v is not None else ""
    return out


@dataclass(frozen=True)
class DeadLetterView:
    """The `streamproc.*` headers of one dead-letter record, read once."""

    partition: int
    offset: int
    timestamp_ms: int | None
    headers: Mapping[str, str]
    original_headers: list[tuple[str, bytes | None]]

    @classmethod
    def of(cls, msg: Any) -> DeadLetterView:
        raw, _unreadable = read_headers(msg)
        ts_type, ts = msg.timestamp()
        return cls(
            msg.partition(),
            msg.offset(),
            ts if ts_type and ts >= 0 else None,
            header_dict([(k, v) for k, v in raw if k.startswith(PREFIX)]),
            [(k, v) for k, v in raw if not k.startswith(PREFIX)],
        )

    def get(self, name: str) -> str | None:
        return self.headers.get(PREFIX + name)

    @property
    def destination(self) -> str | None:
        return self.get("destination")

    @property
    def subscription(self) -> str | None:
        return self.get("subscription")

    @property
    def error_type(self) -> str:
        return self.get("error.type") or "unknown"

    @property
    def status(self) -> str:
        return self.get("http.status") or "none"

    def number(self, name: str, default: int) -> int:
        """A header read as an integer; `default` when it is absent or not one."""
        try:
            return int(self.get(name) or default)
        except ValueError:
            return default

    def unix_ms(self, name: str) -> int | None:
        """A header read as an ISO-8601 time, in Unix milliseconds; None when absent or not one."""
        text = self.get(name)
        try:
            return int(parse_time(text).timestamp() * 1000) if text else None
        except StreamprocError:
            return None

    @property
    def attempts(self) -> int:
        return self.number("attempts", 0)

    def time(self) -> datetime | None:
        """When the record was dead-lettered (its last attempt, else the record's own timestamp)."""
        last = self.get("last_attempt_at")
        if last:
            try:
                return parse_time(last)
            except StreamprocError:
                pass
        if self.timestamp_ms is not None:
            return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)
        return None

    def origin(self) -> Origin:
        """Where the original message came from, for a dead letter written again."""
        return Origin(
            self.get("original.topic") or "",
            self.number("original.partition", -1),
            self.number("original.offset", -1),
            self.unix_ms("original.timestamp"),
            self.original_headers,
            self.number("original.headers_unreadable", 0),
        )

    def redelivery(self) -> Redelivery | None:
        """The delivery this dead letter names, to make again; None when it names none (undecodable)."""
        dest, sub = self.destination, self.subscription
        if not dest or not sub:
            return None
        first = self.unix_ms("first_attempt_at")
        return Redelivery(
            dest, sub, self.origin(), self.attempts, first / 1000 if first is not None else None
        )


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters a command looks at; every given criterion must hold."""

    since: datetime | None = None
    until: datetime | None = None
    destinations: frozenset[str] = frozenset()
    error_types: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()
    """HTTP statuses (`503`), classes (`5xx`) or `none` (no HTTP answer)."""

    @property
    def empty(self) -> bool:
        return not (self.since or self.until or self.destinations or self.error_types or self.statuses)

    def describe(self) -> str:
        parts = []
        if self.since:
            parts.append(f"since={self.since.isoformat()}")
        if self.until:
            parts.append(f"until={self.until.isoformat()}")
        for name, values in (
            ("destination", self.destinations),
            ("error_type", self.error_types),
            ("status", self.statuses),
        ):
            if values:
                parts.append(f"{name}={','.join(sorted(values))}")
        return " ".join(parts)

    def matches(self, view: DeadLetterView) -> bool:
        if self.destinations and view.destination not in self.destinations:
            return False
        if self.error_types and view.error_type not in self.error_types:
            return False
        if self.statuses:
            status = view.status
            klass = f"{status[0]}xx" if status[:1].isdigit() else status
            if status not in self.statuses and klass not in self.statuses:
                return False
        if self.since or self.until:
            when = view.time()
            if when is None:
                return False
            if self.since and when < self.since:
                return False
            if self.until and when >= self.until:
                return False
        return True


def statuses(values: Iterable[str] | None) -> frozenset[str]:
    """Normalise --status values: 503, 5xx, none."""
    out = set()
    for v in values or ():
        for part in v.split(","):
            part = part.strip().lower()
            if part:
                out.add(part)
    return frozenset(out)


REDRIVEN_HEADER = "streamproc.redriven"
"""Header of a redrive marker: a record without value on the dead-letter topic saying that the dead
letter at `partition:offset` of that topic has been redriven (delivered, or dead-lettered again)."""


def is_marker(msg: Any) -> bool:
    return any(k == REDRIVEN_HEADER for k, _v in read_headers(msg)[0])


def marker_of(msg: Any) -> tuple[int, int] | None:
    """The (partition, offset) a redrive marker names, or None for an ordinary dead letter."""
    for k, v in read_headers(msg)[0]:
        if k == REDRIVEN_HEADER and v:
            p, _, o = text(v).partition(":")
            try:
                return int(p), int(o)
            except ValueError:
                return None
    return None


def _unix(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return parse_time(text).timestamp()
    except StreamprocError:
        return None


@dataclass(frozen=True)
class RetryView:
    """The headers of one retry record that decide what happens to it."""

    letter: DeadLetterView
    next_attempt_at: float
    deadline_at: float | None
    first_attempt_at: float | None
    parks: int
    parked_by: str | None
    original_offset: int

    @classmethod
    def of(cls, msg: Any) -> RetryView:
        view = DeadLetterView.of(msg)
        due = _unix(view.get("retry.next_attempt_at"))
        if due is None:
            due = view.timestamp_ms / 1000 if view.timestamp_ms is not None else 0.0
        return cls(
            view,
            due,
            _unix(view.get("retry.deadline")),
            _unix(view.get("first_attempt_at")),
            view.number("retry.parks", 1),
            view.get("retry.parked_by"),
            view.number("original.offset", -1),
        )

    @property
    def destination(self) -> str | None:
        return self.letter.destination

    @property
    def subscription(self) -> str | None:
        return self.letter.subscription

    def parked(self) -> ParkedRecord:
        return ParkedRecord(
            attempts=self.letter.attempts,
            first_attempt_at=self.first_attempt_at,
            deadline_at=self.deadline_at,
            parks=self.parks,
            parked_by=self.parked_by,
            original_offset=self.original_offset,
            retry_offset=self.letter.offset,
            reason=self.letter.get("error.message"),
        )


def next_attempt_at(msg: Any) -> float:
    """When a retry record is due (read from its header alone; the hot check of the reader)."""
    for k, v in read_headers(msg)[0]:
        if k == "streamproc.retry.next_attempt_at" and v:
            due = _unix(text(v))
            if due is not None:
                return due
    return 0.0


KeyRef = tuple[str, int, str]
"""(destination, partition, ordering key)."""
