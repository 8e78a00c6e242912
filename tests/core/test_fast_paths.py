"""Every shortcut for the usual input gives what the exact rules give: Date.parse, JSON.stringify,
URLSearchParams, `new URL().searchParams`, and payload validation with `fast=False`."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproc.core.js import (
    FormTemplate,
    date_parse,
    date_parse_exact,
    form_encode,
    form_encode_exact,
    json_bytes,
    json_bytes_exact,
    url_query_param,
    url_query_param_exact,
)
from streamproc.core.payload import PayloadSchema
from streamproc.destinations import seg, stackadapt, tiktok_offline
from streamproc.errors import PayloadValidationError

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that reaches the shortcuts' edges: ASCII, separators, escapes, non-ASCII, astral and lone
# surrogates.
CHARS = st.characters(codec=None, categories=None) | st.sampled_from(
    [*"azAZ09 %+&=#?/.:-_~*!'()\t\n\r\x00\x01", "é", "€", "\U0001f600", "\ud800", "\udc00"]
)
# Mostly ASCII, which the shortcuts take; the rest goes the exact way inside them.
TEXT = st.text(st.characters(max_codepoint=127), max_size=12) | st.text(CHARS, max_size=12)


def _digits(low: int, high: int, width: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda n: str(n).zfill(width))


ISO_LIKE = st.builds(
    lambda y, mo, d, sep, h, mi, s, frac, zone: f"{y}-{mo}-{d}{sep}{h}:{mi}{s}{frac}{zone}",
    _digits(0, 9999, 4),
    _digits(0, 13, 2),
    _digits(0, 32, 2),
    st.sampled_from(["T", "t", " "]),
    _digits(0, 25, 2),
    _digits(0, 60, 2),
    st.sampled_from(["", ":00", ":59", ":60", ":7"]),
    st.sampled_from(["", ".0", ".123", ".1234567", "."]),
    st.sampled_from(["", "Z", "z", "+00:00", "-05:30", "+23:59", "+24:00", "+0530", " GMT"]),
)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@SETTINGS
@given(text=ISO_LIKE | ISO_LIKE.map(lambda t: t[:10]) | TEXT)
def test_date_parse_shortcuts_agree_with_v8_rules(text: str) -> None:
    assert _same(date_parse(text), date_parse_exact(text))


JSON_KEYS = st.sampled_from(["a", "b", "0", "1", "10", "01", "4294967295", "-1", "é"]) | TEXT
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats()
    | st.sampled_from([1.0, -0.0, 1e16, 1.5e-6, 1e-7, 1e21, 123.0, 0.1])
    | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(JSON_KEYS, children, max_size=4),
    max_leaves=20,
)


@SETTINGS
@given(value=JSON_VALUES)
def test_json_bytes_through_orjson_agrees_with_json_stringify(value: Any) -> None:
    assert json_bytes(value) == json_bytes_exact(value)


@pytest.mark.parametrize(
    "value",
    [
        {"user_id": "a1f3c2d4-0b7e-4e55-9b1c-5d2e8f7a6b01", "price": 89.9},
        {"id": "0b7e-4e55", "small": [1.5e-6, 1e-7], "big": {"x": 1e21}},
        ["x:1e-5", "e+1", -2.5e-10, 1e16],
        {"note": "1.5e-6 e-1 e+2", "n": 1.0},
        [1.5e-6],
        {"a": -1.5e-6, "b": "9e-9"},
        {"a": "0b7e-4e55", "b": [5e-324, "x,1e-5"]},
        [[-1e21], {"e": 2.5e-8}],
    ],
)
def test_exponent_letters_in_text_and_numbers_in_exponent_form(value: Any) -> None:
    assert json_bytes(value) == json_bytes_exact(value)


@SETTINGS
@given(pairs=st.lists(st.tuples(TEXT, TEXT), max_size=6))
def test_one_pass_form_encoding_agrees_with_component_encoding(pairs: list[tuple[str, str]]) -> None:
    assert form_encode(pairs) == form_encode_exact(pairs)


QUERY_NAMES = ("a", "b_c", "x-1.*")


@SETTINGS
@given(values=st.tuples(TEXT, TEXT, TEXT))
def test_a_query_of_fixed_names_agrees_with_component_encoding(values: tuple[str, str, str]) -> None:
    template = FormTemplate(QUERY_NAMES)
    expected = form_encode_exact(list(zip(QUERY_NAMES, values, strict=True)))
    assert template.encode(values) == expected == template.encode_exact(values)


def test_a_query_template_refuses_names_that_need_escaping() -> None:
    for names in [(), ("a b",), ("a", "é"), ("a=b",)]:
        with pytest.raises(ValueError):
            FormTemplate(names)


QUERY_PART = st.sampled_from(["ttclid", "tt%63lid", "ttclid+", "a", "", "%zz", "ttc\tlid"]) | TEXT
URLS = st.builds(
    lambda scheme, host, port, path, query, fragment: f"{scheme}{host}{port}{path}{query}{fragment}",
    st.sampled_from(["https://", "http://", "HTTPS://", "ftp://", "mailto:", "file:///", "x", " https://"]),
    st.sampled_from(["ex.com", "a.b.example", "[::1]", "exa mple.com", "u:p@ex.com", ""]) | TEXT,
    st.sampled_from(["", ":80", ":65535", ":65536", ":x"]),
    st.sampled_from(["", "/", "/p", "/é", "\\p"]),
    st.lists(st.tuples(QUERY_PART, QUERY_PART), max_size=3).map(
        lambda kv: ("?" + "&".join(f"{k}={v}" for k, v in kv)) if kv else ""
    ),
    st.sampled_from(["", "#f", "#ttclid=1"]),
)


@SETTINGS
@given(url=URLS | TEXT, name=st.sampled_from(["ttclid", "a", "é"]))
def test_url_search_param_shortcuts_agree_with_the_url_standard(url: str, name: str) -> None:
    assert url_query_param(url, name) == url_query_param_exact(url, name)


ACTIONS = [
    action
    for destination in (stackadapt.DESTINATION, tiktok_offline.DESTINATION, seg.DESTINATION)
    for action in destination.actions.values()
]
FIELD_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**54), 2**54)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", " ", "1", "1.5", "true", "a@b.co", "2024-03-15T10:30:00Z", "product", "x" * 300])
    | TEXT,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["price", "quantity", "content_id", "product_id", "revenue", "x"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


def _validated(schema: PayloadSchema, payload: dict[str, Any]) -> str:
    try:
        return repr(schema.validate(payload))
    except PayloadValidationError as exc:
        return f"PayloadValidationError: {exc.message}"


@SETTINGS
@given(data=st.data(), index=st.integers(0, len(ACTIONS) - 1))
def test_payload_shortcuts_agree_with_the_full_checks(data: st.DataObject, index: int) -> None:
    fields = ACTIONS[index].fields
    payload = data.draw(st.dictionaries(st.sampled_from([*fields, "unknown"]), FIELD_VALUES, max_size=8))
    # repr, so that 1 / 1.0 / True and key order must agree too.
    assert _validated(PayloadSchema(fields), payload) == _validated(
        PayloadSchema(fields, fast=False), payload
    )
