"""Prints how fast compiled FQL triggers match events (matches per second) and how fast triggers parse."""

from __future__ import annotations

import timeit
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from streamproc.fql import parse

EVENT = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u-123",
    "anonymousId": "a-456",
    "messageId": "m-789",
    "timestamp": "2024-03-15T10:30:00.000Z",
    "properties": {"revenue": 42.5, "currency": "USD", "products": [{"product_id": "p1", "price": 42.5}]},
    "context": {"ip": "203.0.113.7", "page": {"url": "https://shop.example/checkout", "title": "Checkout"}},
    "traits": {"plan": "pro"},
}

TRIGGERS = {
    "3 conditions (all true)": 'type = "track" and event = "Order Completed" and properties.revenue > 5',
    "3 conditions (first false)": 'type = "page" and event = "Order Completed" and properties.revenue > 5',
    "preset: 4-way or on type": 'type = "identify" or type = "page" or type = "screen" or type = "track"',
    "single event name": 'event = "Order Completed"',
    "nested path + contains": 'contains(context.page.url, "checkout") and traits.plan != null',
    "grouped": '(event = "Order Completed" or event = "Order Placed") and properties.revenue >= 10',
}


def hand_written(event: Mapping[str, Any]) -> bool:
    """The first trigger written directly in Python, as a floor for what compiling can reach."""
    properties = event.get("properties")
    revenue = properties.get("revenue") if isinstance(properties, dict) else None
    return (
        event.get("type") == "track"
        and event.get("event") == "Order Completed"
        and isinstance(revenue, int | float)
        and not isinstance(revenue, bool)
        and revenue > 5
    )


def main() -> None:
    print(f"{'trigger':32} {'matches/s':>12} {'ns/match':>9}")
    candidates: list[tuple[str, Callable[[Mapping[str, Any]], bool]]] = [
        (label, parse(fql).matches) for label, fql in TRIGGERS.items()
    ]
    candidates.insert(1, ("hand-written Python (3 cond.)", hand_written))
    number = 200_000
    for label, matches in candidates:
        best = min(timeit.repeat(partial(matches, EVENT), number=number, repeat=5))
        print(f"{label:32} {number / best:12,.0f} {best / number * 1e9:9.0f}")
    fql = TRIGGERS["3 conditions (all true)"]
    best = min(timeit.repeat(lambda: parse(fql), number=5_000, repeat=3))
    print(f"parse + compile (3 conditions): {5_000 / best:,.0f} triggers/s")


if __name__ == "__main__":
    main()
