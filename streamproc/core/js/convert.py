"""JavaScript's type conversions: Number(value), String(value) and how numbers print."""

from __future__ import annotations

import math
import re
from typing import Any

from streamproc.core.js.strings import WHITESPACE
from streamproc.core.js.values import UNDEFINED

# StrNumericLiteral: ASCII digits only (Python's float() also takes other scripts' digits and "_").
_DECIMAL = re.compile(r"[+-]?(?:Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)", re.ASCII)
_NON_DECIMAL = re.compile(r"0(?:[xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)", re.ASCII)


def string_to_number(text: str) -> float:
    """`Number(text)`: surrounding whitespace ignored, "" is 0, 0x/0o/0b unsigned, junk is NaN."""
    t = text.strip(WHITESPACE)
    if not t:
        return 0.0
    if _DECIMAL.fullmatch(t):
        return float(t)
    if _NON_DECIMAL.fullmatch(t):
        try:
            return float(int(t, 0))
        except OverflowError:
            return math.inf
    return math.nan


def to_number(value: Any) -> float:
    """`Number(value)` for JSON-shaped values: arrays go through their String(), objects are NaN."""
    if isinstance(value, str):
        return string_to_number(value)
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, float):
        return value
    if value is None:
        return 0.0
    if isinstance(value, list | tuple):
        return string_to_number(to_js_string(value))
    return math.nan


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


def to_primitive(value: Any) -> Any:
    """ToPrimitive for JSON-shaped values: arrays and objects become their String()."""
    if isinstance(value, list | tuple | dict):
        return to_js_string(value)
    return value


def less_than(left: Any, right: Any) -> bool | None:
    """ECMAScript's IsLessThan (`left < right`): two texts compare by UTF-16 code units, anything
    else as numbers; None where a side is NaN (every relational operator then answers false)."""
    a, b = to_primitive(left), to_primitive(right)
    if isinstance(a, str) and isinstance(b, str):
        if a.isascii() and b.isascii():
            return a < b
        return a.encode("utf-16-be", "surrogatepass") < b.encode("utf-16-be", "surrogatepass")
    x, y = to_number(a), to_number(b)
    if math.isnan(x) or math.isnan(y):
        return None
    return x < y


def js_compare(left: Any, op: str, right: Any) -> bool:
    """JavaScript's `<`, `>`, `<=` and `>=` on any two values (loose conversions included)."""
    if op == "<":
        return less_than(left, right) is True
    if op == ">":
        return less_than(right, left) is True
    if op == "<=":
        return less_than(right, left) is False
    if op == ">=":
        return less_than(left, right) is False
    raise ValueError(f"not a relational operator: {op}")


def js_add(left: Any, right: Any) -> Any:
    """JavaScript's `left + right`: text concatenation when either side is (or becomes) text."""
    a, b = to_primitive(left), to_primitive(right)
    if isinstance(a, str) or isinstance(b, str):
        return to_js_string(a) + to_js_string(b)
    return to_number(a) + to_number(b)


def to_integer_or_infinity(value: Any) -> float:
    """ToIntegerOrInfinity: NaN is 0, fractions are cut toward zero, infinities stay."""
    number = to_number(value)
    if math.isnan(number):
        return 0
    if math.isinf(number):
        return number
    return math.trunc(number)
