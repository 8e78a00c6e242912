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
import concurrent.futures
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

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
    """The HTTP server for /metrics, /healthz and /readyz; `start()` returns its base URL.

    It is the standard library's threading server (aiohttp's would add about 8 MB to every worker
    for three GET routes). Requests are read on its threads, but every answer is made on the event
    loop, where the metrics are updated, so a scrape never sees one half-updated; a loop that does
    not answer within ANSWER_TIMEOUT gets a 503 (for /healthz: the loop is blocked)."""

    ANSWER_TIMEOUT = 2.0
    """Seconds a request waits for the event loop: under the Helm chart's probe timeout (3 s), so a
    blocked loop fails the probe with a 503 rather than a hung connection."""

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
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.url: str | None = None

    def answer(self, path: str, accept: str) -> tuple[int, str, bytes]:
        """(status, content type, body) of a GET of `path`; called on the event loop."""
        if path == "/metrics":
            encoder, content_type = choose_encoder(accept)
            return 200, content_type, encoder(self.registry)
        if path == "/healthz":
            ok, detail = self.health.status()
            return _json(200 if ok else 503, {"status": "ok" if ok else "failing", **detail})
        if path == "/readyz":
            self.readiness._publish()
            ok, detail = self.readiness.status()
            return _json(200 if ok else 503, {"status": "ready" if ok else "not ready", **detail})
        return 404, "text/plain; charset=utf-8", b"404: Not Found"

    async def start(self) -> str:
        loop = asyncio.get_running_loop()
        host = self.settings.host
        server_class = _Server6 if ":" in host else _Server
        self._httpd = server_class((host, self.settings.port), _handler(self, loop))
        port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.2,), name="ops-server", daemon=True
        )
        self._thread.start()
        shown = host if host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        self.url = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
        self._heartbeat = asyncio.create_task(self.health.run(), name="streamproc-heartbeat")
        return self.url

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        if self._httpd is not None:
            httpd, self._httpd = self._httpd, None
            # shutdown() waits for serve_forever to notice (one poll interval): off the loop.
            await asyncio.to_thread(httpd.shutdown)
            httpd.server_close()
            self._thread = None


def _json(status: int, data: dict[str, Any]) -> tuple[int, str, bytes]:
    # json.dumps, as aiohttp's json_response wrote it: the same bytes as before for any reader.
    return status, "application/json; charset=utf-8", json.dumps(data).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


class _Server6(_Server):
    address_family = socket.AF_INET6


def _handler(server: OpsServer, loop: asyncio.AbstractEventLoop) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # A connection that sends nothing for this long is closed (a kept-alive scraper reconnects).
        timeout = 60

        def do_GET(self) -> None:
            self._respond(with_body=True)

        def do_HEAD(self) -> None:
            self._respond(with_body=False)

        def _respond(self, *, with_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            accept = self.headers.get("Accept", "")
            answered: concurrent.futures.Future[tuple[int, str, bytes]] = concurrent.futures.Future()

            def make() -> None:
                try:
                    answered.set_result(server.answer(path, accept))
                except Exception as exc:  # shown as a 500, never crashes the loop
                    answered.set_exception(exc)

            try:
                loop.call_soon_threadsafe(make)
                status, content_type, body = answered.result(OpsServer.ANSWER_TIMEOUT)
            except concurrent.futures.TimeoutError:
                status, content_type = 503, "text/plain; charset=utf-8"
                body = f"the event loop did not answer within {OpsServer.ANSWER_TIMEOUT:g}s\n".encode()
            except RuntimeError:  # the loop is closed: the worker is stopping
                status, content_type, body = 503, "text/plain; charset=utf-8", b"stopping\n"
            except Exception as exc:
                status, content_type = 500, "text/plain; charset=utf-8"
                body = f"{type(exc).__name__}\n".encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # no access log
            pass

    return Handler
