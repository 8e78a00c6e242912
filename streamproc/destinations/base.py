"""What a partner destination is, as data: settings, actions with fields, presets, and two functions."""

from __future__ import annotations

import dataclasses
import email.utils
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, NamedTuple

import orjson

from streamproc.core import fast_paths
from streamproc.core.fields import Field
from streamproc.core.js import UNDEFINED
from streamproc.errors import RETRYABLE_4XX, is_retryable_status

__all__ = [
    "Action",
    "Batching",
    "BuildContext",
    "Destination",
    "Outcome",
    "Preset",
    "Request",
    "Skip",
    "Verdict",
    "classify_http",
    "fast_constructor",
    "http_classifier",
    "new_request",
    "parse_retry_after",
]


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request to a partner. Header names are lower-case; `body` is the exact bytes sent."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        """The request as `streamproc send` prints it: a JSON body is shown parsed."""
        body: Any = None
        if self.body is not None:
            try:
                body = orjson.loads(self.body)
            except orjson.JSONDecodeError:
                body = self.body.decode("utf-8", "replace")
        return {"method": self.method, "url": self.url, "headers": dict(self.headers), "body": body}


@dataclass(frozen=True, slots=True)
class Skip:
    """An action decided, after mapping, that this event is not for its partner (not an error)."""

    reason: str


class BuildContext(NamedTuple):
    """What a request builder may read besides the validated payload (a named tuple: the router
    makes one per destination an event reaches)."""

    settings: Mapping[str, Any]
    endpoint: str
    event: Mapping[str, Any]
    now: datetime


def fast_constructor(cls: type, names: tuple[str, ...]) -> Callable[..., Any]:
    """A positional constructor for a frozen slotted dataclass that stores each field through its slot
    directly: the generated __init__ goes through object.__setattr__ once per field, which is a
    noticeable share of routing time. Falls back to the class itself if its fields are not `names`
    or it has a __post_init__, or under STREAMPROC_EXACT_ONLY=1 (decided when the module that calls
    it is imported)."""
    fields = tuple(f.name for f in dataclasses.fields(cls))
    if not fast_paths.taken(fast_paths.SLOT_CONSTRUCTORS):
        return cls
    if fields != names or hasattr(cls, "__post_init__") or len(names) not in (4, 8):
        return cls
    setters = [cls.__dict__[name].__set__ for name in names]
    new = object.__new__
    if len(names) == 4:
        s0, s1, s2, s3 = setters

        def make4(a: Any, b: Any, c: Any, d: Any) -> Any:
            obj: Any = new(cls)
            s0(obj, a)
            s1(obj, b)
            s2(obj, c)
            s3(obj, d)
            return obj

        return make4
    s0, s1, s2, s3, s4, s5, s6, s7 = setters

    def make8(a: Any, b: Any, c: Any, d: Any, e: Any, f: Any, g: Any, h: Any) -> Any:
        obj: Any = new(cls)
        s0(obj, a)
        s1(obj, b)
        s2(obj, c)
        s3(obj, d)
        s4(obj, e)
        s5(obj, f)
        s6(obj, g)
        s7(obj, h)
        return obj

    return make8


_request: Callable[[str, str, Mapping[str, str], bytes | None], Request] = fast_constructor(
    Request, ("method", "url", "headers", "body")
)
_join = b"".join


def new_request(method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> Request:
    """`Request(method, url, headers, body)`, quicker (builders make one per delivery), with the body
    right-sized. orjson returns what it writes in a buffer of at least 4 KiB whatever its length
    (orjson 3.12), and a body stays in memory while its delivery is in flight: thousands of them
    on a backlog. Joining it with b"" copies it into a buffer of its own length (a join of more
    than one item always makes a new object) for about 0.2 us."""
    return _request(method, url, headers, None if body is None else _join((body, b"")))


BuildFn = Callable[[Mapping[str, Any], BuildContext], "list[Request] | Skip"]


class Verdict(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a partner's response is to be treated."""

    verdict: Verdict
    status: int | None
    message: str = ""
    retry_after: float | None = None
    partial: bool = False
    """Delivered, but the partner said it kept only part of the request (counted, not retried)."""
    throttled: bool = False
    """The partner said "slow down" in its own words (an in-band code); a 429 counts without it.
    An adaptive concurrency limit is cut on it."""


ClassifyFn = Callable[[int, Mapping[str, str], bytes], Outcome]


@dataclass(frozen=True)
class Batching:
    """How an action's single-event requests combine into one request to the partner's batch endpoint.

    `key` gives the group a request may join and the bytes it adds to a batch that already holds
    others, or None when the request must go alone; `combine` makes one request of a group's
    requests, each event exactly as its own request carried it."""

    max_events: int
    """The partner's largest batch."""
    key: Callable[[Request], tuple[Hashable, int] | None]
    combine: Callable[[Sequence[Request]], Request]


@dataclass(frozen=True)
class Action:
    """One thing a destination can do with an event (Segment's ActionDefinition)."""

    key: str
    title: str
    description: str
    fields: Mapping[str, Field]
    build: BuildFn
    build_exact: BuildFn | None = None
    """`build` without its shortcuts for the usual input (the same requests); None when it has none."""
    default_subscription: str | None = None
    hidden: bool = False
    batching: Batching | None = None
    """Set when the partner takes several events in one request (used only when configured)."""


@dataclass(frozen=True)
class Preset:
    """A ready-made subscription: a trigger, an action and its mapping (defaults already merged)."""

    name: str
    subscribe: str
    action: str
    mapping: Mapping[str, Any]


@dataclass(frozen=True)
class Destination:
    """A partner: everything streamproc knows about it lives in its own module as one of these."""

    type: str
    name: str
    endpoint: str
    settings: Mapping[str, Field]
    actions: Mapping[str, Action]
    presets: tuple[Preset, ...] = ()
    classify: ClassifyFn = field(default=lambda status, headers, body: classify_http(status, headers, body))
    normalize_settings: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    """Checks and normalises settings beyond their field types; raises errors.SettingsError naming the key."""
    presets_enabled_by_default: bool = False
    integration_names: tuple[str, ...] = ()
    """The names Segment's catalog gives this destination as keys of an event's `integrations`
    object (`{"All": false, "Seg": true}`): the first is its name, the others alternative names."""

    def preset(self, name: str) -> Preset | None:
        for p in self.presets:
            if p.name == name:
                return p
        return None

    def default_mapping(self, action: str) -> dict[str, Any]:
        """The default mapping of an action: every field's `default`."""
        return {k: f.default for k, f in self.actions[action].fields.items() if f.default is not UNDEFINED}


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def http_classifier(retryable_4xx: frozenset[int] = RETRYABLE_4XX) -> ClassifyFn:
    """The classification by HTTP status alone: 2xx delivered; the statuses of `retryable_4xx` and
    5xx but 501 retried, with the answer's Retry-After; other statuses permanent. Partners differ
    only in which client errors are worth a retry."""

    def classify(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
        if 200 <= status < 300:
            return Outcome(Verdict.DELIVERED, status)
        retry_after = parse_retry_after(headers.get("retry-after") or headers.get("Retry-After"))
        verdict = Verdict.RETRY if is_retryable_status(status, retryable_4xx) else Verdict.FAIL
        return Outcome(verdict, status, f"HTTP {status}", retry_after)

    return classify


classify_http: ClassifyFn = http_classifier()
"""Segment's rule: 2xx delivered; 408, 423, 429 and 5xx but 501 retried; other statuses permanent."""
