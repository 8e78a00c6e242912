"""Fault injection for the partner simulator: outcomes, latencies, and one partner's fault plan."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

__all__ = [
    "OK",
    "TOO_MANY",
    "Fault",
    "Latency",
    "Outcome",
    "OutcomeKind",
    "error_headers",
    "fault_plan",
    "reason",
]

OutcomeKind = Literal["ok", "status", "timeout", "reset"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the simulator does with one request.

    kind "ok": the partner's normal answer (status defaults to the partner's success status);
    "status": answer `status` with the partner's error body (TikTok: its JSON envelope with `code`);
    "timeout": hold the request without answering for `hang` seconds (longer than any client timeout);
    "reset": close the connection without answering.
    """

    kind: OutcomeKind = "ok"
    status: int | None = None
    code: int | None = None  # TikTok envelope code; non-zero with a 2xx status models TikTok's in-band errors
    message: str | None = None
    retry_after: str | None = None

    @classmethod
    def parse(cls, spec: Outcome | int | str | Mapping[str, Any]) -> Outcome:
        """Accepts 503, "503", "ok", "timeout", "reset", or {"status": 200, "code": 40100, ...}."""
        if isinstance(spec, Outcome):
            return spec
        if isinstance(spec, bool):
            raise ValueError(f"not an outcome: {spec!r}")
        if isinstance(spec, int):
            return cls._for_status(spec)
        if isinstance(spec, str):
            word = spec.strip().lower()
            if word in ("ok", "timeout", "reset"):
                return cls(kind=word)  # type: ignore[arg-type]
            if word in ("hang",):
                return cls(kind="timeout")
            if word.isdigit():
                return cls._for_status(int(word))
            raise ValueError(f"not an outcome: {spec!r} (use a status, 'ok', 'timeout' or 'reset')")
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"kind", "status", "code", "message", "retry_after"}
            if unknown:
                raise ValueError(f"unknown outcome keys: {sorted(unknown)}")
            status = spec.get("status")
            if status is not None:
                status = int(status)
                kind = cls._for_status(status).kind
            else:
                kind = "ok"
            if "kind" in spec:
                kind = spec["kind"]
                if kind not in ("ok", "status", "timeout", "reset"):
                    raise ValueError(f"unknown outcome kind {kind!r}")
                if kind == "status" and status is None:
                    raise ValueError("an outcome of kind 'status' needs a status")
            retry_after = spec.get("retry_after")
            return cls(
                kind=kind,
                status=status,
                code=int(spec["code"]) if spec.get("code") is not None else None,
                message=spec.get("message"),
                retry_after=None if retry_after is None else str(retry_after),
            )
        raise ValueError(f"not an outcome: {spec!r}")

    @classmethod
    def _for_status(cls, status: int) -> Outcome:
        if not 100 <= status <= 599:
            raise ValueError(f"not an HTTP status: {status}")
        return cls(kind="ok" if 200 <= status < 300 else "status", status=status)

    def to_json(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (
                ("kind", self.kind),
                ("status", self.status),
                ("code", self.code),
                ("message", self.message),
                ("retry_after", self.retry_after),
            )
            if v is not None
        }


OK = Outcome()
TOO_MANY = Outcome(kind="status", status=429, message="too many concurrent requests")


@dataclass(frozen=True, slots=True)
class Latency:
    """A delay added before answering: fixed, uniform between two bounds, or exponential (milliseconds)."""

    kind: Literal["fixed", "uniform", "exponential"] = "fixed"
    ms: float = 0.0  # fixed delay, or the mean of the exponential
    min_ms: float = 0.0
    max_ms: float | None = None  # uniform upper bound; cap for the exponential

    @classmethod
    def fixed(cls, ms: float) -> Latency:
        return cls("fixed", ms=float(ms))

    @classmethod
    def uniform(cls, min_ms: float, max_ms: float) -> Latency:
        if max_ms < min_ms:
            raise ValueError("uniform latency needs min_ms <= max_ms")
        return cls("uniform", min_ms=float(min_ms), max_ms=float(max_ms))

    @classmethod
    def exponential(cls, mean_ms: float, max_ms: float | None = None) -> Latency:
        if mean_ms <= 0:
            raise ValueError("exponential latency needs mean_ms > 0")
        return cls("exponential", ms=float(mean_ms), max_ms=None if max_ms is None else float(max_ms))

    @classmethod
    def parse(cls, spec: Latency | float | int | Mapping[str, Any]) -> Latency:
        """Accepts milliseconds (fixed) or {"kind": "fixed", "ms": 20} / {"kind": "uniform", "min_ms": 5,
        "max_ms": 50} / {"kind": "exponential", "mean_ms": 20, "max_ms": 500}."""
        if isinstance(spec, Latency):
            return spec
        if isinstance(spec, int | float) and not isinstance(spec, bool):
            return cls.fixed(spec)
        if isinstance(spec, Mapping):
            kind = spec.get("kind", "fixed")
            if kind == "fixed":
                return cls.fixed(spec["ms"])
            if kind == "uniform":
                return cls.uniform(spec["min_ms"], spec["max_ms"])
            if kind == "exponential":
                return cls.exponential(spec.get("mean_ms", spec.get("ms", 0)), spec.get("max_ms"))
            raise ValueError(f"unknown latency kind {kind!r}")
        raise ValueError(f"not a latency: {spec!r}")

    def sample(self, rng: random.Random) -> float:
        """One delay in seconds."""
        if self.kind == "fixed":
            ms = self.ms
        elif self.kind == "uniform":
            ms = rng.uniform(self.min_ms, self.max_ms if self.max_ms is not None else self.min_ms)
        else:
            ms = rng.expovariate(1.0 / self.ms)
            if self.max_ms is not None:
                ms = min(ms, self.max_ms)
        return ms / 1000.0

    def to_json(self) -> dict[str, Any]:
        if self.kind == "fixed":
            return {"kind": "fixed", "ms": self.ms}
        if self.kind == "uniform":
            return {"kind": "uniform", "min_ms": self.min_ms, "max_ms": self.max_ms}
        out: dict[str, Any] = {"kind": "exponential", "mean_ms": self.ms}
        if self.max_ms is not None:
            out["max_ms"] = self.max_ms
        return out


@dataclass(slots=True)
class Fault:
    """Faults injected for one partner: a queue of outcomes for the next requests, then `then` for all
    later ones (None: answer normally), a Retry-After value on error answers, and a latency.
    With `capacity`, a request that arrives while that many are being served is answered 429 at once
    (a partner that serves N requests at a time)."""

    sequence: deque[Outcome] = field(default_factory=deque)
    then: Outcome | None = None
    retry_after: str | None = None
    latency: Latency | None = None
    hang: float = 3600.0
    capacity: int | None = None
    errors: tuple[tuple[float, Outcome], ...] = ()
    """(fraction, outcome) pairs: after the sequence, each request gets each outcome with that chance."""
    active: int = 0

    def next_outcome(self, rng: random.Random) -> Outcome:
        if self.sequence:
            return self.sequence.popleft()
        if self.errors:
            draw = rng.random()
            for fraction, outcome in self.errors:
                if draw < fraction:
                    return outcome
                draw -= fraction
        return self.then if self.then is not None else OK

    def to_json(self) -> dict[str, Any]:
        return {
            "sequence": [o.to_json() for o in self.sequence],
            "then": None if self.then is None else self.then.to_json(),
            "retry_after": self.retry_after,
            "latency": None if self.latency is None else self.latency.to_json(),
            "hang": self.hang,
            "capacity": self.capacity,
            "errors": {str(o.status): f for f, o in self.errors},
        }


def fault_plan(
    *,
    sequence: Iterable[Outcome | int | str | Mapping[str, Any]] = (),
    then: Outcome | int | str | Mapping[str, Any] | None = None,
    down: bool | int | str = False,
    retry_after: str | int | float | None = None,
    latency: Latency | float | Mapping[str, Any] | None = None,
    hang: float = 3600.0,
    capacity: int | None = None,
    errors: Mapping[int | str, float] | None = None,
) -> Fault:
    """One partner's fault plan; ValueError names what is wrong.

    sequence: outcomes for the next requests, in order, e.g. [503, 503, 503] (then normal answers),
        "timeout" (hold without answering for `hang` s), "reset" (close the connection), "ok",
        or {"status": 200, "code": 40100} (TikTok's in-band error).
    then: outcome for every request after the sequence (default: normal answers).
    down: shorthand for then=503 (True), then=<status>, then="reset"/"timeout".
    retry_after: Retry-After header value on error answers (seconds or an HTTP-date).
    latency: delay before every answer: milliseconds, Latency.uniform(5, 50), {"kind": ...}.
    capacity: requests served at once (each is served for its `latency`); one more is answered
        429 at once (with `retry_after` if given). Counted per partner.
    errors: HTTP status -> fraction of the requests after the sequence answered with it, drawn
        per request from the simulator's seeded random source, e.g. {503: 0.02, 429: 0.01}.
    """
    if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1):
        raise ValueError("capacity must be a positive integer")
    drawn = tuple((float(f), Outcome.parse(int(status))) for status, f in (errors or {}).items())
    if any(not 0 <= f <= 1 for f, _ in drawn) or sum(f for f, _ in drawn) > 1:
        raise ValueError("errors: each fraction between 0 and 1, and at most 1 together")
    after = None if then is None else Outcome.parse(then)
    if down is not False:
        after = Outcome.parse(503 if down is True else down)
    return Fault(
        sequence=deque(Outcome.parse(o) for o in sequence),
        then=after,
        retry_after=None if retry_after is None else _retry_after_text(retry_after),
        latency=None if latency is None else Latency.parse(latency),
        hang=float(hang),
        capacity=capacity,
        errors=drawn,
    )


def _retry_after_text(value: str | int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def error_headers(outcome: Outcome, fault: Fault | None) -> dict[str, str] | None:
    """The Retry-After header of an error answer, from the outcome or else the partner's fault."""
    retry_after = outcome.retry_after or (fault.retry_after if fault is not None else None)
    return {"Retry-After": retry_after} if retry_after else None


def reason(status: int) -> str:
    """The standard reason phrase of an HTTP status ("Error" for one without)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
