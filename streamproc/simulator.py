"""Partner simulator: StackAdapt, TikTok and Seg wire formats on one base URL, with recording and faults."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import random
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import ClientSession, web

PARTNERS = ("stackadapt", "tiktok", "seg")
# Destination type names and short forms people type, mapped to the simulator's partner names.
PARTNER_ALIASES = {
    "stackadapt": "stackadapt",
    "tiktok": "tiktok",
    "tiktok-offline-conversions": "tiktok",
    "seg": "seg",
}

STACKADAPT_PATH = "/saq_pxl"
TIKTOK_PATH = "/open_api/v1.3/event/track/"
SEG_OPERATIONS = frozenset({"identify", "track", "page", "alias"})

# 1x1 transparent GIF, as tracking pixels answer.
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

# TikTok Business API codes used in its JSON error envelope, by the HTTP status injected.
TIKTOK_ERROR_CODES = {
    400: (40002, "Invalid parameters"),
    401: (40105, "The access token is invalid or has been revoked."),
    403: (40001, "No permission to operate"),
    404: (40000, "Resource not found"),
    408: (50002, "Request timed out"),
    429: (40100, "Too many requests. Please retry in some time."),
}
TIKTOK_SERVER_ERROR = (50000, "System error, please try again later.")
TIKTOK_MAX_EVENTS = 1000
"""The most events one /event/track/ request may carry; a larger `data` array is refused (code 40002)."""

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


class RecordedRequest:
    """One request as the partner received it, with what the simulator answered."""

    __slots__ = (
        "_headers",
        "attempt",
        "body",
        "host",
        "method",
        "outcome",
        "partner",
        "raw_path",
        "received_at",
        "seq",
        "status",
    )

    def __init__(
        self,
        seq: int,
        partner: str,
        method: str,
        raw_path: str,
        host: str,
        headers: Mapping[str, str],
        body: bytes,
        received_at: float,
        attempt: int,
    ) -> None:
        self.seq = seq
        self.partner = partner
        self.method = method
        self.raw_path = raw_path
        self.host = host
        self._headers = headers
        self.body = body
        self.received_at = received_at  # time.time() when the request arrived
        # 1 for the first identical request, 2 for its first retry, ...; 0 when not recording.
        self.attempt = attempt
        self.status: int | None = None  # None when the simulator hung or reset instead of answering
        # "ok" / "status": answered; "timeout" / "reset": fault injected; "client_gone": the client
        # disconnected while an injected latency was delaying the answer.
        self.outcome: str = "ok"

    @property
    def path(self) -> str:
        return self.raw_path.partition("?")[0]

    @property
    def query(self) -> str:
        """The raw query string, exactly as sent (no decoding)."""
        return self.raw_path.partition("?")[2]

    @property
    def url(self) -> str:
        return f"http://{self.host}{self.raw_path}"

    @property
    def headers(self) -> dict[str, str]:
        """Header names lower-cased; a repeated header keeps its last value."""
        return {k.lower(): v for k, v in self._headers.items()}

    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)

    def events(self) -> list[Any]:
        """The events of a TikTok request (its `data` array, one item unless batched); [] otherwise."""
        if self.partner != "tiktok":
            return []
        try:
            data = orjson.loads(self.body).get("data")
        except (orjson.JSONDecodeError, AttributeError):
            return []
        return data if isinstance(data, list) else []

    def to_json(self) -> dict[str, Any]:
        try:
            text: str | None = self.body.decode()
        except UnicodeDecodeError:
            text = None
        return {
            "seq": self.seq,
            "partner": self.partner,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "url": self.url,
            "headers": self.headers,
            "body": text,
            "body_base64": base64.b64encode(self.body).decode(),
            "received_at": self.received_at,
            "attempt": self.attempt,
            "status": self.status,
            "outcome": self.outcome,
        }

    def __repr__(self) -> str:
        return (
            f"RecordedRequest({self.partner} {self.method} {self.raw_path[:80]} attempt={self.attempt}"
            f" status={self.status} outcome={self.outcome})"
        )


def canonical_partner(name: str) -> str:
    try:
        return PARTNER_ALIASES[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown partner {name!r}; one of {', '.join(PARTNERS)}") from None


class PartnerSimulator:
    """The three partners' HTTP endpoints on one base URL, recording every request and injecting faults.

    Identical requests (same partner, method, path with query and body) count as attempts of the same
    delivery: retries resend the same bytes.
    """

    def __init__(self, *, seed: int | None = None, record: bool = True) -> None:
        """record=False keeps only the statistics (long benchmarks would otherwise hold every body)."""
        self.record = record
        self.requests: list[RecordedRequest] = []
        self._total = 0
        self._faults: dict[str, Fault] = {}
        self._attempts: dict[tuple[str, str, bytes], int] = {}
        self._stats: dict[str, Counter[str]] = {p: Counter() for p in (*PARTNERS, "unknown")}
        self._events: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._seq = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._request_id_second = -1
        self._request_id_prefix = ""
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None
        self.app = self._build_app()

    # -- lifecycle -------------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get(STACKADAPT_PATH, self._stackadapt)
        app.router.add_post(TIKTOK_PATH, self._tiktok)
        app.router.add_post(TIKTOK_PATH.rstrip("/"), self._tiktok)
        app.router.add_post("/segment/{website_id}/{operation}", self._seg)
        app.router.add_get("/_sim/requests", self._api_requests)
        app.router.add_delete("/_sim/requests", self._api_clear_requests)
        app.router.add_get("/_sim/faults", self._api_faults)
        app.router.add_post("/_sim/faults", self._api_set_faults)
        app.router.add_delete("/_sim/faults", self._api_clear_faults)
        app.router.add_get("/_sim/stats", self._api_stats)
        app.router.add_post("/_sim/reset", self._api_reset)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0 picks a free port) and return the base URL."""
        self._stopping = asyncio.Event()
        # No access log: the simulator is a benchmark target and logging each request would dominate.
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        bound = server.sockets[0].getsockname()  # type: ignore[attr-defined]
        url_host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.base_url = f"http://{url_host}:{bound[1]}"
        return self.base_url

    async def stop(self) -> None:
        """Stop listening; requests held by a timeout fault are released and their connections closed."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> PartnerSimulator:
        if self.base_url is None or self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- faults and recording --------------------------------------------------------------------------

    def fault(
        self,
        partner: str,
        *,
        sequence: Iterable[Outcome | int | str | Mapping[str, Any]] = (),
        then: Outcome | int | str | Mapping[str, Any] | None = None,
        down: bool | int | str = False,
        retry_after: str | int | float | None = None,
        latency: Latency | float | Mapping[str, Any] | None = None,
        hang: float = 3600.0,
        capacity: int | None = None,
        errors: Mapping[int | str, float] | None = None,
    ) -> None:
        """Replace `partner`'s faults ("stackadapt", "tiktok", "seg", or "*" for all three).

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
        if capacity is not None and (
            isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1
        ):
            raise ValueError("capacity must be a positive integer")
        drawn = tuple((float(f), Outcome.parse(int(status))) for status, f in (errors or {}).items())
        if any(not 0 <= f <= 1 for f, _ in drawn) or sum(f for f, _ in drawn) > 1:
            raise ValueError("errors: each fraction between 0 and 1, and at most 1 together")
        outcomes = deque(Outcome.parse(o) for o in sequence)
        after = None if then is None else Outcome.parse(then)
        if down is not False:
            after = Outcome.parse(503 if down is True else down)
        spec = Fault(
            sequence=outcomes,
            then=after,
            retry_after=None if retry_after is None else _retry_after_text(retry_after),
            latency=None if latency is None else Latency.parse(latency),
            hang=float(hang),
            capacity=capacity,
            errors=drawn,
        )
        for name in _partners(partner):
            self._faults[name] = Fault(
                sequence=deque(spec.sequence),
                then=spec.then,
                retry_after=spec.retry_after,
                latency=spec.latency,
                hang=spec.hang,
                capacity=spec.capacity,
                errors=spec.errors,
            )

    def clear_faults(self, partner: str | None = None) -> None:
        if partner is None:
            self._faults.clear()
        else:
            for name in _partners(partner):
                self._faults.pop(name, None)

    def clear_requests(self) -> None:
        self.requests.clear()
        self._attempts.clear()
        self._total = 0
        for counter in self._stats.values():
            counter.clear()
        self._events.clear()

    def clear(self) -> None:
        """Forget recorded requests, statistics and every fault."""
        self.clear_requests()
        self.clear_faults()

    def requests_for(self, partner: str) -> list[RecordedRequest]:
        name = "unknown" if partner == "unknown" else canonical_partner(partner)
        return [r for r in self.requests if r.partner == name]

    def stats(self) -> dict[str, Any]:
        """Answers per partner keyed by status (or "timeout"/"reset"), and the total; once TikTok
        requests came, `events` counts the events in their `data` arrays (batches hold several)."""
        partners = {p: dict(c) for p, c in self._stats.items() if c}
        out: dict[str, Any] = {"total": self._total, "partners": partners}
        if self._events:
            out["events"] = dict(self._events)
        return out

    def faults(self) -> dict[str, Any]:
        return {p: f.to_json() for p, f in self._faults.items()}

    # -- partner endpoints -----------------------------------------------------------------------------

    async def _receive(
        self, request: web.Request, partner: str
    ) -> tuple[RecordedRequest, Outcome, Fault | None]:
        body = await request.read()
        raw_path = request.raw_path
        self._total += 1
        if self.record:
            key = (request.method, raw_path, body)
            attempt = self._attempts.get(key, 0) + 1
            self._attempts[key] = attempt
        else:
            attempt = 0
        record = RecordedRequest(
            next(self._seq),
            partner,
            request.method,
            raw_path,
            request.host,
            request.headers,
            body,
            time.time(),
            attempt,
        )
        if self.record:
            self.requests.append(record)
        fault = self._faults.get(partner)
        if fault is None:
            return record, OK, None
        if fault.capacity is not None and fault.active >= fault.capacity:
            return record, TOO_MANY, fault
        outcome = fault.next_outcome(self._rng)
        if fault.latency is not None:
            fault.active += 1
            try:
                await asyncio.sleep(fault.latency.sample(self._rng))
            except asyncio.CancelledError:
                # The client hung up (its timeout) before the delayed answer was due.
                record.outcome = "client_gone"
                self._stats[partner]["client_gone"] += 1
                raise
            finally:
                fault.active -= 1
        return record, outcome, fault

    async def _misbehave(
        self, request: web.Request, record: RecordedRequest, outcome: Outcome, fault: Fault | None
    ) -> web.StreamResponse:
        """Carry out a timeout or reset outcome; never answers."""
        record.outcome = outcome.kind
        self._stats[record.partner][outcome.kind] += 1
        if outcome.kind == "timeout":
            hang = fault.hang if fault is not None else 3600.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), hang)
        _reset(request)
        # The connection is gone; aiohttp drops whatever is returned for a closed transport.
        raise asyncio.CancelledError

    def _finish(self, record: RecordedRequest, status: int, kind: OutcomeKind) -> None:
        record.status = status
        record.outcome = kind
        self._stats[record.partner][str(status)] += 1

    async def _stackadapt(self, request: web.Request) -> web.StreamResponse:
        record, outcome, fault = await self._receive(request, "stackadapt")
        if outcome is OK:
            self._finish(record, 200, "ok")
            return web.Response(body=PIXEL_GIF, content_type="image/gif", headers=_NO_CACHE)
        if outcome.kind in ("timeout", "reset"):
            return await self._misbehave(request, record, outcome, fault)
        status = outcome.status or 200
        self._finish(record, status, outcome.kind)
        if outcome.kind == "ok":
            return web.Response(status=status, body=PIXEL_GIF, content_type="image/gif", headers=_NO_CACHE)
        return web.Response(
            status=status,
            text=outcome.message or _reason(status),
            headers=_error_headers(outcome, fault),
        )

    async def _tiktok(self, request: web.Request) -> web.StreamResponse:
        """One request, batched or not: faults apply to the request as a whole (every event in it)."""
        record, outcome, fault = await self._receive(request, "tiktok")
        request_id = self._tiktok_request_id()
        events = _count_tiktok_events(record.body)
        if events:
            self._events["tiktok"] += events
        if events > TIKTOK_MAX_EVENTS and outcome.kind in ("ok", "status"):
            outcome = Outcome(
                kind="ok",
                status=200,
                code=40002,
                message=f"data: at most {TIKTOK_MAX_EVENTS} events per request, got {events}",
            )
        if outcome is OK:
            self._finish(record, 200, "ok")
            return web.Response(
                body=b'{"code":0,"message":"OK","request_id":"' + request_id + b'","data":{}}',
                content_type="application/json",
            )
        if outcome.kind in ("timeout", "reset"):
            return await self._misbehave(request, record, outcome, fault)
        status = outcome.status or 200
        if outcome.kind == "ok" and not outcome.code:
            code, message = 0, outcome.message or "OK"
        elif outcome.code is not None:
            code, message = outcome.code, outcome.message or "Error"
        else:
            default = TIKTOK_ERROR_CODES.get(
                status, TIKTOK_SERVER_ERROR if status >= 500 else (40000, "Error")
            )
            code, message = default[0], outcome.message or default[1]
        self._finish(record, status, outcome.kind)
        body = orjson.dumps({"code": code, "message": message, "request_id": request_id.decode(), "data": {}})
        headers = _error_headers(outcome, fault) if status >= 400 else None
        return web.Response(status=status, body=body, content_type="application/json", headers=headers)

    async def _seg(self, request: web.Request) -> web.StreamResponse:
        record, outcome, fault = await self._receive(request, "seg")
        if outcome.kind in ("timeout", "reset"):
            return await self._misbehave(request, record, outcome, fault)
        if outcome is OK and request.match_info["operation"] not in SEG_OPERATIONS:
            outcome = Outcome(kind="status", status=404, message="unknown operation")
        if outcome.kind == "ok":
            status = outcome.status or 204
            self._finish(record, status, "ok")
            return web.Response(status=status)
        status = outcome.status or 500
        self._finish(record, status, outcome.kind)
        return web.json_response(
            {"error": outcome.message or _reason(status)},
            status=status,
            headers=_error_headers(outcome, fault),
        )

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        record, _, _ = await self._receive(request, "unknown")
        self._finish(record, 404, "status")
        return web.Response(status=404, text=f"no partner serves {request.method} {request.path}")

    def _tiktok_request_id(self) -> bytes:
        # TikTok's ids start with the UTC time; formatting it once per second keeps this off the profile.
        now = int(time.time())
        if now != self._request_id_second:
            self._request_id_second = now
            self._request_id_prefix = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
        return f"{self._request_id_prefix}{next(self._request_ids):012X}".encode()

    # -- control API -----------------------------------------------------------------------------------

    async def _api_requests(self, request: web.Request) -> web.StreamResponse:
        partner = request.query.get("partner")
        since = int(request.query.get("since", "0"))
        chosen: Sequence[RecordedRequest] = self.requests
        if partner:
            try:
                chosen = self.requests_for(partner)
            except ValueError as exc:
                return _bad_request(str(exc))
        return web.Response(
            body=orjson.dumps([r.to_json() for r in chosen if r.seq > since]), content_type="application/json"
        )

    async def _api_clear_requests(self, request: web.Request) -> web.StreamResponse:
        self.clear_requests()
        return web.Response(status=204)

    async def _api_faults(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.faults())

    async def _api_set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            payload = orjson.loads(await request.read())
            specs = payload if isinstance(payload, list) else [payload]
            for spec in specs:
                if not isinstance(spec, dict) or "partner" not in spec:
                    raise ValueError("each fault needs a 'partner'")
                args = dict(spec)
                partner = args.pop("partner")
                unknown = set(args) - {
                    "sequence",
                    "then",
                    "down",
                    "retry_after",
                    "latency",
                    "hang",
                    "capacity",
                    "errors",
                }
                if unknown:
                    raise ValueError(f"unknown fault keys: {sorted(unknown)}")
                self.fault(partner, **args)
        except (ValueError, TypeError, KeyError, orjson.JSONDecodeError) as exc:
            return _bad_request(str(exc))
        return web.json_response(self.faults())

    async def _api_clear_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            self.clear_faults(request.query.get("partner"))
        except ValueError as exc:
            return _bad_request(str(exc))
        return web.Response(status=204)

    async def _api_stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.stats())

    async def _api_reset(self, request: web.Request) -> web.StreamResponse:
        self.clear()
        return web.Response(status=204)


class SimulatorClient:
    """Drives a simulator running in another process through its /_sim/ control API."""

    def __init__(self, base_url: str, session: ClientSession | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> SimulatorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> ClientSession:
        if self._session is None:
            self._session = ClientSession()
        return self._session

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        async with self._http().request(method, f"{self.base_url}/_sim/{path}", **kw) as r:
            raw = await r.read()
            if r.status >= 400:
                raise ValueError(
                    f"simulator refused {method} /_sim/{path}: {r.status} {raw.decode(errors='replace')}"
                )
            return orjson.loads(raw) if raw else None

    async def requests(self, partner: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """Recorded requests as JSON objects (body as text, body_base64 always), oldest first."""
        params = {"since": str(since)} | ({"partner": partner} if partner else {})
        result: list[dict[str, Any]] = await self._call("GET", "requests", params=params)
        return result

    async def fault(self, partner: str, **spec: Any) -> dict[str, Any]:
        """Same arguments as PartnerSimulator.fault; Latency/Outcome values go as their JSON forms."""
        body = {"partner": partner} | {k: _jsonable(v) for k, v in spec.items()}
        result: dict[str, Any] = await self._call("POST", "faults", data=orjson.dumps(body))
        return result

    async def clear_faults(self, partner: str | None = None) -> None:
        await self._call("DELETE", "faults", params={"partner": partner} if partner else None)

    async def clear_requests(self) -> None:
        await self._call("DELETE", "requests")

    async def clear(self) -> None:
        await self._call("POST", "reset")

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "stats")
        return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, Latency | Outcome):
        return value.to_json()
    if isinstance(value, list | tuple | deque):
        return [_jsonable(v) for v in value]
    return value


_NO_CACHE = {"Cache-Control": "no-cache, no-store, must-revalidate"}


def _partners(name: str) -> tuple[str, ...]:
    return PARTNERS if name.strip() in ("*", "all") else (canonical_partner(name),)


def _retry_after_text(value: str | int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _error_headers(outcome: Outcome, fault: Fault | None) -> dict[str, str] | None:
    retry_after = outcome.retry_after or (fault.retry_after if fault is not None else None)
    return {"Retry-After": retry_after} if retry_after else None


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def _count_tiktok_events(body: bytes) -> int:
    try:
        data = orjson.loads(body).get("data")
    except (orjson.JSONDecodeError, AttributeError):
        return 0
    return len(data) if isinstance(data, list) else 0


def _reset(request: web.Request) -> None:
    """Close the connection so the client sees a reset (RST), not an orderly end of stream."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
