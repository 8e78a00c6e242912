"""Per-event work is bounded: strings a mapping builds stop at MAX_STRING_LENGTH before they are built,
and below it every result is Segment's; trigger compilation is linear in the number of terms."""

from __future__ import annotations

import json
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from data.bounded_cases import digest, event_of

from streamproc.config import parse_config
from streamproc.core import mapping as mk
from streamproc.core.mapping import MAX_STRING_LENGTH
from streamproc.errors import MappingError, MappingFailed
from streamproc.router import Router

RECORDED = json.loads((Path(__file__).resolve().parent.parent / "data" / "bounded-cases.json").read_text())


@pytest.mark.parametrize("codegen", [True, False], ids=["codegen", "closures"])
@pytest.mark.parametrize("case", RECORDED, ids=[f"case{i}" for i in range(len(RECORDED))])
def test_results_below_the_bound_are_segments(case: dict[str, Any], codegen: bool) -> None:
    result = mk.compile(case["mapping"], codegen=codegen).resolve(event_of(case))
    assert digest(result) == case["expected"]


def test_the_recorded_cases_come_close_to_the_bound() -> None:
    assert max(case["expected"]["length"] for case in RECORDED) > 0.8 * MAX_STRING_LENGTH


def liquid(template: str) -> dict[str, Any]:
    return {"x": {"@liquid": template}}


def replace(replacement: str) -> dict[str, Any]:
    return {"x": {"@replace": {"pattern": "a", "replacement": replacement, "value": {"@path": "$.v"}}}}


LIQUID_LIMIT = "memory alloc limit exceeded"
DOUBLING = "{% assign y = a %}" + "{% assign y = y | append: y %}" * 6 + "{{ y }}"
PAST_THE_BOUND = {
    # A 30-byte event field asking for a 30-million character date.
    "date width": (liquid("{{ t | date: f }}"), {"t": "2020-01-05", "f": "%30000000Y"}, LIQUID_LIMIT),
    "date widths together": (liquid("{{ t | date: f }}"), {"t": "2020", "f": "%600000Y" * 3}, LIQUID_LIMIT),
    "date width in the template": (liquid('{{ t | date: "%2000000d" }}'), {"t": "2020-01-05"}, LIQUID_LIMIT),
    "append doubled": (liquid(DOUBLING), {"a": "z" * 40_000}, LIQUID_LIMIT),
    "prepend": (liquid("{{ a | prepend: a }}"), {"a": "z" * 600_000}, LIQUID_LIMIT),
    "replace": (liquid('{{ a | replace: "a", b }}'), {"a": "a" * 2000, "b": "b" * 1000}, LIQUID_LIMIT),
    "replace empty": (liquid('{{ a | replace: "", b }}'), {"a": "a" * 2000, "b": "b" * 1000}, LIQUID_LIMIT),
    "join": (liquid("{{ a | join: b }}"), {"a": ["q"] * 2000, "b": "," * 1000}, LIQUID_LIMIT),
    "truncate": (liquid("{{ a | truncate: 2, b }}"), {"a": "abc", "b": "." * 1_100_000}, LIQUID_LIMIT),
    "output": (liquid("{{ a }}{{ a }}{{ a }}"), {"a": "q" * 400_000}, LIQUID_LIMIT),
    "@replace $`": (replace("$`"), {"v": "a" * 3000}, "@replace would build a string longer than"),
    "@replace $'": (replace("$'$'"), {"v": "a" * 3000}, "@replace would build a string longer than"),
    "@replace literal": (
        replace("bbbbbbbbb"),
        {"v": "a" * 200_000},
        "@replace would build a string longer than",
    ),
    "@template": (
        {"x": {"@template": "{{a}}{{a}}{{a}}"}},
        {"a": "q" * 400_000},
        "@template would build a string longer than",
    ),
    "@template one placeholder": (
        {"x": {"@template": "id: {{a}}"}},
        {"a": "q" * MAX_STRING_LENGTH},
        "@template would build a string longer than",
    ),
    "@template triple": (
        {"x": {"@template": "{{{a}}}{{{a}}}{{{a}}}"}},
        {"a": "q" * 400_000},
        "@template would build a string longer than",
    ),
}


def peak_bytes(run: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        run()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("codegen", [True, False], ids=["codegen", "closures"])
@pytest.mark.parametrize("name", list(PAST_THE_BOUND))
def test_past_the_bound_the_mapping_fails_before_the_string_is_built(name: str, codegen: bool) -> None:
    mapping, event, message = PAST_THE_BOUND[name]
    compiled = mk.compile(mapping, codegen=codegen)
    caught: list[MappingError] = []

    def run() -> None:
        try:
            compiled.resolve(event)
        except MappingError as exc:
            caught.append(exc)

    peak = peak_bytes(run)
    assert caught, f"{name}: no error"
    assert str(caught[0]).startswith(message)
    # The event's own values aside, nothing near the bound was allocated.
    assert peak < MAX_STRING_LENGTH, f"{name}: {peak} bytes at the peak"


def seg_config(subscription: dict[str, Any]) -> Any:
    """A configuration with one Seg destination and this one subscription."""
    seg = {"id": "seg", "type": "seg", "settings": {"apiKey": "abc8fb18-7559-4324-9921-a4b5015b4a1c"}}
    return parse_config({"destinations": [{**seg, "presets": False, "subscriptions": [subscription]}]})


def test_an_event_asking_for_too_much_is_a_mapping_error_of_its_delivery() -> None:
    mapping = {"segEvent": {"@liquid": "{{ timestamp | date: properties.f }}"}}
    config = seg_config({"name": "dated", "trigger": 'type = "track"', "action": "track", "mapping": mapping})
    event = {
        "type": "track",
        "event": "Viewed",
        "userId": "u1",
        "messageId": "m1",
        "timestamp": "2026-01-05T10:00:00Z",
        "properties": {"f": "%300000000Y"},
    }
    (delivery,) = Router(config).route(event)
    assert isinstance(delivery.error, MappingFailed)  # what the worker dead-letters, with this reason
    assert str(delivery.error) == "memory alloc limit exceeded, line:1, col:1"


def python_calls(run: Callable[[], Any]) -> int:
    calls = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(count)
    try:
        run()
    finally:
        sys.setprofile(None)
    return calls


def compile_or_trigger(terms: int) -> None:
    trigger = " or ".join(f'event = "Event {i}"' for i in range(terms))
    Router(seg_config({"name": "many", "trigger": trigger, "action": "track"}))


def test_trigger_compilation_is_linear_in_the_number_of_terms() -> None:
    # Counted in Python calls rather than seconds: twice the terms, about twice the work.
    small, large = (
        python_calls(lambda: compile_or_trigger(1000)),
        python_calls(lambda: compile_or_trigger(2000)),
    )
    assert large < 2.3 * small, (small, large)
