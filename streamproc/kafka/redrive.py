"""Reads the dead-letter topic: counts and samples for `dlq inspect`, re-delivery for `dlq redrive`.

A dead letter names one failed delivery (destination + subscription headers) of one original
message (its bytes, unchanged). Redrive decodes the original value again, routes it with only that
subscription, and sends what the router builds now; nothing that succeeded the first time is sent
again. What fails again goes back to the dead-letter topic with the attempts added up and the
original topic/partition/offset/timestamp kept. Redrive commits its own consumer group (offsets of
the dead-letter topic, up to the contiguous watermark) as it goes, so a second run with the same
filters finds nothing new to send; and it writes a marker record for every dead letter it handled
(no value, header `streamproc.redriven: partition:offset`), so a redrive with other filters, which
keeps another position, skips what was redriven already.

The re-delivery itself is the worker's `EventProcessor`; what is redrive's own is the choice of
records (`redrive_handler`) and the checkpoint (`redrive_checkpoint`): markers written through the
dead-letter producer and acknowledged, then the position committed on the reader's thread.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
import structlog
from confluent_kafka import OFFSET_INVALID, TopicPartition

from streamproc.core.js import parse_iso_time
from streamproc.errors import KafkaError, StreamprocError
from streamproc.kafka.consumer import Partition
from streamproc.kafka.dlq import DLQ_VERSION, DeadLetterProducer
from streamproc.kafka.headers import read_headers, text
from streamproc.kafka.replay import RangeReader, header_dict
from streamproc.masking import Masker
from streamproc.output import dumps
from streamproc.pipeline import EventProcessor, Origin, Redelivery, Summary

__all__ = [
    "DeadLetterFilter",
    "DeadLetterView",
    "Inspection",
    "RedriveMarks",
    "redrive_checkpoint",
    "redrive_group",
    "redrive_handler",
    "start_offsets",
]

log = structlog.get_logger("streamproc.redrive")

PREFIX = "streamproc."


def parse_time(text: str) -> datetime:
    """ISO-8601 (UTC when no zone)."""
    try:
        when = parse_iso_time(text)
    except ValueError:
        raise StreamprocError(f"not an ISO-8601 time: {text!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


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

    def redelivery(self, on_routed: Callable[[], None] | None = None) -> Redelivery | None:
        """The delivery this dead letter names, to make again; None when it names none (undecodable)."""
        dest, sub = self.destination, self.subscription
        if not dest or not sub:
            return None
        first = self.unix_ms("first_attempt_at")
        return Redelivery(
            dest, sub, self.origin(), self.attempts, first / 1000 if first is not None else None, on_routed
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


def redrive_group(group_id: str, flt: DeadLetterFilter) -> str:
    """`<group>.redrive`, plus a short hash of the filters when there are any: each filter set keeps
    its own position, so a filtered redrive never hides other dead letters from a later one."""
    if flt.empty:
        return f"{group_id}.redrive"
    digest = hashlib.sha1(flt.describe().encode()).hexdigest()[:10]
    return f"{group_id}.redrive.{digest}"


def start_offsets(consumer: Any, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """For each partition: (the group's committed offset, else the beginning; the end right now)."""
    md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if md is None or md.error is not None:
        raise StreamprocError(f"dead-letter topic {topic!r} not found ({md.error if md else 'no metadata'})")
    parts = sorted(md.partitions)
    committed = {
        tp.partition: tp.offset
        for tp in consumer.committed([TopicPartition(topic, p) for p in parts], timeout=timeout)
    }
    out: dict[int, tuple[int, int]] = {}
    for p in parts:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
        c = committed.get(p, OFFSET_INVALID)
        start = c if c is not None and c >= 0 else low
        start = min(max(start, low), high)
        if high > start:
            out[p] = (start, high)
    return out


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


class RedriveMarks:
    """Which dead letters were redriven already (by a redrive with any filters), and the markers
    this redrive still has to write.

    Markers are written at each checkpoint for the records below the watermark, through the
    dead-letter producer, and acknowledged before the group's position is committed past them:
    whatever crashes in between, a record is either offered again or known to be done.
    """

    def __init__(self, topic: str, dead_letters: DeadLetterProducer | None) -> None:
        self.topic = topic
        self.dead_letters = dead_letters
        self.done: set[tuple[int, int]] = set()
        self.pending: dict[int, list[int]] = {}

    def seen(self, msg: Any) -> None:
        mark = marker_of(msg)
        if mark is not None:
            self.done.add(mark)

    def note(self, partition: int, offset: int) -> None:
        self.pending.setdefault(partition, []).append(offset)

    async def write(self, watermarks: Mapping[int, int]) -> None:
        """Write markers for the noted records now complete, and wait for the broker to have them.

        Only acknowledged markers leave `pending`, so a failed write is tried again at the next
        checkpoint, and the position is not committed until it succeeds."""
        ready = {
            p: [o for o in offsets if o < wm]
            for p, offsets in self.pending.items()
            if (wm := watermarks.get(p)) is not None
        }
        ready = {p: offsets for p, offsets in ready.items() if offsets}
        if not ready:
            return
        assert self.dead_letters is not None
        results = await asyncio.gather(
            *(self._write_one(p, o) for p, offsets in ready.items() for o in offsets),
            return_exceptions=True,
        )
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            raise KafkaError(
                f"could not write redrive markers to {self.topic!r} ({failed}); the redrive position "
                "was not committed, so a rerun offers these dead letters again"
            ) from failed
        for p, offsets in ready.items():
            written = set(offsets)
            self.pending[p] = [o for o in self.pending[p] if o not in written]

    async def _write_one(self, partition: int, offset: int) -> None:
        assert self.dead_letters is not None
        await self.dead_letters.write(
            value=None,
            key=None,
            headers=[
                ("streamproc.dlq.version", DLQ_VERSION.encode()),
                (REDRIVEN_HEADER, f"{partition}:{offset}".encode()),
            ],
            partition=partition,
        )


def redrive_checkpoint(
    reader: RangeReader, marks: RedriveMarks
) -> Callable[[dict[int, int], bool], Awaitable[None]]:
    """Redrive's checkpoint: markers first, acknowledged, then the group's position, committed on
    the reader's consumer thread (asynchronously, except the final one), so the event loop never
    waits on the broker and the position never passes a record whose marker is not written."""

    async def checkpoint(watermarks: dict[int, int], final: bool) -> None:
        if not watermarks:
            return
        await marks.write(watermarks)
        offsets = [TopicPartition(reader.topic, p, o) for p, o in watermarks.items()]
        await reader.call(partial(reader.consumer.commit, offsets=offsets, asynchronous=not final))

    return checkpoint


def redrive_handler(
    processor: EventProcessor,
    flt: DeadLetterFilter,
    summary: Summary,
    marks: RedriveMarks | None = None,
) -> Callable[[Any, Partition], None]:
    """Takes one dead-letter record: the one delivery it names goes to `processor` again, re-built
    from the original value; markers, filtered and already redriven records are left out."""

    def handle(msg: Any, lane: Partition) -> None:
        if is_marker(msg):
            summary.markers += 1
            processor.leave_out(msg, lane)
            return
        view = DeadLetterView.of(msg)
        if marks is not None and (view.partition, view.offset) in marks.done:
            summary.already_redriven += 1
            processor.leave_out(msg, lane)
            return
        if not flt.matches(view):
            summary.filtered += 1
            processor.leave_out(msg, lane)
            return
        if view.get("value_truncated") is not None:
            # Its value was cut to fit the dead-letter topic: there is nothing whole to send.
            summary.truncated += 1
            log.warning(
                "redrive_value_truncated",
                partition=view.partition,
                offset=view.offset,
                original=f"{view.get('original.topic')}[{view.get('original.partition')}]"
                f"@{view.get('original.offset')}",
                subscription=f"{view.destination}/{view.subscription}",
                value_bytes=view.get("value_truncated"),
            )
            processor.leave_out(msg, lane)
            return
        noted = partial(marks.note, view.partition, view.offset) if marks is not None else None
        again = view.redelivery(noted)
        if again is None:
            summary.not_redrivable += 1
            processor.leave_out(msg, lane)
            return
        processor.process(msg, lane, again)

    return handle


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


Detail = Callable[[Any, DeadLetterView], dict[str, Any]]
"""More to show about one dead-letter or retry record, from the record and its headers."""

_EXCHANGE = ("request", "request_note", "response")


def sample_lines(sample: Mapping[str, Any]) -> list[str]:
    """A sample as `inspect` prints it: one JSON line, then the request to the destination and the
    response, when the sample has them, one part per line."""
    lines = ["  " + dumps({k: v for k, v in sample.items() if k not in _EXCHANGE}).decode()]
    if "response" not in sample:
        return lines
    lines.append("    request to destination:")
    for request in sample.get("request") or ():
        lines.append(f"      {request['method']} {request['url']}")
        lines.append(f"      headers: {dumps(request['headers']).decode()}")
        if request.get("body") is not None:
            lines.append(f"      body: {dumps(request['body']).decode()}")
    if sample.get("request_note"):
        lines.append(f"      ({sample['request_note']})")
    response = sample["response"]
    status = response.get("status")
    lines.append(
        f"    response: {'HTTP ' + str(status) if status is not None else 'no HTTP status'},"
        f" {response.get('error_type')}: {response.get('error')}"
    )
    if response.get("body") is not None:
        lines.append(f"      body: {dumps(response['body']).decode()}")
    return lines


def statuses(values: Iterable[str] | None) -> frozenset[str]:
    """Normalise --status values: 503, 5xx, none."""
    out = set()
    for v in values or ():
        for part in v.split(","):
            part = part.strip().lower()
            if part:
                out.add(part)
    return frozenset(out)
