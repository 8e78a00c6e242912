"""The partner simulator's server: the three partners' endpoints on one base URL, recording every
request and injecting faults, with its /_sim/ control API."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import random
import signal
import socket
import struct
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import orjson
from aiohttp import web

from streamproc.devtools.simulator import seg, stackadapt, tiktok
from streamproc.devtools.simulator.faults import (
    OK,
    TOO_MANY,
    Fault,
    Outcome,
    OutcomeKind,
    fault_plan,
)
from streamproc.devtools.simulator.recording import RecordedRequest

__all__ = ["PARTNERS", "PARTNER_ALIASES", "PartnerSimulator", "canonical_partner", "serve"]

PARTNERS = ("stackadapt", "tiktok", "seg")
# Destination type names and short forms people type, mapped to the simulator's partner names.
PARTNER_ALIASES = {
    "stackadapt": "stackadapt",
    "tiktok": "tiktok",
    "tiktok-offline-conversions": "tiktok",
    "seg": "seg",
}

Answer = Callable[[Outcome, Fault | None], web.Response]


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
        self._tiktok_ids = tiktok.RequestIds()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None
        self.app = self._build_app()

    # -- lifecycle -------------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get(stackadapt.PATH, self._stackadapt)
        app.router.add_post(tiktok.PATH, self._tiktok)
        app.router.add_post(tiktok.PATH.rstrip("/"), self._tiktok)
        app.router.add_post(seg.ROUTE, self._seg)
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

    def fault(self, partner: str, **spec: Any) -> None:
        """Replace `partner`'s faults ("stackadapt", "tiktok", "seg", or "*" for all three) with the
        plan `spec` describes: the keyword arguments of `fault_plan` (sequence, then, down,
        retry_after, latency, hang, capacity, errors)."""
        plan = fault_plan(**spec)
        for name in _partners(partner):
            # Each partner gets its own sequence to consume, and its own count of requests served.
            self._faults[name] = dataclasses.replace(plan, sequence=deque(plan.sequence))

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

    async def _respond(
        self,
        request: web.Request,
        record: RecordedRequest,
        outcome: Outcome,
        fault: Fault | None,
        answer: Answer,
    ) -> web.StreamResponse:
        if outcome.kind in ("timeout", "reset"):
            return await self._misbehave(request, record, outcome, fault)
        response = answer(outcome, fault)
        self._finish(record, response.status, outcome.kind)
        return response

    async def _stackadapt(self, request: web.Request) -> web.StreamResponse:
        record, outcome, fault = await self._receive(request, "stackadapt")
        return await self._respond(request, record, outcome, fault, stackadapt.answer)

    async def _tiktok(self, request: web.Request) -> web.StreamResponse:
        """One request, batched or not: faults apply to the request as a whole (every event in it)."""
        record, outcome, fault = await self._receive(request, "tiktok")
        events = len(record.events())
        if events:
            self._events["tiktok"] += events
        outcome = tiktok.within_batch_limit(outcome, events)
        answer = partial(tiktok.answer, request_id=self._tiktok_ids.next())
        return await self._respond(request, record, outcome, fault, answer)

    async def _seg(self, request: web.Request) -> web.StreamResponse:
        record, outcome, fault = await self._receive(request, "seg")
        outcome = seg.for_operation(outcome, request.match_info["operation"])
        return await self._respond(request, record, outcome, fault, seg.answer)

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        record, _, _ = await self._receive(request, "unknown")
        self._finish(record, 404, "status")
        return web.Response(status=404, text=f"no partner serves {request.method} {request.path}")

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


async def serve(host: str, port: int, *, seed: int | None = None, record: bool = True) -> None:
    """Serve the simulator on host:port until SIGINT or SIGTERM; the base URL goes to stdout."""
    simulator = PartnerSimulator(seed=seed, record=record)
    base_url = await simulator.start(host, port)
    # The base URL on stdout lets a parent process start the simulator with --port 0 and read it.
    print(base_url, flush=True)
    print(f"partner simulator listening on {base_url} (control API: {base_url}/_sim/)", file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await simulator.stop()


def _partners(name: str) -> tuple[str, ...]:
    return PARTNERS if name.strip() in ("*", "all") else (canonical_partner(name),)


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


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
