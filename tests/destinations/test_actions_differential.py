"""The 400 action cases Segment's own packages answered: same selection, same request, same failure."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
from spec_data import differential

from streamproc.core.js import UNDEFINED, parse_iso_time
from streamproc.destinations import stackadapt, tiktok_offline
from streamproc.destinations.base import BuildContext, Destination, Request, Skip
from streamproc.destinations.runtime import CompiledAction, validate_settings
from streamproc.errors import PayloadValidationError
from streamproc.fql import parse as parse_trigger
from streamproc.mapping import compile as compile_mapping

DESTINATIONS: dict[str, Destination] = {
    "stackadapt": stackadapt.DESTINATION,
    "tiktok-offline-conversions": tiktok_offline.DESTINATION,
}

# Segment's error classes and ours.
ERROR_CLASSES = {
    "AggregateAjvError": PayloadValidationError,
    "PayloadValidationError": PayloadValidationError,
}

CASES = differential("action")


def _trigger_matches(fql: str, event: dict[str, Any]) -> bool:
    return bool(parse_trigger(fql).matches(event))


def _mapping_for(case: dict[str, Any], destination: Destination) -> tuple[str, dict[str, Any], str | None]:
    """(action key, mapping, trigger or None) exactly as Segment's runtime built them."""
    if "preset" in case:
        preset = destination.preset(case["preset"])
        assert preset is not None, case["preset"]
        return preset.action, dict(preset.mapping), preset.subscribe
    action = case["action"]
    defaults = destination.default_mapping(action)
    if "mapping" not in case:
        return action, defaults, None
    mapping = {**defaults, **case["mapping"]} if case.get("merge_defaults") else dict(case["mapping"])
    # Object spread: a key set to undefined removes the default.
    return action, {k: v for k, v in mapping.items() if v is not UNDEFINED}, None


def run_case(case: dict[str, Any], *, fast: bool = True) -> dict[str, Any]:
    """What streamproc does with one differential input, in the shape of Segment's recorded output."""
    destination = DESTINATIONS[case["destination"]]
    action_key, mapping, trigger = _mapping_for(case, destination)
    event = case["event"]
    result: dict[str, Any] = {}
    if trigger is not None:
        if not _trigger_matches(trigger, event):
            return {"requests": [], "subscribed": False}
        result["subscribed"] = True
    settings = validate_settings(destination, case["settings"])
    ctx = BuildContext(
        settings=settings,
        endpoint=destination.endpoint,
        event=event,
        now=parse_iso_time(case["now"]),
    )
    payload = compile_mapping(mapping, codegen=fast).resolve(event)
    try:
        built = CompiledAction(destination, action_key, fast=fast).run(payload, ctx)
    except PayloadValidationError as exc:
        return {"error": exc}
    assert not isinstance(built, Skip)
    result["requests"] = built
    return result


def _compare_request(actual: Request, expected: dict[str, Any]) -> None:
    assert actual.method == expected["method"]
    assert actual.url == expected["url"]
    assert dict(actual.headers) == expected["headers"]
    if expected["body"] is None:
        assert actual.body is None
    else:
        assert actual.body is not None
        assert orjson.loads(actual.body) == expected["body"]
        if "body_raw" in expected:
            assert actual.body.decode() == expected["body_raw"]
    if expected.get("query") is not None:
        assert parse_qsl(urlsplit(actual.url).query, keep_blank_values=True) == [
            tuple(p) for p in expected["query"]
        ]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "exact"])
@pytest.mark.parametrize("row", CASES, ids=[row["input"]["id"] for row in CASES])
def test_action_case_matches_segment(row: dict[str, Any], fast: bool) -> None:
    """Also without any shortcut (no generated mapping code, exact validation, exact encoders)."""
    case, expected = row["input"], row["expected"]
    actual = run_case(case, fast=fast)
    if "error" in expected:
        assert "error" in actual, f"expected {expected['error']['message']!r}, got requests"
        err = actual["error"]
        assert isinstance(err, ERROR_CLASSES[expected["error"]["name"]])
        assert err.message == expected["error"]["message"]
        assert err.status == expected["error"]["status"]
        return
    assert "error" not in actual, f"unexpected error: {actual['error']}"
    if "subscribed" in expected:
        assert actual.get("subscribed") is expected["subscribed"]
    assert len(actual["requests"]) == len(expected["requests"])
    for req, exp in zip(actual["requests"], expected["requests"], strict=True):
        _compare_request(req, exp)


@pytest.mark.parametrize(
    "value",
    [1e-6, 1.5e-6, 9.99e-6, 1e-7, 1e-5, 0.0001, 0.1, 1.0, -0.0, 1e16, 1.5e16, 1e21, 2**53 + 2, 5e-324],
)
def test_request_bodies_print_numbers_as_javascript(value: float) -> None:
    # Partner bodies are JSON.stringify output: the fast serialiser must agree with the exact one.
    from streamproc.core.js import json_bytes, json_stringify

    body = {"value": value, "nested": [{"price": value}]}
    assert json_bytes(body).decode() == json_stringify(body)
