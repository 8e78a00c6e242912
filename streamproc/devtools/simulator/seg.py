"""Seg's wire format in the simulator: POST /segment/{websiteId}/{operation}, 204 on success.

The layout is the contract streamproc defines for Seg (README, "Seg's request layout")."""

from __future__ import annotations

from aiohttp import web

from streamproc.devtools.simulator.faults import OK, Fault, Outcome, error_headers, reason

__all__ = ["OPERATIONS", "ROUTE", "answer", "for_operation"]

ROUTE = "/segment/{website_id}/{operation}"
OPERATIONS = frozenset({"identify", "track", "page", "alias"})


def for_operation(outcome: Outcome, operation: str) -> Outcome:
    """A normal answer to an operation Seg does not have is a 404."""
    if outcome is OK and operation not in OPERATIONS:
        return Outcome(kind="status", status=404, message="unknown operation")
    return outcome


def answer(outcome: Outcome, fault: Fault | None) -> web.Response:
    """An empty success (204 unless the outcome says otherwise), or a JSON error body."""
    if outcome.kind == "ok":
        return web.Response(status=outcome.status or 204)
    status = outcome.status or 500
    return web.json_response(
        {"error": outcome.message or reason(status)}, status=status, headers=error_headers(outcome, fault)
    )
