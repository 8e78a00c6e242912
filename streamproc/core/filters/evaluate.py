"""Evaluates a destination filter's condition (tsub's JSON IR) against an event, as Segment does.

The IR is what `parse_condition` compiles FQL to, e.g. `["=", "event", {"value": "Test"}]`: an
operand is a field path (a string), `{"value": literal}` (a list literal holds operands), or a
function call; a condition is `["!", c]`, `["and", c, c...]`, `["or", ...]`, a comparison
(`=` `!=` `<` `<=` `>` `>=`), `["in", a, list]`, or a call of `contains`, `match`, `lowercase`,
`typeof`, `length`, `semver`.

Two dialects:
- `"tsub"`: exactly what @segment/tsub 2.0.1 (the browser copy of Segment's engine) answers,
  including where it throws (`FilterEvaluationError`).
- `"segment"` (the default): the same, except where Segment's FQL reference documents another
  answer (streamproc.core.filters.differences: typeof names, length in bytes, `in` over an event
  list, list literals, and function calls wherever a value is expected).

Values are JSON-shaped Python values with `UNDEFINED` for a missing field; comparisons follow
JavaScript's `===` (numbers as doubles, objects compared by their JSON text where tsub does so).
"""

from __future__ import annotations

import math
import re
from typing import Any, Final, Literal

from streamproc.core.filters.glob import glob_matches
from streamproc.core.filters.paths import get
from streamproc.core.js import UNDEFINED, code_units, json_stringify, trim, truthy, utf8, utf16_length
from streamproc.core.js import typeof as js_typeof

__all__ = ["Dialect", "FilterEvaluationError", "evaluate", "matches"]

Dialect = Literal["segment", "tsub"]

_NAN: Final = math.nan
_SAFE: Final = 2**53
_UNARY: Final = ("lowercase", "length", "typeof")
_BINARY: Final = ("contains", "match")
_RELATIONAL: Final = ("<", "<=", ">", ">=")
_SEMVER_OPS: Final = ("=", "!=", ">", ">=", "<", "<=")
_INT_PREFIX: Final = re.compile(r"[+-]?[0-9]+")
_REFERENCE_TYPES: Final = {"boolean": "bool"}


class FilterEvaluationError(Exception):
    """tsub throws on this condition and event (e.g. `in` over something that is not a list);
    Segment then withholds the event, and so does streamproc."""


def matches(ir: Any, event: Any, dialect: Dialect = "segment") -> bool:
    """Whether the condition holds: only a boolean `true` result counts (tsub's `matches`)."""
    result = (_Tsub if dialect == "tsub" else _Segment)(event).evaluate(ir)
    return result if result.__class__ is bool else False


def evaluate(ir: Any, event: Any, dialect: Dialect = "segment") -> Any:
    """The raw result of the IR (a function call alone gives its value, e.g. a lowercased string)."""
    return (_Tsub if dialect == "tsub" else _Segment)(event).evaluate(ir)


def is_call(value: Any) -> bool:
    """tsub's test for "this list is a function call" (by its name and length)."""
    if value.__class__ is not list or not value:
        return False
    head, n = value[0], len(value)
    if head.__class__ is not str:
        return False
    return (head in _UNARY and n == 2) or (head in _BINARY and n == 3) or (head == "semver" and n == 4)


def _double(value: int | float) -> float | int:
    """A number as JavaScript holds it: ints beyond 2**53 become (rounded) doubles."""
    if value.__class__ is int and not -_SAFE <= value <= _SAFE:
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return value


def _is_number(value: Any) -> bool:
    cls = value.__class__
    return cls is int or cls is float


def _is_object(value: Any) -> bool:
    """`typeof value === "object"`: null, arrays and objects."""
    return value is None or value.__class__ is dict or value.__class__ is list


def strict_equals(a: Any, b: Any) -> bool:
    """JavaScript's `a === b` for JSON-shaped values (objects and arrays: the same object only)."""
    ta, tb = a.__class__, b.__class__
    if ta is str:
        return tb is str and a == b
    if ta is bool or tb is bool:
        return ta is tb and a == b
    if ta is int or ta is float:
        return (tb is int or tb is float) and _double(a) == _double(b)
    if a is None or a is UNDEFINED:
        return a is b
    return a is b


def _units(text: str) -> str:
    if text.isascii() or all(ord(c) <= 0xFFFF for c in text):
        return text
    return "".join(code_units(text))


def _parse_int(text: str) -> float | int:
    """`parseInt(text.trim(), 10)`: the leading integer, or NaN."""
    found = _INT_PREFIX.match(trim(text))
    if found is None:
        return _NAN
    return _double(int(found.group()))


def _semver_parts(version: str) -> tuple[float | int, float | int, float | int] | None:
    parts = version.split(".")
    if len(parts) > 3:
        return None
    numbers = [_parse_int(p) for p in parts] + [0] * (3 - len(parts))
    if any(n != n for n in numbers):
        return None
    return numbers[0], numbers[1], numbers[2]


def _semver(v1: Any, op: Any, v2: Any) -> bool:
    if v1.__class__ is not str or op.__class__ is not str or v2.__class__ is not str:
        return False
    a, b = _semver_parts(v1), _semver_parts(v2)
    if a is None or b is None or op not in _SEMVER_OPS:
        return False
    cmp = (a > b) - (a < b)
    return {"=": cmp == 0, "!=": cmp != 0, ">": cmp > 0, ">=": cmp >= 0, "<": cmp < 0, "<=": cmp <= 0}[op]


def _relation(a: Any, b: Any, op: str) -> bool:
    if not _is_number(a) or not _is_number(b):
        return False
    x, y = _double(a), _double(b)
    if op == "<":
        return x < y
    if op == "<=":
        return x <= y
    if op == ">":
        return x > y
    return x >= y


def _contains(text: Any, part: Any) -> bool:
    if text.__class__ is not str or part.__class__ is not str:
        return False
    return _units(part) in _units(text)


def _match(text: Any, pattern: Any) -> bool:
    if text.__class__ is not str or pattern.__class__ is not str:
        return False
    return glob_matches(pattern, text)


def _lowercase(value: Any) -> Any:
    return value.lower() if value.__class__ is str else None


class _Tsub:
    """tsub's fqlEvaluate and its helpers, one event at a time."""

    __slots__ = ("event",)

    def __init__(self, event: Any) -> None:
        self.event = event

    # -- operands ----------------------------------------------------------------------------------
    def value(self, item: Any) -> Any:
        """tsub's getValue: a list as it is, `{"value": v}` as v, a string as a field path."""
        cls = item.__class__
        if cls is list:
            return item
        if cls is dict:
            return item.get("value", UNDEFINED)
        if cls is str:
            return get(self.event, item)
        if item is None or item is UNDEFINED:
            raise FilterEvaluationError("the condition reads an operand that is missing or null")
        return self.event  # dlv with a key that is not text answers the whole object

    def operand(self, item: Any) -> Any:
        """A value as a comparison reads it: a function call is evaluated first."""
        value = self.value(item)
        return self.evaluate(value) if is_call(value) else value

    # -- conditions --------------------------------------------------------------------------------
    def evaluate(self, ir: Any) -> Any:
        if ir.__class__ is not list:
            return self.value(ir) is True
        if not ir:
            raise FilterEvaluationError("FQL IR could not evaluate for token: undefined")
        op = ir[0]
        arg = ir[1:]
        if op.__class__ is not str:
            raise FilterEvaluationError(f"FQL IR could not evaluate for token: {op!r}")
        if op == "!":
            return not truthy(self.evaluate(self._arg(arg, 0)))
        if op == "or":
            return any(truthy(self.evaluate(c)) for c in arg)
        if op == "and":
            return all(truthy(self.evaluate(c)) for c in arg)
        if op == "=" or op == "!=":
            equal = self.equals(self._arg(arg, 0), self._arg(arg, 1))
            return equal if op == "=" else not equal
        if op in _RELATIONAL:
            return _relation(self.operand(self._arg(arg, 0)), self.operand(self._arg(arg, 1)), op)
        if op == "in":
            return self.in_list(self._arg(arg, 0), self._arg(arg, 1))
        if op == "contains":
            return _contains(self.argument(arg, 0), self.argument(arg, 1))
        if op == "match":
            return _match(self.argument(arg, 0), self.argument(arg, 1))
        if op == "lowercase":
            return _lowercase(self.argument(arg, 0))
        if op == "typeof":
            return self.typeof(self.argument(arg, 0))
        if op == "length":
            return self.length(self.argument(arg, 0))
        if op == "semver":
            return _semver(self.argument(arg, 0), self.argument(arg, 1), self.argument(arg, 2))
        raise FilterEvaluationError(f"FQL IR could not evaluate for token: {op}")

    @staticmethod
    def _arg(args: list[Any], i: int) -> Any:
        return args[i] if i < len(args) else UNDEFINED

    def argument(self, args: list[Any], i: int) -> Any:
        """A function's argument: tsub reads it with getValue, a nested call left unevaluated."""
        return self.value(self._arg(args, i))

    def equals(self, a: Any, b: Any) -> bool:
        first, second = self.operand(a), self.operand(b)
        if _is_object(first) and _is_object(second):
            first, second = json_stringify(first), json_stringify(second)
        return strict_equals(first, second)

    def in_list(self, a: Any, b: Any) -> bool:
        item, items = self.value(a), self.value(b)
        if items.__class__ is not list:
            raise FilterEvaluationError("list.find is not a function")
        return any(strict_equals(self.value(it), item) for it in items)

    @staticmethod
    def typeof(value: Any) -> str:
        return js_typeof(value)

    @staticmethod
    def length(value: Any) -> float | int:
        if value is None:
            return 0
        if value.__class__ is list:
            return len(value)
        if value.__class__ is str:
            return utf16_length(value)
        return _NAN


class _Segment(_Tsub):
    """tsub, with the answers Segment's FQL reference documents where tsub-js gives others."""

    __slots__ = ()

    def value(self, item: Any) -> Any:
        """A call gives its value and a list literal the values of its items, wherever they are."""
        cls = item.__class__
        if cls is list:
            return self.evaluate(item) if is_call(item) else item
        if cls is dict:
            value = item.get("value", UNDEFINED)
            if value.__class__ is list:
                return [self.value(it) for it in value]
            return value
        return super().value(item)

    def operand(self, item: Any) -> Any:
        return self.value(item)

    def in_list(self, a: Any, b: Any) -> bool:
        item, items = self.value(a), self.value(b)
        if items.__class__ is not list:
            raise FilterEvaluationError("`in` needs a list on its right")
        return any(strict_equals(it, item) for it in items)

    @staticmethod
    def typeof(value: Any) -> str:
        """The reference's names: string, number, bool, null, list (and object, undefined)."""
        if value is None:
            return "null"
        if value.__class__ is list:
            return "list"
        name = js_typeof(value)
        return _REFERENCE_TYPES.get(name, name)

    @staticmethod
    def length(value: Any) -> float | int:
        """Items of a list, UTF-8 bytes of a string, 0 for null."""
        if value.__class__ is str:
            return len(utf8(value))
        return _Tsub.length(value)
