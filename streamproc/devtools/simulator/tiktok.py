"""TikTok's wire format in the simulator: POST /open_api/v1.3/event/track/ answering its JSON envelope.

Every answer carries `code` (0 on success) and a `request_id`; errors use TikTok's codes for the
HTTP status injected, and a 2xx status with a non-zero code is TikTok's in-band error."""

from __future__ import annotations

import itertools
import time

import orjson
from aiohttp import web

from streamproc.devtools.simulator.faults import OK, Fault, Outcome, error_headers

__all__ = ["ERROR_CODES", "MAX_EVENTS", "PATH", "RequestIds", "answer", "within_batch_limit"]

PATH = "/open_api/v1.3/event/track/"

# TikTok Business API codes used in its JSON error envelope, by the HTTP status injected.
ERROR_CODES = {
    400: (40002, "Invalid parameters"),
    401: (40105, "The access token is invalid or has been revoked."),
    403: (40001, "No permission to operate"),
    404: (40000, "Resource not found"),
    408: (50002, "Request timed out"),
    429: (40100, "Too many requests. Please retry in some time."),
}
SERVER_ERROR = (50000, "System error, please try again later.")
MAX_EVENTS = 1000
"""The most events one /event/track/ request may carry; a larger `data` array is refused (code 40002)."""


class RequestIds:
    """TikTok's request ids: the UTC time to the second, then a counter."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._second = -1
        self._prefix = ""

    def next(self) -> bytes:
        # Formatting the time once per second keeps this off the profile.
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._prefix = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
        return f"{self._prefix}{next(self._counter):012X}".encode()


def within_batch_limit(outcome: Outcome, events: int) -> Outcome:
    """A request with more than MAX_EVENTS events is refused in-band instead of answered normally."""
    if events > MAX_EVENTS and outcome.kind in ("ok", "status"):
        return Outcome(
            kind="ok",
            status=200,
            code=40002,
            message=f"data: at most {MAX_EVENTS} events per request, got {events}",
        )
    return outcome


def answer(outcome: Outcome, fault: Fault | None, request_id: bytes) -> web.Response:
    """The JSON envelope for an answered request (success, in-band error or HTTP error)."""
    if outcome is OK:
        return web.Response(
            body=b'{"code":0,"message":"OK","request_id":"' + request_id + b'","data":{}}',
            content_type="application/json",
        )
    status = outcome.status or 200
    if outcome.kind == "ok" and not outcome.code:
        code, message = 0, outcome.message or "OK"
    elif outcome.code is not None:
        code, message = outcome.code, outcome.message or "Error"
    else:
        default = ERROR_CODES.get(status, SERVER_ERROR if status >= 500 else (40000, "Error"))
        code, message = default[0], outcome.message or default[1]
    body = orjson.dumps({"code": code, "message": message, "request_id": request_id.decode(), "data": {}})
    headers = error_headers(outcome, fault) if status >= 400 else None
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)
