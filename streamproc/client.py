"""The one place that sends partner HTTP requests: one small client interface, on aiohttp or pyreqwest.

A bulkhead owns one client (its own connection pool, so a slow partner holds only its own
connections) and calls `send` once per attempt. `send` returns `(status, headers, body)` for any
HTTP answer and raises `SendError` when none came back (timeout, refused, reset); it never
retries or classifies, which is the bulkhead's job.

    aiohttp    sends the URL byte for byte as the action built it.
    pyreqwest  a Rust client (reqwest/hyper) at about a third of aiohttp's CPU per request; it
               normalises URLs the WHATWG way (as Node does), so e.g. a `'` in a query goes out
               as `%27`. A cancelled call keeps running in the background until its timeout,
               which is why every call carries one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal, Protocol

from streamproc.destinations.base import Request

__all__ = ["CLIENTS", "DEFAULT_CLIENT", "ClientName", "HttpClient", "SendError", "make_client"]

ClientName = Literal["aiohttp", "pyreqwest"]
CLIENTS: tuple[ClientName, ...] = ("aiohttp", "pyreqwest")
DEFAULT_CLIENT: ClientName = "pyreqwest"
"""About half the worker's CPU per request of aiohttp (bench/dispatch.py, bench/e2e.py)."""

KEEPALIVE = 30.0
"""Seconds an idle pooled connection is kept."""


class SendError(Exception):
    """No HTTP answer came back (timeout, connection refused or reset): always worth a retry.

    `str(error)` is what a dead letter shows: the kind (`timeout`, or the client's error class),
    then the client's detail when it has one."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class HttpClient(Protocol):
    """What a bulkhead needs from an HTTP client."""

    name: str

    async def send(self, request: Request, timeout: float) -> tuple[int, Mapping[str, str], bytes]:
        """One attempt, bounded by `timeout` seconds in total; raises SendError without an answer."""
        ...

    async def close(self) -> None: ...


class AiohttpClient:
    """aiohttp with a keep-alive pool; URLs are sent exactly as built (no re-quoting)."""

    name = "aiohttp"

    def __init__(self, max_connections: int = 100) -> None:
        import aiohttp
        from yarl import URL

        self._aiohttp = aiohttp
        self._url = URL
        self._max_connections = max_connections
        self._session: Any = None
        self._timeouts: dict[float, Any] = {}
        # A destination with one endpoint sends one URL over and over; building it once saves a
        # yarl parse per request. Bounded, since GET partners put the event in the query.
        self._urls: dict[str, Any] = {}
        self._errors = (aiohttp.ClientError, OSError)

    def _open(self) -> Any:
        aiohttp = self._aiohttp
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, keepalive_timeout=KEEPALIVE, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._session

    async def send(self, request: Request, timeout: float) -> tuple[int, Mapping[str, str], bytes]:
        session = self._session or self._open()
        client_timeout = self._timeouts.get(timeout)
        if client_timeout is None:
            client_timeout = self._timeouts[timeout] = self._aiohttp.ClientTimeout(total=timeout)
        url = self._urls.get(request.url)
        if url is None:
            url = self._url(request.url, encoded=True)
            if len(self._urls) < 256:
                self._urls[request.url] = url
        try:
            async with session.request(
                request.method, url, headers=request.headers, data=request.body, timeout=client_timeout
            ) as resp:
                # Read it all (answers are small) so the connection goes back to the pool.
                body = await resp.read()
                return resp.status, resp.headers, body
        except TimeoutError as exc:
            raise SendError("timeout", str(exc)) from None
        except self._errors as exc:
            raise SendError(type(exc).__name__, str(exc)) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class PyreqwestClient:
    """pyreqwest (reqwest on its own Rust I/O thread); every call carries its timeout."""

    name = "pyreqwest"

    def __init__(self, max_connections: int = 100) -> None:
        from pyreqwest import exceptions

        self._max_connections = max_connections
        self._client: Any = None
        self._timeouts: dict[float, timedelta] = {}
        self._error = exceptions.PyreqwestError

    def _open(self) -> Any:
        from pyreqwest.client import ClientBuilder

        self._client = (
            ClientBuilder()
            .max_connections(self._max_connections)
            .pool_idle_timeout(timedelta(seconds=KEEPALIVE))
            .build()
        )
        return self._client

    async def send(self, request: Request, timeout: float) -> tuple[int, Mapping[str, str], bytes]:
        client = self._client or self._open()
        limit = self._timeouts.get(timeout)
        if limit is None:
            limit = self._timeouts[timeout] = timedelta(seconds=timeout)
        builder = client.request(request.method, request.url).headers(request.headers).timeout(limit)
        if request.body is not None:
            builder = builder.body_bytes(request.body)
        try:
            resp = await builder.build().send()
            body = await resp.bytes()
        except TimeoutError as exc:
            # pyreqwest's timeouts are TimeoutErrors (a slow answer is labelled ConnectTimeoutError).
            raise SendError("timeout", getattr(exc, "message", "") or "") from None
        except self._error as exc:
            raise SendError(type(exc).__name__, getattr(exc, "message", "") or str(exc)) from None
        return resp.status, resp.headers, bytes(body)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()
            # Lets the Rust side finish with the connections before the loop (and maybe the
            # interpreter) goes away: without it the plain asyncio loop can abort at exit.
            await asyncio.sleep(0.05)


def make_client(name: str = DEFAULT_CLIENT, *, max_connections: int = 100) -> HttpClient:
    """The HTTP client called `name` (one of CLIENTS)."""
    if name == "aiohttp":
        return AiohttpClient(max_connections)
    if name == "pyreqwest":
        return PyreqwestClient(max_connections)
    raise ValueError(f"unknown HTTP client {name!r}; one of {', '.join(CLIENTS)}")
