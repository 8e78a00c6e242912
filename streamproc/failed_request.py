"""Rebuilds the partner request a dead letter (or retry record) stands for, and shows the partner's answer.

A dead letter keeps the original event and names the one (destination, subscription) that failed.
Routing that event again through that subscription alone, with the clock at the last attempt, gives
the request that was sent: method, URL, headers and body. The partner's answer comes from the
record's headers: the HTTP status, the start of the response body (PII already replaced when the
record was written), the error type and message. This is what Segment's event delivery view shows
as "request to destination" and "response". Everything is masked (streamproc.masking) unless the
person asked to see secrets or PII.

A request rebuilt with a configuration changed since the failure is the request the configuration
makes now; one that went out inside a batch (TikTok batching) is shown as its own request, which is
exactly the part of the batch this delivery contributed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from streamproc.config import Config
from streamproc.decoding import make_decoder
from streamproc.errors import StreamprocError
from streamproc.kafka.dlq import DeadLetterView
from streamproc.masking import Masker
from streamproc.router import Router

__all__ = ["FailedRequests"]


class FailedRequests:
    """`show(msg, view)`: the request and response of one dead-letter or retry record, masked."""

    def __init__(self, config: Config, masker: Masker) -> None:
        self._at = datetime.now(UTC)
        self._router = Router(config, now=lambda: self._at)
        self._decode: Callable[[bytes], dict[str, Any]] = make_decoder(config.input)
        self._masker = masker

    def show(self, msg: Any, view: DeadLetterView) -> dict[str, Any]:
        """{"request": ..., "response": ...}; `request` is a list of requests (usually one), or
        None with `request_note` saying why it cannot be rebuilt."""
        out: dict[str, Any] = {}
        requests, note = self._rebuild(msg, view)
        out["request"] = None if requests is None else [self._masker.request(r) for r in requests]
        if note is not None:
            out["request_note"] = note
        out["response"] = self.response(view)
        return out

    def response(self, view: DeadLetterView) -> dict[str, Any]:
        status = view.get("http.status")
        return {
            "status": int(status) if status and status.isdigit() else None,
            "body": self._masker.value(view.get("response.body")),
            "error_type": view.error_type,
            "error": self._masker.text(view.get("error.message") or ""),
        }

    def _rebuild(self, msg: Any, view: DeadLetterView) -> tuple[list[dict[str, Any]] | None, str | None]:
        dest, sub = view.destination, view.subscription
        if not dest or not sub:
            return None, "the record names no delivery (the message could not be decoded)"
        value = msg.value()
        if value is None:
            return None, "the record has no value"
        try:
            event = self._decode(value)
        except StreamprocError as exc:
            return None, f"the original value cannot be decoded now: {exc}"
        when = view.time()
        self._at = when if when is not None else datetime.now(UTC)
        deliveries = self._router.route(event, subscriptions={(dest, sub)})
        if not deliveries:
            return None, (
                f"subscription {sub!r} of {dest!r} does not take this event in the configuration now"
                " (removed, disabled, or its trigger changed)"
            )
        delivery = deliveries[0]
        if delivery.error is not None:
            reason = f"{type(delivery.error).__name__}: {self._masker.text(str(delivery.error))}"
            return None, f"the configuration now fails to build it: {reason}"
        if delivery.skipped is not None:
            return None, f"the configuration now skips it: {self._masker.text(delivery.skipped)}"
        return [r.to_json() for r in delivery.requests], None
