"""JavaScript value rules: String(), JSON.stringify and truthiness as partners see them."""

import math

import pytest

from streamproc.core.js import (
    UNDEFINED,
    json_stringify,
    number_to_string,
    parse_iso_time,
    to_js_string,
    truthy,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (0.1, "0.1"),
        (-0.0, "0"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (0.000001, "0.000001"),
        (1.5e300, "1.5e+300"),
        (123.456, "123.456"),
        (2**53, "9007199254740992"),
        (2**60, "1152921504606847000"),
        (5e-324, "5e-324"),
        (math.inf, "Infinity"),
        (math.nan, "NaN"),
    ],
)
def test_numbers_print_as_javascript_does(value: float, text: str) -> None:
    assert number_to_string(value) == text


def test_string_conversion_of_non_strings() -> None:
    assert to_js_string(None) == "null"
    assert to_js_string(UNDEFINED) == "undefined"
    assert to_js_string(True) == "true"
    assert to_js_string({"a": 1}) == "[object Object]"
    assert to_js_string([1, None, "x", [2, 3]]) == "1,,x,2,3"


def test_json_stringify_drops_undefined_members_and_keeps_unicode() -> None:
    value = {"a": [1, UNDEFINED, None], "b": UNDEFINED, "c": "ü\n", "d": 2.50}
    assert json_stringify(value) == '{"a":[1,null,null],"c":"ü\\n","d":2.5}'
    assert json_stringify(UNDEFINED) is None


@pytest.mark.parametrize("value", ["", 0, 0.0, math.nan, None, UNDEFINED, False])
def test_falsy_values(value: object) -> None:
    assert not truthy(value)


@pytest.mark.parametrize("value", ["0", " ", 1, -1.5, [], {}, True])
def test_truthy_values(value: object) -> None:
    assert truthy(value)


def test_json_stringify_orders_index_keys_first_and_escapes_lone_surrogates() -> None:
    assert json_stringify({"b": 1, "10": 2, "2": 3, "01": 4}) == '{"2":3,"10":2,"b":1,"01":4}'
    assert json_stringify("a\ud800b") == '"a\\ud800b"'


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2026-11-23T10:00:00Z", "2026-11-23T10:00:00+00:00"),
        ("2026-11-23T10:00:00", "2026-11-23T10:00:00+00:00"),
        (" 2026-11-23 10:00:00.250+01:30 ", "2026-11-23T08:30:00.250000+00:00"),
        ("2026-11-23", "2026-11-23T00:00:00+00:00"),
        ("2026-11-23t10:00z", "2026-11-23T10:00:00+00:00"),
    ],
)
def test_commands_read_iso_times_in_utc(text: str, iso: str) -> None:
    assert parse_iso_time(text).isoformat() == iso


@pytest.mark.parametrize("text", ["yesterday", "1200", "2026-02-30", "2026-11-23T25:00:00Z", "2026-11-23T10"])
def test_commands_refuse_what_is_not_an_iso_time(text: str) -> None:
    with pytest.raises(ValueError, match="not an ISO-8601 time"):
        parse_iso_time(text)
