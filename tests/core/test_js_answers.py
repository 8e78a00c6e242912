"""streamproc.core.js against JavaScript's own answers.

The answers are Node.js's (V8), recorded in tests/data/js-answers.json by tests/data/js_answers.py;
run that script again (Node needed) after adding a case there. The cases include the ones on which
earlier copies of these rules disagreed with JavaScript: Number(" 0x10 ") is 16, Number("1_000") and
Number("infinity") are NaN.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from streamproc.core.js import (
    WHITESPACE,
    date_parse,
    date_parse_exact,
    form_encode,
    form_encode_exact,
    json_bytes,
    json_bytes_exact,
    json_stringify,
    to_js_string,
    to_number,
    trim,
    url_query_param,
    url_query_param_exact,
    utf8,
    utf16_length,
)

ANSWERS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent.parent / "data" / "js-answers.json").read_text(encoding="utf-8")
)


def _cases(name: str) -> list[Any]:
    return [pytest.param(q, a, id=f"{name}-{i}") for i, (q, a) in enumerate(ANSWERS[name])]


def _same_number(actual: float, expected: str) -> bool:
    """`expected` is JavaScript's String(n), or "-0"."""
    if expected == "NaN":
        return math.isnan(actual)
    if expected == "-0":
        return actual == 0 and math.copysign(1.0, actual) < 0
    return actual == float(expected) and not (actual == 0 and math.copysign(1.0, actual) < 0)


def test_the_recorded_cases_include_those_the_old_copies_got_wrong() -> None:
    answers = dict((json.dumps(q), a) for q, a in ANSWERS["number"])
    assert answers[json.dumps(" 0x10 ")] == "16"
    assert answers[json.dumps("1_000")] == "NaN"
    assert answers[json.dumps("infinity")] == "NaN"


@pytest.mark.parametrize(("value", "expected"), _cases("number"))
def test_number(value: Any, expected: str) -> None:
    assert _same_number(to_number(value), expected), (value, to_number(value), expected)


@pytest.mark.parametrize(("value", "expected"), _cases("string"))
def test_string(value: Any, expected: str) -> None:
    assert to_js_string(value) == expected


def test_whitespace_is_what_trim_removes() -> None:
    assert sorted(ord(c) for c in WHITESPACE) == ANSWERS["whitespace"]
    for code in range(0x10000):
        ch = chr(code)
        assert (trim(f"{ch}x{ch}") == "x") == (code in ANSWERS["whitespace"]), hex(code)


@pytest.mark.parametrize(("text", "expected"), _cases("length"))
def test_length_counts_utf16_code_units(text: str, expected: int) -> None:
    assert utf16_length(text) == expected


@pytest.mark.parametrize(("text", "expected"), _cases("utf8"))
def test_utf8_replaces_lone_surrogates(text: str, expected: str) -> None:
    assert utf8(text).hex() == expected


@pytest.mark.parametrize(("value", "expected"), _cases("stringify"))
def test_json_stringify(value: Any, expected: str) -> None:
    assert json_stringify(value) == expected
    assert json_bytes(value) == expected.encode("utf-8")
    assert json_bytes_exact(value) == expected.encode("utf-8")


@pytest.mark.parametrize(("text", "expected"), _cases("date_parse"))
def test_date_parse(text: str, expected: str) -> None:
    assert _same_number(date_parse(text), expected)
    assert _same_number(date_parse_exact(text), expected)


@pytest.mark.parametrize(("pairs", "expected"), _cases("form"))
def test_url_search_params_encoding(pairs: list[list[str]], expected: str) -> None:
    as_tuples = [(k, v) for k, v in pairs]
    assert form_encode(as_tuples) == expected
    assert form_encode_exact(as_tuples) == expected


@pytest.mark.parametrize(("question", "expected"), _cases("search_param"))
def test_url_search_param(question: list[str], expected: str | None) -> None:
    url, name = question
    assert url_query_param(url, name) == expected
    assert url_query_param_exact(url, name) == expected
