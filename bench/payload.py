"""Measures payload validation and request building per event (prints microseconds per payload)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from streamproc.destinations import seg, stackadapt, tiktok_offline
from streamproc.destinations.base import BuildContext
from streamproc.destinations.runtime import CompiledAction
from streamproc.mapping import compile as compile_mapping

EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Order Completed",
    "messageId": "m-1",
    "timestamp": "2024-03-15T10:30:00.000Z",
    "userId": "User-1",
    "anonymousId": "anon-1",
    "properties": {
        "email": "Buyer@Example.com",
        "phone": "+1 (555) 123-4567",
        "order_id": "O-1",
        "revenue": 59.9,
        "currency": "USD",
        "products": [
            {"product_id": "p1", "price": 19.95, "quantity": 2, "name": "Sock", "category": "Wear"},
            {"product_id": "p2", "price": 20, "quantity": 1, "name": "Hat", "category": "Wear"},
        ],
    },
    "traits": {"first_name": "Ada", "last_name": "L"},
    "context": {
        "ip": "203.0.113.7",
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
        "locale": "en-US",
        "page": {"url": "https://shop.example/checkout?ttclid=CLK", "title": "Checkout", "referrer": ""},
        "campaign": {"source": "newsletter"},
    },
}


def _per_call(fn: Callable[[], Any], number: int = 2000, repeat: int = 7) -> float:
    """Best of several runs, in microseconds of CPU time per call."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(number):
            fn()
        best = min(best, time.process_time() - start)
    return best / number * 1e6


def _calibration_ns() -> float:
    """CPU time of a bare Python loop step, to judge the numbers on a busy machine (idle: ~30 ns)."""
    start = time.process_time()
    x = 0
    for i in range(1_000_000):
        x += i
    return (time.process_time() - start) * 1e3


def main() -> None:
    print(f"machine: {_calibration_ns():.0f} ns per Python loop step (CPU time, not wall clock)")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for destination, preset_name, settings in (
        (tiktok_offline.DESTINATION, "Complete Payment", {"accessToken": "t", "eventSetID": "e"}),
        (stackadapt.DESTINATION, "Forward Event", {"pixelId": "px"}),
        (seg.DESTINATION, "Order Placed", {"apiKey": "abc8fb18-7559-4324-9921-a4b5015b4a1c"}),
    ):
        preset = destination.preset(preset_name)
        assert preset is not None
        action = CompiledAction(destination, preset.action)
        payload = compile_mapping(dict(preset.mapping)).resolve(EVENT)
        ctx = BuildContext(settings=settings, endpoint=destination.endpoint, event=EVENT, now=now)
        validated = action.schema.validate(payload)
        validate_us = _per_call(partial(action.schema.validate, payload))
        build_us = _per_call(partial(action.action.build, validated, ctx))
        print(
            f"{destination.type:28s} {len(payload):2d} fields  validate {validate_us:6.2f} us/payload"
            f"  build {build_us:6.2f} us/request  run {validate_us + build_us:6.2f} us"
        )


if __name__ == "__main__":
    main()
