"""JavaScript value semantics that the partner specs depend on (undefined, truthiness, String(), JSON)."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

__all__ = [
    "UNDEFINED",
    "Undefined",
    "is_array_index",
    "is_undefined",
    "js_keys",
    "json_quote",
    "json_stringify",
    "number_to_string",
    "to_js_string",
    "truthy",
    "typeof",
]


class Undefined:
    """JavaScript's `undefined`: a missing value, distinct from `None` (JSON null)."""

    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "undefined"

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = Undefined()


def is_undefined(value: object) -> bool:
    return value is UNDEFINED


def typeof(value: object) -> str:
    """JavaScript `typeof` for JSON-shaped Python values."""
    if value is UNDEFINED:
        return "undefined"
    if value is None:
        return "object"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"


def truthy(value: object) -> bool:
    """JavaScript truthiness: `""`, 0, NaN, null, undefined and false are falsy; `[]` and `{}` are not."""
    if value is None or value is UNDEFINED or value is False:
        return False
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return value != 0
    if isinstance(value, float):
        return not (value == 0 or math.isnan(value))
    if isinstance(value, str):
        return value != ""
    return True


def number_to_string(value: float | int) -> str:
    """Format a number exactly as JavaScript's `String(n)` / `JSON.stringify(n)` does."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if -(2**53) <= value <= 2**53:
            return str(value)
        value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    text = repr(abs(value))  # shortest round-trip digits, like ECMAScript's Number::toString
    mantissa, _, exp_text = text.partition("e")
    exponent = int(exp_text) if exp_text else 0
    int_part, _, frac_part = mantissa.partition(".")
    all_digits = int_part + frac_part
    stripped = all_digits.lstrip("0")
    leading_zeros = len(all_digits) - len(stripped)
    digits = stripped.rstrip("0") or "0"
    k = len(digits)
    n = len(int_part) + exponent - leading_zeros  # value = 0.<digits> * 10**n
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    exp_str = ("+" if e >= 0 else "-") + str(abs(e))
    if k == 1:
        return sign + digits + "e" + exp_str
    return sign + digits[0] + "." + digits[1:] + "e" + exp_str


def to_js_string(value: Any) -> str:
    """JavaScript `String(value)` for JSON-shaped values (objects print `[object Object]`)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if value is UNDEFINED:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number_to_string(value)
    if isinstance(value, list | tuple):
        return ",".join("" if v is None or v is UNDEFINED else to_js_string(v) for v in value)
    return "[object Object]"


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
