"""Drives a partner simulator running in another process through its /_sim/ control API."""

from __future__ import annotations

from collections import deque
from typing import Any

import orjson
from aiohttp import ClientSession

from streamproc.devtools.simulator.faults import Latency, Outcome

__all__ = ["SimulatorClient"]


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
