"""The worker's operations HTTP server: /metrics for Prometheus, /healthz (liveness), /readyz (readiness).

Liveness means the event loop still runs tasks on time: a heartbeat task ticks every second and
/healthz fails when the last tick is too old or came too late (a loop blocked by CPU-bound work),
or when the worker declared a fatal state with `Health.fail`. Readiness means the worker is a
working consumer: it has joined the group (received an assignment, possibly empty), has polled
recently, and its dead-letter producer is healthy. The worker updates a `Readiness` object; this
module only reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from streamproc.logging import flush_suppressed

__all__ = ["Health", "OpsServer", "Readiness"]


class MetricsSettings(Protocol):
    """What the server reads from `Config.metrics`."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


class Health:
    """Liveness: an event-loop heartbeat plus a fatal flag the worker may set."""

    def __init__(
        self,
        *,
        interval: float = 1.0,
        stale_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.stale_after = stale_after
        self._clock = clock
        self.last_beat = clock()
        self.last_lag = 0.0
        self.fatal: str | None = None
        self.on_beat: list[Callable[[], object]] = []

    def beat(self, lag: float = 0.0) -> None:
        self.last_beat = self._clock()
        self.last_lag = lag
        for fn in self.on_beat:
            fn()

    def fail(self, reason: str) -> None:
        """Declare the process broken (e.g. the consumer loop died); /healthz fails from now on."""
        self.fatal = reason

    async def run(self) -> None:
        """Tick forever; the lateness of each wake-up is how long the loop was blocked."""
        while True:
            expected = self._clock() + self.interval
            await asyncio.sleep(self.interval)
            self.beat(max(0.0, self._clock() - expected))

    def status(self) -> tuple[bool, dict[str, Any]]:
        age = self._clock() - self.last_beat
        problems = []
        if self.fatal:
            problems.append(self.fatal)
        if age > self.stale_after:
            problems.append(f"event loop heartbeat is {age:.1f}s old")
        if self.last_lag > self.stale_after:
            problems.append(f"event loop was blocked for {self.last_lag:.1f}s")
        return not problems, {
            "heartbeat_age_s": round(age, 3),
            "loop_lag_s": round(self.last_lag, 3),
            "problems": problems,
        }


class Readiness:
    """What makes a worker ready; updated by the consumer loop and the dead-letter producer."""

    def __init__(
        self,
        *,
        poll_stale_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        gauge: Any = None,
    ) -> None:
        self.poll_stale_after = poll_stale_after
        self._clock = clock
        self._gauge = gauge
        self.joined = False
        self.assigned: int = 0
        self.last_poll: float | None = None
        self.dlq_healthy = True
        self.dlq_problem: str | None = None
        self.stopping = False
        self._published_ready = False

    def set_assignment(self, partitions: int) -> None:
        """Call from the assign/revoke callbacks with the number of partitions now owned."""
        self.joined = True
        self.assigned = partitions
        self._publish()

    def polled(self) -> None:
        """Call after every poll of the consumer (cheap: one clock read, unless readiness changes)."""
        self.last_poll = self._clock()
        if not self._published_ready:
            self._publish()

    def set_dlq(self, healthy: bool, problem: str | None = None) -> None:
        self.dlq_healthy = healthy
        self.dlq_problem = None if healthy else (problem or "dead-letter producer failing")
        self._publish()

    def set_stopping(self) -> None:
        """During shutdown the worker drains; it must not receive a new role in a rollout."""
        self.stopping = True
        self._publish()

    def status(self) -> tuple[bool, dict[str, Any]]:
        problems = []
        if self.stopping:
            problems.append("shutting down")
        if not self.joined:
            problems.append("no partition assignment received yet")
        if self.last_poll is None:
            problems.append("not consuming yet")
        else:
            age = self._clock() - self.last_poll
            if age > self.poll_stale_after:
                problems.append(f"last poll {age:.1f}s ago")
        if not self.dlq_healthy:
            problems.append(self.dlq_problem or "dead-letter producer failing")
        return not problems, {"assigned_partitions": self.assigned, "problems": problems}

    def _publish(self) -> None:
        """Bring the `streamproc_ready` gauge up to date (also called on every heartbeat)."""
        ok = self.status()[0]
        self._published_ready = ok
        if self._gauge is not None:
            self._gauge.set(1 if ok else 0)


class OpsServer:
    """aiohttp server for /metrics, /healthz and /readyz; `start()` returns its base URL."""

    def __init__(
        self,
        settings: MetricsSettings,
        registry: CollectorRegistry,
        readiness: Readiness,
        health: Health | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.readiness = readiness
        self.health = health or Health()
        # Once a second: the ready gauge follows a consumer that stopped polling, and rate-limited
        # log lines get their summary.
        self.health.on_beat.extend([readiness._publish, flush_suppressed])
        self._runner: web.AppRunner | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.url: str | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(self.registry)
        resp = web.Response(body=body)
        # aiohttp refuses a charset inside content_type=, so the header is set whole.
        resp.headers["Content-Type"] = content_type
        return resp

    async def _healthz(self, request: web.Request) -> web.Response:
        ok, detail = self.health.status()
        return web.json_response({"status": "ok" if ok else "failing", **detail}, status=200 if ok else 503)

    async def _readyz(self, request: web.Request) -> web.Response:
        self.readiness._publish()
        ok, detail = self.readiness.status()
        return web.json_response(
            {"status": "ready" if ok else "not ready", **detail}, status=200 if ok else 503
        )

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else self.settings.port
        host = self.settings.host if self.settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        self.url = f"http://{host}:{port}"
        self._heartbeat = asyncio.create_task(self.health.run(), name="streamproc-heartbeat")
        return self.url

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
