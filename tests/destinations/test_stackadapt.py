"""StackAdapt Events & Conversions: the exact pixel GET (query order, encoding, args JSON, headers)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from spec_data import cases

from streamproc.destinations import stackadapt
from streamproc.destinations.base import BuildContext, Request
from streamproc.destinations.runtime import CompiledAction, validate_settings
from streamproc.errors import PayloadValidationError
from streamproc.fql import parse
from streamproc.mapping import compile as compile_mapping

DEST = stackadapt.DESTINATION
PRESET = DEST.preset("Forward Event")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = {"pixelId": "px123"}


def _run(event: dict[str, Any], settings: dict[str, Any] = SETTINGS, mapping: Any = None) -> Request:
    assert PRESET is not None
    ctx = BuildContext(
        settings=validate_settings(DEST, settings), endpoint=DEST.endpoint, event=event, now=NOW
    )
    payload = compile_mapping(dict(PRESET.mapping) if mapping is None else mapping).resolve(event)
    [req] = CompiledAction(DEST, "forwardEvent").run(payload, ctx)
    return req


CASES = cases("G")


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_segment_case(case: dict[str, Any]) -> None:
    # Every G case uses the default field mappings, which are the preset's mapping.
    assert "default field mappings" in case["mapping"]
    if "expected_error" in case:
        with pytest.raises(PayloadValidationError) as info:
            _run(case["event"], case["settings"])
        assert info.value.message == case["expected_error"]["message"]
        assert info.value.status == 400
        return
    req = _run(case["event"], case["settings"])
    expected = case["expected_request"]
    assert req.method == "GET"
    assert req.url == expected["url"]
    assert parse_qsl(urlsplit(req.url).query, keep_blank_values=True) == [
        tuple(p) for p in expected["query_params_in_order"]
    ]
    assert dict(req.headers) == expected["headers"]
    assert req.body is None


def _args(req: Request) -> str:
    return dict(parse_qsl(urlsplit(req.url).query, keep_blank_values=True))["args"]


BASE_EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Product Added",
    "userId": "u1",
    "context": {"ip": "203.0.113.7", "userAgent": "UA/1.0"},
}


def test_form_encoding_is_urlsearchparams() -> None:
    assert (
        stackadapt.form_encode([("a b", "x~y*z-._!'()é+&=")]) == "a+b=x%7Ey*z-._%21%27%28%29%C3%A9%2B%26%3D"
    )


def test_args_prints_numbers_like_javascript_and_keeps_non_ascii() -> None:
    event = {**BASE_EVENT, "properties": {"revenue": "100.0", "price": 1e21, "name": "Café"}}
    assert _args(_run(event)) == (
        '{"revenue":100,"product_price":1e+21,"product_name":"Café","action":"Product Added",'
        '"utm_source":"","user_id":"u1"}'
    )


def test_products_only_when_the_list_is_not_empty() -> None:
    empty = {**BASE_EVENT, "properties": {"products": []}}
    assert "products" not in json.loads(_args(_run(empty)))
    one = {**BASE_EVENT, "properties": {"products": [{"product_id": 7, "quantity": "3"}]}}
    assert json.loads(_args(_run(one)))["products"] == [{"product_quantity": 3, "product_id": "7"}]


def test_ecommerce_keys_come_first_and_later_keys_win_in_place() -> None:
    mapping = {
        "ip_fwd": "1.1.1.1",
        "user_agent": "UA",
        "action": "Real",
        "ecommerce_data": {"action": "from ecommerce", "coupon": "C1"},
    }
    assert _args(_run(BASE_EVENT, mapping=mapping)) == '{"action":"Real","coupon":"C1","utm_source":""}'


def test_invalid_email_fails_the_event() -> None:
    event = {**BASE_EVENT, "traits": {"email": "not-an-email"}}
    with pytest.raises(
        PayloadValidationError, match=r"^Email must be a valid email address string but it was not\.$"
    ):
        _run(event)


def test_headers_and_configured_endpoint() -> None:
    assert PRESET is not None
    ctx = BuildContext(settings=SETTINGS, endpoint="http://127.0.0.1:8080", event={}, now=NOW)
    [req] = CompiledAction(DEST, "forwardEvent").run({"ip_fwd": "::1", "user_agent": "A B"}, ctx)
    assert req.url.startswith("http://127.0.0.1:8080/saq_pxl?segment_ss=1&event_type=&")
    assert dict(req.headers) == {
        "content-type": "application/json",
        "x-forwarded-for": "::1",
        "user-agent": "A B",
    }


def test_preset_trigger_selects_the_four_event_types() -> None:
    assert PRESET is not None
    trigger = parse(PRESET.subscribe)
    assert [
        t for t in ("identify", "page", "screen", "track", "group", "alias") if trigger.matches({"type": t})
    ] == [
        "identify",
        "page",
        "screen",
        "track",
    ]


def test_pixel_id_setting_is_required() -> None:
    with pytest.raises(PayloadValidationError, match="missing the required field 'pixelId'"):
        validate_settings(DEST, {})
    assert validate_settings(DEST, {"pixelId": "p", "unknown": 1}) == {"pixelId": "p"}
