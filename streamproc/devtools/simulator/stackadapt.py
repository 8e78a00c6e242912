"""StackAdapt's wire format in the simulator: its tracking pixel, GET /saq_pxl, answering a 1x1 GIF."""

from __future__ import annotations

import base64

from aiohttp import web

from streamproc.devtools.simulator.faults import OK, Fault, Outcome, error_headers, reason

__all__ = ["PATH", "PIXEL_GIF", "answer"]

PATH = "/saq_pxl"

# 1x1 transparent GIF, as tracking pixels answer.
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

_NO_CACHE = {"Cache-Control": "no-cache, no-store, must-revalidate"}


def answer(outcome: Outcome, fault: Fault | None) -> web.Response:
    """The pixel (with the outcome's status when it is a success), or a plain-text error."""
    if outcome is OK:
        return web.Response(body=PIXEL_GIF, content_type="image/gif", headers=_NO_CACHE)
    status = outcome.status or 200
    if outcome.kind == "ok":
        return web.Response(status=status, body=PIXEL_GIF, content_type="image/gif", headers=_NO_CACHE)
    return web.Response(
        status=status, text=outcome.message or reason(status), headers=error_headers(outcome, fault)
    )
