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
from collections.abc import Callable
from typing import Any, Final, Literal

from streamproc.core.filters.glob import glob_matches
from streamproc.core.filters.paths import getter
from streamproc.core.js import UNDEFINED, code_units, json_stringify, trim, truthy, utf8, utf16_length
from streamproc.core.js import typeof as js_typeof

__all__ = ["Dialect", "FilterEvaluationError", "compile_condition", "evaluate", "matches"]

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


def compile_condition(ir: Any, dialect: Dialect = "segment") -> Callable[[Any], bool]:
    """The condition as a function of the event: whether it holds (only a boolean `true` result
    counts, as in tsub's `matches`). Raises FilterEvaluationError where tsub would throw."""
    condition = (_Tsub if dialect == "tsub" else _Segment)().condition(ir)

    def holds(event: Any) -> bool:
        result = condition(event)
        return result if result.__class__ is bool else False

    return holds


def matches(ir: Any, event: Any, dialect: Dialect = "segment") -> bool:
    """Whether the condition holds for the event (compiled for this one call)."""
    return compile_condition(ir, dialect)(event)


def evaluate(ir: Any, event: Any, dialect: Dialect = "segment") -> Any:
    """The raw result of the IR (a function call alone gives its value, e.g. a lowercased string)."""
    return (_Tsub if dialect == "tsub" else _Segment)().condition(ir)(event)


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


def _truth(value: Any) -> bool:
    """JavaScript truthiness, quick for the booleans conditions give."""
    return value is True or (value is not False and truthy(value))


def _relation(a: Any, b: Any, op: str) -> bool:
    ta, tb = a.__class__, b.__class__
    if (ta is not int and ta is not float) or (tb is not int and tb is not float):
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


Getter = Callable[[Any], Any]
"""A compiled piece of a condition: a function of the event."""


def _const(value: Any) -> Getter:
    return lambda _event: value


def _whole(event: Any) -> Any:
    return event  # dlv with a key that is not text answers the whole object


def _fail(message: str) -> Getter:
    def fail(_event: Any) -> Any:
        raise FilterEvaluationError(message)

    return fail


class _Tsub:
    """Compiles tsub's IR, node by node as tsub's fqlEvaluate reads it, into functions of the event."""

    # -- operands ----------------------------------------------------------------------------------
    def value(self, item: Any) -> Getter:
        """tsub's getValue: a list as it is, `{"value": v}` as v, a string as a field path."""
        cls = item.__class__
        if cls is list:
            return _const(item)
        if cls is dict:
            return _const(item.get("value", UNDEFINED))
        if cls is str:
            return getter(item)
        if item is None or item is UNDEFINED:
            return _fail("the condition reads an operand that is missing or null")
        return _whole

    def operand(self, item: Any) -> Getter:
        """A value as a comparison reads it: a function call is evaluated first, even one that
        came out of the event."""
        get = self.value(item)

        def operand(event: Any) -> Any:
            value = get(event)
            return self.condition(value)(event) if is_call(value) else value

        return operand

    def argument(self, item: Any) -> Getter:
        """A function's argument: tsub reads it with getValue, a nested call left unevaluated."""
        return self.value(item)

    # -- conditions --------------------------------------------------------------------------------
    def condition(self, ir: Any) -> Getter:
        if ir.__class__ is not list:
            get = self.value(ir)
            return lambda event: get(event) is True
        if not ir:
            return _fail("FQL IR could not evaluate for token: undefined")
        op, args = ir[0], ir[1:]
        if op.__class__ is not str:
            return _fail(f"FQL IR could not evaluate for token: {op!r}")

        def arg(i: int) -> Any:
            return args[i] if i < len(args) else UNDEFINED

        if op == "!":
            inner = self.condition(arg(0))
            return lambda event: not _truth(inner(event))
        if op == "or" or op == "and":
            parts = [self.condition(c) for c in args]
            if len(parts) == 2:  # what `a or b or c` compiles to: binary, nested to the right
                first, second = parts
                if op == "or":
                    return lambda event: _truth(first(event)) or _truth(second(event))
                return lambda event: _truth(first(event)) and _truth(second(event))
            if op == "or":
                return lambda event: any(_truth(c(event)) for c in parts)
            return lambda event: all(_truth(c(event)) for c in parts)
        if op == "=" or op == "!=":
            equal = self.equals(arg(0), arg(1))
            return equal if op == "=" else lambda event: not equal(event)
        if op in _RELATIONAL:
            left, right = self.operand(arg(0)), self.operand(arg(1))
            return lambda event: _relation(left(event), right(event), op)
        if op == "in":
            return self.in_list(arg(0), arg(1))
        if op in _FUNCTIONS:
            fn = _FUNCTIONS[op] if op not in ("typeof", "length") else getattr(self, op)
            if op == "semver":
                a, b, c = self.argument(arg(0)), self.argument(arg(1)), self.argument(arg(2))
                return lambda event: _semver(a(event), b(event), c(event))
            if op in _BINARY:
                a, b = self.argument(arg(0)), self.argument(arg(1))
                return lambda event: fn(a(event), b(event))
            a = self.argument(arg(0))
            return lambda event: fn(a(event))
        return _fail(f"FQL IR could not evaluate for token: {op}")

    def equals(self, a: Any, b: Any) -> Getter:
        left, right = self.operand(a), self.operand(b)

        def equal(event: Any) -> bool:
            first, second = left(event), right(event)
            if _is_object(first) and _is_object(second):
                first, second = json_stringify(first), json_stringify(second)
            return strict_equals(first, second)

        return equal

    not_a_list = "list.find is not a function"

    def element(self, item: Any, event: Any) -> Any:
        """An item of the list `in` searches: tsub reads each with getValue, even the event's own."""
        return self.value(item)(event)

    def in_list(self, a: Any, b: Any) -> Getter:
        get_item, get_items = self.value(a), self.value(b)

        def found(event: Any) -> bool:
            item, items = get_item(event), get_items(event)
            if items.__class__ is not list:
                raise FilterEvaluationError(self.not_a_list)
            return any(strict_equals(self.element(it, event), item) for it in items)

        return found

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

    def value(self, item: Any) -> Getter:
        """A call gives its value and a list literal the values of its items, wherever they are."""
        cls = item.__class__
        if cls is list:
            return self.condition(item) if is_call(item) else _const(item)
        if cls is dict:
            value = item.get("value", UNDEFINED)
            if value.__class__ is list:
                items = [self.value(it) for it in value]
                return lambda event: [get(event) for get in items]
            return _const(value)
        return super().value(item)

    def operand(self, item: Any) -> Getter:
        return self.value(item)

    def equals(self, a: Any, b: Any) -> Getter:
        literal = b.get("value", UNDEFINED) if b.__class__ is dict else UNDEFINED
        if literal.__class__ is str:  # the usual condition: a field against a text
            left = self.value(a)

            def equal(event: Any) -> bool:
                value = left(event)
                return value.__class__ is str and value == literal

            return equal
        return super().equals(a, b)

    not_a_list = "`in` needs a list on its right"

    def element(self, item: Any, event: Any) -> Any:
        """An item of the list `in` searches, as it is (a literal list's items are values already)."""
        return item

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


_FUNCTIONS: Final[dict[str, Callable[..., Any]]] = {
    "contains": _contains,
    "match": _match,
    "lowercase": _lowercase,
    "typeof": js_typeof,
    "length": _Tsub.length,
    "semver": _semver,
}
