"""JavaScript's JSON: JSON.stringify (as text and as UTF-8 bytes), JSON.parse, and object key order."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from streamproc.core.fast_paths import JS_JSON
from streamproc.core.fast_paths import OFF as _FAST_PATHS_OFF
from streamproc.core.js.convert import number_to_string
from streamproc.core.js.values import UNDEFINED

_INDEX_RE = re.compile(r"(?:0|[1-9][0-9]*)\Z")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def is_array_index(key: str) -> bool:
    """A key JavaScript treats as an array index (and so orders first in objects)."""
    return _INDEX_RE.match(key) is not None and int(key) < 4294967295


def js_keys(obj: dict[str, Any]) -> list[str]:
    """Own keys in JavaScript order: array-index keys ascending first, then insertion order."""
    keys = list(obj)
    indices = [k for k in keys if is_array_index(k)]
    if not indices:
        return keys
    indices.sort(key=int)
    return indices + [k for k in keys if not is_array_index(k)]


def json_quote(text: str) -> str:
    """A JSON string literal as JavaScript writes it (non-ASCII kept, lone surrogates escaped)."""
    out = json.dumps(text, ensure_ascii=False)
    if _LONE_SURROGATE.search(out):
        out = _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", out)
    return out


def json_stringify(value: Any) -> str | None:
    """`JSON.stringify(value)` with no indentation: JavaScript number formatting, non-ASCII kept,
    undefined members dropped from objects and printed as null inside arrays.
    Returns None where JavaScript returns undefined (a bare undefined)."""
    if value is UNDEFINED:
        return None
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json_quote(value)
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return "null"
        return number_to_string(value)
    if isinstance(value, dict):
        parts = []
        for key in js_keys(value):
            text = json_stringify(value[key])
            if text is not None:
                parts.append(json_quote(str(key)) + ":" + text)
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(json_stringify(v) or "null" for v in value) + "]"
    return None


def json_bytes_exact(value: Any) -> bytes:
    """`JSON.stringify(value)` as UTF-8 bytes, written by `json_stringify` (undefined is empty)."""
    # JSON.stringify escapes lone surrogates, so the text is always valid UTF-8.
    return (json_stringify(value) or "").encode("utf-8")


# orjson writes strings, ints within 2**53 and finite floats as JavaScript does, except integral
# floats ("1.0", "-0.0", "1e+16") and exponent forms JavaScript writes out ("1e-7" is the same,
# "1.5e-6" is not). Each of those contains ".0" before a delimiter, "e+" (after a digit) or "e-" and
# a digit. orjson also keeps keys in insertion order where JavaScript puts array-index keys first. A
# string holding the same text only sends the value down the exact path.
_INTEGRAL_FLOAT = re.compile(rb"\.0[,\]}]").search
_POSITIVE_EXPONENT = re.compile(rb"\de\+").search
_PLUS = ord("+")  # an int: `in` then looks for one byte, much quicker than for a bytes needle
_NEGATIVE_EXPONENT = re.compile(rb"e-\d").search
_EXPONENT_LETTERS = re.compile(rb"e[-+]\d").finditer
_MANTISSA = frozenset(b"0123456789.")
_BEFORE_NUMBER = frozenset(b":,[")


def _exponent_number(out: bytes) -> bool:
    """Whether an "e-" or "e+" and a digit in `out` belong to a number: text has them too (hex ids
    such as UUIDs, "...4e-9b1c..."), while a number in exponent form is digits (and a point)
    after ":", "," or "[" and an optional minus (orjson always signs the exponent)."""
    for found in _EXPONENT_LETTERS(out):
        i = end = found.start() - 1
        while i >= 0 and out[i] in _MANTISSA:
            i -= 1
        if i == end:
            continue
        if i >= 0 and out[i] == 0x2D:  # "-"
            i -= 1
        if i >= 0 and out[i] in _BEFORE_NUMBER:
            return True
    return False


# A quoted run of digits before ":" can only be a key (a string value is never followed by ":"); the
# few non-index keys it also finds ("01", 2**32) only cost the exact path.
_INDEX_KEY = re.compile(rb'"[0-9]+":').search


class _NotPlain(Exception):
    """A number orjson would print differently from JavaScript."""


def _js_numbers(value: Any) -> Any:
    """A copy with integral floats as ints, for orjson; raises _NotPlain where that is not enough."""
    cls = value.__class__
    if cls is float:
        if value.is_integer():
            if abs(value) > 9007199254740992.0:
                raise _NotPlain
            return int(value)
        if abs(value) < 1e-4 or abs(value) >= 1e16:
            # orjson and JavaScript choose between decimal and exponent forms at other points
            # (JavaScript writes 0.0000015 where orjson writes 1.5e-6).
            raise _NotPlain
        return value
    if cls is int:
        if abs(value) > 9007199254740992:
            raise _NotPlain
        return value
    if cls is dict:
        return {k: _js_numbers(v) for k, v in value.items()}
    if cls is list:
        return [_js_numbers(v) for v in value]
    return value


def _json_bytes_walked(value: Any, plain_keys: bool = False) -> bytes:
    try:
        out = orjson.dumps(_js_numbers(value))
    except (TypeError, _NotPlain):
        return json_bytes_exact(value)
    if not plain_keys and _INDEX_KEY(out):
        return json_bytes_exact(value)
    return out


def json_bytes(value: Any, *, plain_keys: bool = False) -> bytes:
    """`JSON.stringify(value)` as UTF-8 bytes, the same as `json_bytes_exact`. orjson writes the usual
    object or array and its output is searched for what JavaScript writes differently, so the usual
    body is never walked in Python. Integral floats are made ints for a second orjson pass; huge
    ints, undefined, non-finite floats and lone surrogates make orjson refuse and take the exact path.
    `plain_keys` is the caller's word that no object key is an array index (one JavaScript would
    order first), so the output is not searched for one."""
    if JS_JSON in _FAST_PATHS_OFF:
        return json_bytes_exact(value)
    cls = value.__class__
    if cls is not dict and cls is not list:
        return _json_bytes_walked(value, plain_keys)
    try:
        out = orjson.dumps(value, option=orjson.OPT_STRICT_INTEGER)
    except TypeError:
        return _json_bytes_walked(value, plain_keys)
    if _INTEGRAL_FLOAT(out) or (
        ((_PLUS in out and _POSITIVE_EXPONENT(out)) or _NEGATIVE_EXPONENT(out)) and _exponent_number(out)
    ):
        return _json_bytes_walked(value, plain_keys)
    if not plain_keys and _INDEX_KEY(out):
        return json_bytes_exact(value)
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _parse_int(text: str) -> int | float:
    number = int(text)
    if -(2**53) <= number <= 2**53:
        return number
    return float(number)


def json_parse(text: str) -> Any:
    """`JSON.parse`: strict JSON, numbers as JavaScript doubles; raises ValueError when invalid."""
    return json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
