"""One request as the simulated partner received it, with what the simulator answered."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["RecordedRequest"]


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
