"""FQL, Segment's trigger language: parse a trigger once into a predicate selecting events as Segment does."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from streamproc.core.fql_lexer import EOS as _EOS
from streamproc.core.fql_lexer import Lexer as _Lexer
from streamproc.core.fql_lexer import LexError as _LexError
from streamproc.core.fql_lexer import Token as _Token
from streamproc.core.fql_lexer import position as _position
from streamproc.core.fql_lexer import show as _show
from streamproc.core.js import (
    UNDEFINED,
    code_units,
    number_to_string,
    to_js_string,
    to_number,
    truthy,
)
from streamproc.errors import FQLError

__all__ = [
    "DELIBERATE_DIFFERENCES",
    "DeliberateDifference",
    "FQLSyntaxError",
    "Trigger",
    "compile_segment_ast",
    "parse",
]

Event = Mapping[str, Any]
Predicate = Callable[[Event], bool]


@dataclass(frozen=True)
class DeliberateDifference:
    """One way streamproc knowingly differs from Segment's published code (`parseFql` for triggers;
    tsub, fql-ts and analytics-next for the gates), and why."""

    name: str
    example: str
    segment: str
    streamproc: str


# The single list of places where streamproc does not do what Segment does. Everything else that
# Segment parses selects exactly the same events. `FQLSyntaxError.category` names one of these
# (or is None when Segment itself reports the trigger as invalid).
DELIBERATE_DIFFERENCES: Final[tuple[DeliberateDifference, ...]] = (
    DeliberateDifference(
        "unknown-field",
        'anonymousId != null and type = "track"',
        "silently drops conditions on fields it does not know (anonymousId, messageId, foo, Properties, "
        "lowercase()), and words such as `not`, `AND`, `OR`, `e3` in `1e3`; contains()/match() on `type` "
        "or an unknown field are dropped too",
        "rejects; FQL can test type, event, name, userId, properties.*, traits.*, context.*; use lowercase "
        "`and`/`or`, and `!=` or !contains()/!match() instead of `not`",
    ),
    DeliberateDifference(
        "negation",
        '!(event = "A")',
        "ignores a `!` that is not directly before contains( or match(, so the condition is not negated",
        "rejects; write the negation with `!=`, !contains() or !match()",
    ),
    DeliberateDifference(
        "mixed-and-or",
        'type = "track" and event = "A" or event = "B"',
        "has no precedence: the last `and`/`or` of a level applies to every condition of that level",
        'rejects; add parentheses, e.g. type = "track" and (event = "A" or event = "B")',
    ),
    DeliberateDifference(
        "single-quotes",
        "event = 'Foo'",
        "keeps the single quotes as part of the value, so the condition never matches",
        'rejects; use double quotes: event = "Foo"',
    ),
    DeliberateDifference(
        "double-equals",
        'event == "A"',
        'reads `==` as `=` followed by the value "=", so the condition never matches',
        "rejects; use a single `=`",
    ),
    DeliberateDifference(
        "glued-operator",
        "properties.total <=5",
        'reads `<=5` as `<` followed by the value "=", so the condition never matches',
        "rejects; put a space after the operator: properties.total <= 5",
    ),
    DeliberateDifference(
        "dangling-conjunction",
        'event = "A" and',
        "ignores an `and`/`or` with nothing on one side (also `and or`)",
        "rejects; remove the extra `and`/`or` or add the missing condition",
    ),
    DeliberateDifference(
        "missing-value",
        "type = ",
        'uses the next token as the value (the end of input becomes the text "eos")',
        'rejects; give a value, e.g. type = "track"',
    ),
    DeliberateDifference(
        "match-pattern",
        'match(event, "abc")',
        "has no glob: a pattern not ending in `*` means ends-with after dropping its first character "
        '("abc" = ends with "bc"), and "*abc*" means starts-with "*abc"',
        'rejects patterns other than "prefix*" and "*suffix"; use contains() or `=` for the rest',
    ),
    DeliberateDifference(
        "bare-word",
        "properties.plan = premium",
        "compares with the text of an unquoted word (`True`, `NULL` and `premium` become strings)",
        'rejects; quote text ("premium") and write true/false/null in lowercase',
    ),
    DeliberateDifference(
        "field-path",
        'userId.id = "x" / properties = null / properties.a\\.b = 1',
        "tests a different field: sub-paths of type/event/name/userId are ignored, a bare `properties` "
        "means properties.properties, escaped `.`/`[`/`]` become path separators, and `propertiesX` in "
        "contains()/match() means properties.propertiesX",
        "rejects; name the field as properties.<field> (traits., context.), top-level fields without a path",
    ),
    DeliberateDifference(
        "function-in-group",
        '(contains(event, "A") or event = "B") and type = "track"',
        "ends a parenthesised group at the `)` of the first function call inside it, so the rest of the "
        "group escapes the parentheses",
        "rejects; put the contains()/match() call last inside its parentheses",
    ),
    DeliberateDifference(
        "syntax",
        'event = "A" type = "track"',
        "skips tokens it does not expect (missing `and`/`or`, stray strings, numbers, commas, `)`, `()`, "
        '`contains(event "A")`, a lone `-` as a number) and carries on',
        "rejects and names the position",
    ),
    DeliberateDifference(
        "nested-parentheses",
        '(type = "track" and (event = "A" or event = "B")) or type = "page"',
        "cannot parse nested parentheses (invalid subscription)",
        "supports them, with the usual meaning",
    ),
)

_CATEGORIES: Final = frozenset(d.name for d in DELIBERATE_DIFFERENCES)


class FQLSyntaxError(FQLError):
    """A trigger that is refused; `category` is the deliberate difference involved, or None if Segment
    refuses it too. `position` counts characters from 1."""

    def __init__(self, message: str, position: int | None, fql: str, category: str | None) -> None:
        if category is not None and category not in _CATEGORIES:
            raise ValueError(f"unknown FQL difference category {category!r}")
        super().__init__(message, position, fql)
        self.category = category


def _normalise(tokens: list[_Token]) -> list[_Token]:
    """Merge `ident . ident` into one dotted identifier, as Segment does before parsing."""
    out: list[_Token] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if (
            out
            and out[-1].kind == "ident"
            and tok.kind == "dot"
            and i + 1 < len(tokens)
            and tokens[i + 1].kind == "ident"
        ):
            prev = out.pop()
            nxt = tokens[i + 1]
            out.append(
                _Token(
                    "ident",
                    prev.text + "." + nxt.text,
                    prev.pos,
                    nxt.end,
                    escaped_separator=prev.escaped_separator or nxt.escaped_separator,
                )
            )
            i += 2
        else:
            out.append(tok)
            i += 1
    return out


# --------------------------------------------------------------------------------------------------
# JavaScript value rules used by the evaluator.

_SAFE: Final = 2**53


def _as_double(value: int | float) -> float | int:
    """A JSON number as JavaScript holds it (a double); small integers stay exact ints."""
    if type(value) is int and not -_SAFE <= value <= _SAFE:
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return value


class _JSMember:
    """A built-in function that JavaScript finds on a value's prototype (e.g. `"abc".search`): truthy,
    neither a string nor a number, with the `name` and `length` JavaScript gives it."""

    __slots__ = ("length", "name")

    def __init__(self, name: str, length: int) -> None:
        self.name = name
        self.length = length

    def __repr__(self) -> str:
        return f"<js builtin {self.name}/{self.length}>"


def _arities(spec: str) -> dict[str, tuple[str, int]]:
    """`key:length` or `key:name:length` words -> {key: (function name, length)}."""
    table: dict[str, tuple[str, int]] = {}
    for word in spec.split():
        parts = word.split(":")
        table[parts[0]] = (parts[0] if len(parts) == 2 else parts[1], int(parts[-1]))
    return table


# Members every value inherits from Object.prototype (Node 20), by key: (function name, length).
_OBJECT_PROTO: Final = _arities(
    "hasOwnProperty:1 isPrototypeOf:1 propertyIsEnumerable:1 toLocaleString:0 toString:0 valueOf:0 "
    "__defineGetter__:2 __defineSetter__:2 __lookupGetter__:1 __lookupSetter__:1"
)
_PROTOTYPES: Final = {
    "object": {**_OBJECT_PROTO, **_arities("constructor:Object:1 __proto__:Object:0")},
    "array": {
        **_OBJECT_PROTO,
        **_arities(
            "constructor:Array:1 __proto__:Object:0 at:1 concat:1 copyWithin:2 entries:0 every:1 fill:1 "
            "filter:1 find:1 findIndex:1 findLast:1 findLastIndex:1 flat:0 flatMap:1 forEach:1 includes:1 "
            "indexOf:1 join:1 keys:0 lastIndexOf:1 map:1 pop:0 push:1 reduce:1 reduceRight:1 reverse:0 "
            "shift:0 slice:2 some:1 sort:1 splice:2 toReversed:0 toSorted:1 toSpliced:2 unshift:1 "
            "values:0 with:2"
        ),
    },
    "string": {
        **_OBJECT_PROTO,
        **_arities(
            "constructor:String:1 __proto__:Object:0 at:1 concat:1 includes:1 indexOf:1 lastIndexOf:1 "
            "slice:2 anchor:1 big:0 blink:0 bold:0 charAt:1 charCodeAt:1 codePointAt:1 endsWith:1 fixed:0 "
            "fontcolor:1 fontsize:1 isWellFormed:0 italics:0 link:1 localeCompare:1 match:1 matchAll:1 "
            "normalize:0 padEnd:1 padStart:1 repeat:1 replace:2 replaceAll:2 search:1 small:0 split:2 "
            "startsWith:1 strike:0 sub:0 substr:2 substring:2 sup:0 toLocaleLowerCase:0 "
            "toLocaleUpperCase:0 toLowerCase:0 toUpperCase:0 toWellFormed:0 trim:0 trimEnd:0 "
            "trimLeft:trimStart:0 trimRight:trimEnd:0 trimStart:0"
        ),
    },
    "number": {
        **_OBJECT_PROTO,
        **_arities(
            "constructor:Number:1 __proto__:Object:0 toString:1 toExponential:1 toFixed:1 toPrecision:1"
        ),
    },
    "boolean": {**_OBJECT_PROTO, **_arities("constructor:Boolean:1 __proto__:Object:0")},
    "function": {
        **_OBJECT_PROTO,
        **_arities("constructor:Function:1 __proto__:Object:0 apply:2 bind:1 call:1"),
    },
}
# array indexes are below 2**32 - 1, so longer digit strings are ordinary (absent) keys
_INDEX = re.compile(r"0|[1-9][0-9]{0,9}")


def _inherited(kind: str, key: str) -> Any:
    member = _PROTOTYPES[kind].get(key)
    return UNDEFINED if member is None else _JSMember(*member)


def _js_get(value: Any, key: str) -> Any:
    """`value[key]` in JavaScript, for a truthy JSON value and a string key."""
    if isinstance(value, Mapping):
        found = value.get(key, _MISSING)
        return found if found is not _MISSING else _inherited("object", key)
    if isinstance(value, list | tuple):
        if _INDEX.fullmatch(key):
            index = int(key)
            return value[index] if index < len(value) else UNDEFINED
        if key == "length":
            return len(value)
        return _inherited("array", key)
    if isinstance(value, str):
        units = code_units(value)
        if _INDEX.fullmatch(key):
            index = int(key)
            return units[index] if index < len(units) else UNDEFINED
        if key == "length":
            return len(units)
        return _inherited("string", key)
    if isinstance(value, bool):
        return _inherited("boolean", key)
    if isinstance(value, int | float):
        return _inherited("number", key)
    if isinstance(value, _JSMember):
        # Only a function's own name/length and Function.prototype are modelled; the static members of
        # built-in constructors (e.g. properties.constructor.keys) read as undefined.
        if key == "name":
            return value.name
        if key == "length":
            return value.length
        return _inherited("function", key)
    return UNDEFINED


class _Missing:
    pass


_MISSING: Final = _Missing()
_SEGMENT = re.compile(r"[^\[.\]]+")


def _path_getter(container: str, name: str) -> Callable[[Event], Any]:
    """Segment's `get(event[container], name)`: stops at the first falsy value and returns it."""
    segments = tuple(_SEGMENT.findall(name))

    def get(event: Event) -> Any:
        current = event.get(container, UNDEFINED)
        for segment in segments:
            if type(current) is dict:
                found = current.get(segment, _MISSING)
                current = found if found is not _MISSING else _js_get(current, segment)
                continue
            if not truthy(current):
                return current
            current = _js_get(current, segment)
        return current

    if len(segments) == 1:
        (only,) = segments

        def get_one(event: Event) -> Any:
            current = event.get(container, UNDEFINED)
            if type(current) is dict:
                found = current.get(only, _MISSING)
                return found if found is not _MISSING else _js_get(current, only)
            if not truthy(current):
                return current
            return _js_get(current, only)

        return get_one
    return get


def _top_getter(field: str) -> Callable[[Event], Any]:
    def get(event: Event) -> Any:
        return event.get(field, UNDEFINED)

    return get


# --------------------------------------------------------------------------------------------------
# Compiling Segment-shaped conditions to predicates.

_CONDITION_FIELDS: Final = {
    "event-type": "type",
    "event": "event",
    "name": "name",
    "userId": "userId",
}
_CONTAINERS: Final = {"event-property": "properties", "event-trait": "traits", "event-context": "context"}


def _is_number(value: Any) -> bool:
    return (
        type(value) is int
        or type(value) is float
        or (isinstance(value, int | float) and not isinstance(value, bool))
    )


def _compile_condition(node: Mapping[str, Any]) -> Predicate:
    kind = node.get("type")
    if kind in _CONDITION_FIELDS:
        field = _CONDITION_FIELDS[kind]
        get = _top_getter(field)
    elif kind in _CONTAINERS:
        get = _path_getter(_CONTAINERS[kind], str(node.get("name", "")))
    else:
        return _never
    op = node.get("operator")
    expected = node.get("value", UNDEFINED)

    if op in ("=", "!="):
        text = to_js_string(expected)
        if kind in _CONDITION_FIELDS:
            field = _CONDITION_FIELDS[kind]
            if op == "=":
                return lambda e: e.get(field) == text
            return lambda e: e.get(field) != text
        if op == "=":
            return lambda e: get(e) == text
        return lambda e: get(e) != text
    if op in ("number_equals", "number_not_equals", "<", "<=", ">", ">="):
        number = to_number(expected)
        compare: Callable[[Any, float], bool] = {
            "number_equals": operator.eq,
            "number_not_equals": operator.ne,
            "<": operator.lt,
            "<=": operator.le,
            ">": operator.gt,
            ">=": operator.ge,
        }[op]
        return _numeric(get, compare, number)
    if op in ("contains", "not_contains", "starts_with", "not_starts_with", "ends_with", "not_ends_with"):
        return _textual(get, op, to_js_string(expected))
    if op == "exists":
        return lambda e: _exists(get(e))
    if op == "not_exists":
        return lambda e: not _exists(get(e))
    if op == "is_true":
        return lambda e: get(e) is True
    if op == "is_false":
        return lambda e: get(e) is False
    return _never


def _exists(value: Any) -> bool:
    return value is not None and value is not UNDEFINED


def _never(event: Event) -> bool:
    return False


def _numeric(get: Callable[[Event], Any], compare: Callable[[Any, float], bool], number: float) -> Predicate:
    def check(event: Event) -> bool:
        actual = get(event)
        kind = type(actual)
        if kind is float:
            return compare(actual, number)
        if kind is int:
            if -_SAFE <= actual <= _SAFE:
                return compare(actual, number)
            return compare(_as_double(actual), number)
        if _is_number(actual):
            return compare(_as_double(actual), number)
        return False

    return check


def _textual(get: Callable[[Event], Any], op: str, text: str) -> Predicate:
    if op == "contains":
        return lambda e: isinstance(a := get(e), str) and text in a
    if op == "not_contains":
        return lambda e: isinstance(a := get(e), str) and text not in a
    if op == "starts_with":
        return lambda e: isinstance(a := get(e), str) and a.startswith(text)
    if op == "not_starts_with":
        return lambda e: isinstance(a := get(e), str) and not a.startswith(text)
    if op == "ends_with":
        return lambda e: isinstance(a := get(e), str) and a.endswith(text)
    return lambda e: isinstance(a := get(e), str) and not a.endswith(text)


def _all(predicates: list[Predicate]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        a, b = predicates
        return lambda e: a(e) and b(e)
    if len(predicates) == 3:
        a, b, c = predicates
        return lambda e: a(e) and b(e) and c(e)
    items = tuple(predicates)

    def every(event: Event) -> bool:
        # a plain loop: measurably faster than all() over a generator on the per-event path
        for predicate in items:  # noqa: SIM110
            if not predicate(event):
                return False
        return True

    return every


def _any(predicates: list[Predicate]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        a, b = predicates
        return lambda e: a(e) or b(e)
    if len(predicates) == 3:
        a, b, c = predicates
        return lambda e: a(e) or b(e) or c(e)
    items = tuple(predicates)

    def some(event: Event) -> bool:
        for predicate in items:  # noqa: SIM110
            if predicate(event):
                return True
        return False

    return some


def _compile_node(node: Mapping[str, Any]) -> Predicate:
    if node.get("type") == "group":
        children = [_compile_node(child) for child in node.get("children", ())]
        operator = node.get("operator")
        if operator == "and":
            return _all(children) if children else (lambda e: True)
        if operator == "or":
            return _any(children) if children else _never
        return _never
    return _compile_condition(node)


def compile_segment_ast(ast: Mapping[str, Any]) -> Predicate:
    """A predicate for a condition tree in Segment's own AST shape (what `parseFql` returns).

    An AST carrying `error` never matches, as in Segment's `validate`."""
    if "error" in ast:
        return _never
    if ast.get("type") != "group":
        return _never
    root = _compile_node(ast)

    def matches(event: Event) -> bool:
        try:
            return root(event)
        except AttributeError:
            if isinstance(event, Mapping):
                raise
            # not an object: Segment answers false for undefined and reads every field of any other
            # value as undefined
            return event is not UNDEFINED and root({})

    return matches


# --------------------------------------------------------------------------------------------------
# Parser: accepts exactly the triggers that Segment reads without skipping or reinterpreting a token
# (plus nested parentheses), and builds Segment's AST for them.

_ROOTS: Final = {
    "type": "event-type",
    "event": "event",
    "name": "name",
    "userId": "userId",
    "properties": "event-property",
    "traits": "event-trait",
    "context": "event-context",
}
_TOP_LEVEL: Final = ("type", "event", "name", "userId")
_CONTAINER_ROOTS: Final = ("properties", "traits", "context")
_FUNCTIONS: Final = ("contains", "match")
_MAX_DEPTH: Final = 64  # keeps parsing and matching far from Python's recursion limit
_NOT_TESTABLE: Final = frozenset(
    [
        "anonymousId",
        "messageId",
        "timestamp",
        "sentAt",
        "receivedAt",
        "originalTimestamp",
        "integrations",
        "groupId",
        "previousId",
        "channel",
        "version",
        "writeKey",
    ]
)


@dataclass(slots=True)
class _Item:
    node: dict[str, Any]
    token: _Token
    is_function: bool


class _Parser:
    def __init__(self, text: str, units: list[str], tokens: list[_Token]) -> None:
        self.text = text
        self.units = units
        self.tokens = tokens
        self.i = 0
        self.nested = False
        self.functions = 0  # contains()/match() calls seen so far

    # -- helpers
    def peek(self, ahead: int = 0) -> _Token:
        index = min(self.i + ahead, len(self.tokens) - 1)
        return self.tokens[index]

    def advance(self) -> _Token:
        tok = self.tokens[self.i]
        if self.i < len(self.tokens) - 1:
            self.i += 1
        return tok

    def fail(self, unit_pos: int, category: str | None, problem: str, fix: str) -> FQLSyntaxError:
        return _error(self.text, self.units, unit_pos, category, problem, fix)

    # -- grammar
    def parse(self) -> dict[str, Any]:
        first = self.peek()
        if first.kind == "eos":
            raise self.fail(0, None, "the trigger is empty", 'write a condition, e.g. type = "track"')
        node = self.level(0, None)
        if node.get("type") != "group":
            node = {"type": "group", "operator": "and", "children": [node]}
        return node

    def level(self, depth: int, opener: _Token | None) -> dict[str, Any]:
        functions_before = self.functions
        items = [self.item(depth)]
        conjunction: str | None = None
        while True:
            tok = self.peek()
            if tok.kind == "eos":
                if opener is not None:
                    if self.functions > functions_before:
                        # Segment closes the group at the function's ')' and accepts the trigger
                        raise self.fail(
                            opener.pos,
                            "function-in-group",
                            "'(' is never closed (Segment closes it at the ')' of the function call inside)",
                            "add the missing ')'",
                        )
                    raise self.fail(opener.pos, None, "'(' is never closed", "add the missing ')'")
                break
            if tok.kind == "parenright":
                if opener is None:
                    raise self.fail(tok.pos, "syntax", "')' without a matching '('", "remove it")
                break
            if tok.kind == "conditional":
                self.advance()
                if conjunction is not None and tok.text != conjunction:
                    raise self.fail(
                        tok.pos,
                        "mixed-and-or",
                        f"'{tok.text}' after '{conjunction}' at the same level (Segment has no precedence "
                        f"and would apply '{tok.text}' to every condition of this level)",
                        "add parentheses, e.g. a and (b or c)",
                    )
                conjunction = tok.text
                nxt = self.peek()
                if nxt.kind in ("eos", "parenright", "conditional"):
                    raise self.fail(
                        tok.pos,
                        "dangling-conjunction",
                        f"'{tok.text}' has no condition after it",
                        f"remove '{tok.text}' or add the missing condition",
                    )
                items.append(self.item(depth))
                continue
            raise self.unexpected_after_condition(tok)
        if opener is not None:
            for item in items[:-1]:
                if item.is_function:
                    raise self.fail(
                        item.token.pos,
                        "function-in-group",
                        f"{item.token.text}() is not the last item inside its parentheses (Segment closes "
                        "the group at the function's ')')",
                        f"move the {item.token.text}() call to the end of the parenthesised group",
                    )
        if len(items) == 1:
            return items[0].node
        return {"type": "group", "operator": conjunction, "children": [item.node for item in items]}

    def unexpected_after_condition(self, tok: _Token) -> FQLSyntaxError:
        if tok.kind == "ident" and tok.text.split(".")[0] not in _ROOTS and tok.text not in _FUNCTIONS:
            prev = self.tokens[self.i - 1] if self.i else None
            if prev is not None and prev.kind == "number" and tok.text[:1] in "eE" and prev.end == tok.pos:
                return self.fail(
                    tok.pos, "unknown-field", "FQL numbers have no exponent", "write the number out in full"
                )
            return self.unknown_field(tok)
        if tok.kind == "string" or tok.kind == "number":
            prev = self.tokens[self.i - 1] if self.i else None
            if prev is not None and prev.kind == "string" and not prev.closed:
                return self.unclosed_string(prev)
        return self.fail(
            tok.pos,
            "syntax",
            f"{_describe(tok)} where 'and', 'or' or the end was expected",
            "join conditions with 'and' / 'or' and remove stray text",
        )

    def unclosed_string(self, tok: _Token) -> FQLSyntaxError:
        """A string whose closing quote is directly followed by a character other than a space, ',',
        ')' or ']': Segment's lexer then reads that quote as the start of another string."""
        after = self.units[tok.end + 1] if tok.end + 1 < len(self.units) else _EOS
        if after == "\r":
            fix = "use LF line endings (a carriage return is not allowed in FQL)"
        else:
            fix = "put a space, ',' or ')' after the closing quote; FQL strings cannot contain '\"'"
        return self.fail(
            tok.end,
            "syntax",
            f"the closing quote of {tok.text} is followed directly by {_show(after)}, so Segment reads it as "
            "the start of another string (FQL strings have no escapes)",
            fix,
        )

    def unknown_field(self, tok: _Token) -> FQLSyntaxError:
        text = tok.text
        root = text.split(".")[0]
        lowered = {name.lower(): name for name in _ROOTS}
        if text in ("AND", "OR", "And", "Or", "aNd", "oR") or text.lower() in ("and", "or"):
            return self.fail(
                tok.pos, "unknown-field", f"'{text}' is not a keyword", f"write '{text.lower()}'"
            )
        if text == "not" or text.lower() == "not":
            return self.fail(
                tok.pos,
                "unknown-field",
                "FQL has no 'not' (Segment ignores the word)",
                "use '!=' or !contains() / !match()",
            )
        index = next((i for i, t in enumerate(self.tokens) if t is tok), len(self.tokens) - 1)
        if self.tokens[min(index + 1, len(self.tokens) - 1)].kind == "parenleft":
            return self.fail(
                tok.pos,
                "unknown-field",
                f"FQL has no function {text}()",
                'the only functions are contains(field, "text") and match(field, "pattern*")',
            )
        if root.lower() in lowered:
            right = lowered[root.lower()]
            return self.fail(
                tok.pos,
                "unknown-field",
                f"unknown field '{root}' (names are case-sensitive)",
                f"write '{right}'",
            )
        if root in _NOT_TESTABLE:
            return self.fail(
                tok.pos,
                "unknown-field",
                f"FQL cannot test '{root}' (Segment silently drops the condition)",
                "test type, event, name, userId, properties.*, traits.* or context.* instead",
            )
        return self.fail(
            tok.pos,
            "unknown-field",
            f"unknown field '{root}' (Segment silently drops it)",
            "FQL can test type, event, name, userId, properties.<path>, traits.<path>, context.<path>",
        )

    def item(self, depth: int) -> _Item:
        tok = self.peek()
        if tok.kind == "parenleft":
            self.advance()
            if depth >= 1:
                self.nested = True
            if depth >= _MAX_DEPTH:
                raise self.fail(
                    tok.pos,
                    None,
                    f"parentheses nested more than {_MAX_DEPTH} levels deep",
                    "simplify the trigger",
                )
            if self.peek().kind == "parenright":
                raise self.fail(
                    tok.pos, "syntax", "empty parentheses", "put a condition inside or remove them"
                )
            node = self.level(depth + 1, tok)
            self.advance()  # the ')' that ended the level
            return _Item(node, tok, False)
        if tok.kind == "operator" and tok.text == "!":
            nxt = self.peek(1)
            if nxt.kind == "ident" and nxt.text in _FUNCTIONS and self.peek(2).kind == "parenleft":
                self.advance()
                return self.function(negate=True)
            if nxt.kind == "parenleft":
                problem = "'!' before '(' does not negate the group (Segment ignores it)"
                fix = "negate each condition instead ('!=', !contains(), !match()) and swap and/or"
            else:
                problem = "'!' only negates contains() and match() (Segment ignores it here)"
                fix = "use '!=' to negate a comparison"
            raise self.fail(tok.pos, "negation", problem, fix)
        if tok.kind == "ident":
            if tok.text in _FUNCTIONS:
                if self.peek(1).kind != "parenleft":
                    raise self.fail(
                        tok.pos,
                        "syntax",
                        f"'{tok.text}' is a function",
                        f'call it as {tok.text}(field, "text")',
                    )
                return self.function(negate=False)
            return self.condition()
        if tok.kind == "conditional":
            raise self.fail(
                tok.pos,
                "dangling-conjunction",
                f"'{tok.text}' has no condition before it",
                f"remove '{tok.text}' or add the missing condition",
            )
        if tok.kind == "eos":
            raise self.fail(tok.pos, None, "a condition is missing at the end", "complete the trigger")
        raise self.fail(
            tok.pos,
            "syntax",
            f"{_describe(tok)} where a condition was expected",
            'start a condition with a field, e.g. event = "Order Completed"',
        )

    def field(self, tok: _Token) -> tuple[str, str | None]:
        """The Segment condition type and (for properties/traits/context) the path name of a field."""
        text = tok.text
        root = text.split(".")[0]
        if root not in _ROOTS:
            raise self.unknown_field(tok)
        if root in _TOP_LEVEL:
            if text != root:
                raise self.fail(
                    tok.pos,
                    "field-path",
                    f"'{root}' has no sub-fields "
                    f"(Segment ignores '{text[len(root) :]}' and tests {root} itself)",
                    f"test '{root}' directly, or use properties/traits/context for nested values",
                )
            return _ROOTS[root], None
        if text == root:
            raise self.fail(
                tok.pos,
                "field-path",
                f"bare '{root}' (Segment would look up {root}.{root})",
                f"name a field inside it, e.g. {root}.plan",
            )
        self.check_path(tok)
        return _ROOTS[root], text[len(root) + 1 :]

    def check_path(self, tok: _Token) -> None:
        if tok.escaped_separator:
            raise self.fail(
                tok.pos,
                "field-path",
                "an escaped '.', '[' or ']' in a field name (Segment still splits the path there)",
                "FQL cannot address keys that contain '.', '[' or ']'",
            )

    def condition(self) -> _Item:
        field_tok = self.advance()
        op_tok = self.peek()
        if op_tok.kind != "dot":
            kind, name = self.field(field_tok)
        elif field_tok.text.split(".")[0] not in _ROOTS:
            raise self.unknown_field(field_tok)
        if op_tok.kind == "dot":
            after = self.peek(1)
            raise self.fail(
                op_tok.pos,
                "field-path",
                f"{_describe(after)} cannot be a path segment",
                "FQL path segments are names starting with a letter or '_'; "
                "they cannot be and/or/null or array indexes",
            )
        if op_tok.kind != "operator" or op_tok.text == "!":
            raise self.fail(
                op_tok.pos,
                "syntax" if op_tok.kind != "eos" else None,
                f"{_describe(op_tok)} where an operator was expected after '{field_tok.text}'",
                'use =, !=, <, <=, >, >=, e.g. event = "Order Completed"',
            )
        self.advance()
        op = op_tok.text
        value_tok = self.peek()
        value = self.value(op_tok, value_tok)
        self.advance()
        node = _segment_condition(kind, name, op, value_tok, value)
        return _Item(node, field_tok, False)

    def value(self, op_tok: _Token, tok: _Token) -> Any:
        if tok.kind == "operator" and tok.text == "=":
            if op_tok.text == "=":
                raise self.fail(op_tok.pos, "double-equals", "'==' is not an FQL operator", "use '='")
            if op_tok.text in ("<", ">"):
                raise self.fail(
                    op_tok.pos,
                    "glued-operator",
                    f"'{op_tok.text}=' directly followed by its value reads as '{op_tok.text}' and '='",
                    f"put a space after the operator: '{op_tok.text}= '",
                )
        if tok.kind == "string":
            if tok.text.startswith("'"):
                raise self.fail(
                    tok.pos,
                    "single-quotes",
                    "a single-quoted string (Segment keeps the quotes as part of the value)",
                    f'use double quotes: "{tok.text[1:-1]}"',
                )
            if not tok.closed:
                self.advance()
                raise self.unexpected_after_condition(self.peek())
            return tok.text[1:-1]
        if tok.kind == "number":
            number = to_number(tok.text)
            if math.isnan(number):
                raise self.fail(
                    tok.pos, "syntax", f"'{tok.text}' is not a number", "write digits after the sign"
                )
            return number
        if tok.kind == "null":
            return None
        if tok.kind == "ident":
            if tok.text == "true":
                return True
            if tok.text == "false":
                return False
            lowered = tok.text.lower()
            fix = f'quote it: "{tok.text}"'
            if lowered in ("true", "false", "null"):
                fix = f'write {lowered} in lowercase, or quote it: "{tok.text}"'
            raise self.fail(
                tok.pos,
                "bare-word",
                f"unquoted word '{tok.text}' (Segment compares it as the text \"{tok.text}\")",
                fix,
            )
        raise self.fail(
            op_tok.pos,
            "missing-value",
            f"'{op_tok.text}' has no value (found {_describe(tok)})",
            'add a value, e.g. type = "track", properties.total > 5, userId != null',
        )

    def function(self, negate: bool) -> _Item:
        self.functions += 1
        name_tok = self.advance()
        name = name_tok.text
        self.advance()  # '(' (checked by the caller)
        field_tok = self.advance()
        kind, path = self.function_field(name, field_tok)
        comma = self.advance()
        if comma.kind != "comma":
            raise self.fail(
                comma.pos, "syntax", f"{_describe(comma)} in {name}()", f'write {name}(field, "text")'
            )
        value_tok = self.advance()
        if name == "contains":
            text = self.function_text(name, value_tok)
            operator = "not_contains" if negate else "contains"
        else:
            operator, text = self.match_pattern(value_tok, negate)
        close = self.advance()
        if close.kind != "parenright":
            raise self.fail(
                close.pos, "syntax", f"{_describe(close)} where {name}() should end", "close it with ')'"
            )
        node: dict[str, Any] = {"type": kind, "operator": operator, "value": text}
        if path is not None:
            node = {"type": kind, "name": path, "operator": operator, "value": text}
        return _Item(node, name_tok, True)

    def function_field(self, name: str, tok: _Token) -> tuple[str, str | None]:
        text = tok.text
        if tok.kind == "ident":
            if text in ("event", "name", "userId"):
                return _ROOTS[text], None
            for root in _CONTAINER_ROOTS:
                if text.startswith(root):
                    if not text.startswith(root + "."):
                        raise self.fail(
                            tok.pos,
                            "field-path",
                            f"'{text}' in {name}() (Segment reads it as {root}.{text})",
                            f"name a field inside {root}, e.g. {root}.plan",
                        )
                    self.check_path(tok)
                    return _ROOTS[root], text[len(root) + 1 :]
            if text == "type":
                raise self.fail(
                    tok.pos,
                    "unknown-field",
                    f"{name}() cannot test 'type' (Segment drops the condition)",
                    'compare it instead: type = "track"',
                )
            if text.split(".")[0] in _TOP_LEVEL:
                raise self.fail(
                    tok.pos,
                    "unknown-field",
                    f"'{text}' in {name}() (sub-fields of top-level fields are not supported; Segment "
                    "drops the condition)",
                    "test the top-level field itself",
                )
            raise self.unknown_field(tok)
        if tok.kind in ("eos", "parenright"):
            raise self.fail(tok.pos, None if tok.kind == "eos" else "syntax", f"{name}() has no field", "")
        raise self.fail(
            tok.pos,
            "unknown-field",
            f"{_describe(tok)} as the field of {name}() (Segment drops the condition)",
            f'write the field name without quotes, e.g. {name}(properties.plan, "x")',
        )

    def function_text(self, name: str, tok: _Token) -> str:
        if tok.kind == "string":
            if tok.text.startswith("'"):
                raise self.fail(
                    tok.pos,
                    "single-quotes",
                    "a single-quoted string (Segment keeps the quotes as part of the value)",
                    f'use double quotes: "{tok.text[1:-1]}"',
                )
            if not tok.closed:
                raise self.unclosed_string(tok)
            return tok.text[1:-1]
        if tok.kind == "number":
            number = to_number(tok.text)
            if math.isnan(number):
                raise self.fail(tok.pos, "syntax", f"'{tok.text}' is not a number", "write digits")
            return number_to_string(number)
        if tok.kind == "null":
            return "null"
        if tok.kind == "ident":
            if tok.text in ("true", "false"):
                return tok.text
            raise self.fail(
                tok.pos,
                "bare-word",
                f"unquoted word '{tok.text}' (Segment searches for the text \"{tok.text}\")",
                f'quote it: "{tok.text}"',
            )
        raise self.fail(
            tok.pos,
            "missing-value" if tok.kind in ("parenright", "comma", "eos") else "syntax",
            f"{name}() has no text to look for (found {_describe(tok)})",
            f'write {name}(field, "text")',
        )

    def match_pattern(self, tok: _Token, negate: bool) -> tuple[str, str]:
        if tok.kind == "string" and tok.text.startswith("'"):
            raise self.fail(
                tok.pos,
                "single-quotes",
                "a single-quoted pattern (Segment keeps the quotes, so it is not a pattern)",
                f'use double quotes: "{tok.text[1:-1]}"',
            )
        if tok.kind != "string":
            if tok.kind in ("parenright", "comma", "eos"):
                raise self.fail(
                    tok.pos, "missing-value", "match() has no pattern", 'write match(field, "A*")'
                )
            raise self.fail(
                tok.pos,
                "match-pattern",
                f"{_describe(tok)} as a match() pattern",
                'write a double-quoted pattern "prefix*" or "*suffix"',
            )
        if not tok.closed:
            raise self.unclosed_string(tok)
        body = tok.text[1:-1]
        if body.endswith("*") and "*" not in body[:-1]:
            return ("not_starts_with" if negate else "starts_with"), body[:-1]
        if body.startswith("*") and "*" not in body[1:]:
            return ("not_ends_with" if negate else "ends_with"), body[1:]
        if "*" not in body:
            problem = f'pattern "{body}" has no \'*\' (Segment reads it as ends-with "{body[1:]}")'
            fix = f'use "{body}*" (starts with), "*{body}" (ends with), or contains()/= for the exact text'
        else:
            problem = f"pattern \"{body}\" (only one leading or one trailing '*' is a wildcard in Segment)"
            fix = 'use "prefix*" or "*suffix"; use contains() to find text anywhere'
        raise self.fail(tok.pos, "match-pattern", problem, fix)


def _describe(tok: _Token) -> str:
    if tok.kind == "eos":
        return "the end of the trigger"
    if tok.kind == "string":
        return f"the string {tok.text}"
    if tok.kind == "number":
        return f"the number {tok.text}"
    if tok.kind == "ident":
        return f"'{tok.text}'"
    if tok.kind == "conditional":
        return f"'{tok.text}'"
    return f"'{tok.text}'"


def _segment_condition(kind: str, name: str | None, op: str, tok: _Token, value: Any) -> dict[str, Any]:
    """Segment's condition node for `field op value` (value: str, float, True, False or None for null)."""
    is_null = tok.kind == "null"
    is_number = tok.kind == "number"
    token_value: Any = "null" if is_null else value
    special: str | None = None
    if kind in ("name", "userId") or name is not None:
        if op == "!=" and is_null:
            special = "exists"
        elif op == "=" and is_null:
            special = "not_exists"
    if kind == "userId" or name is not None:
        if special is None and op == "=" and value is True and tok.kind == "ident":
            special = "is_true"
        elif special is None and op == "=" and value is False and tok.kind == "ident":
            special = "is_false"
    node: dict[str, Any] = {"type": kind}
    if name is not None:
        node["name"] = name
        if special is None and is_number and op in ("=", "!="):
            special = "number_equals" if op == "=" else "number_not_equals"
            node.update(operator=special, value=token_value)
            return node
        if special is not None:
            node["operator"] = special
            return node
        node.update(operator=op, value=token_value)
        return node
    if special is not None:
        node["operator"] = special
        return node
    node.update(operator=op, value=to_js_string(token_value))
    return node


def _error(
    text: str, units: list[str], unit_pos: int, category: str | None, problem: str, fix: str
) -> FQLSyntaxError:
    position = _position(units, unit_pos)
    message = f"FQL error at position {position}: {problem}"
    if fix:
        message += f"; {fix}"
    return FQLSyntaxError(message, position, text, category)


class Trigger:
    """A parsed trigger: `matches(event)` says whether Segment would send the event to the subscription."""

    __slots__ = ("ast", "extensions", "fql", "matches")

    fql: str
    ast: dict[str, Any]
    extensions: frozenset[str]
    matches: Callable[[Event], bool]

    def __init__(self, fql: str, ast: dict[str, Any], extensions: frozenset[str] = frozenset()) -> None:
        self.fql = fql
        self.ast = ast  # Segment's AST shape, for inspection and tests
        self.extensions = extensions  # deliberate differences this trigger relies on
        self.matches = compile_segment_ast(ast)

    def __repr__(self) -> str:
        return f"Trigger({self.fql!r})"

    def literal_equalities(self) -> list[tuple[str, str]] | None:
        """The trigger as (field, text) pairs when it is nothing but `field = "text"` tests of
        type, event, name or userId joined by `or` (or one such test): it matches exactly the
        events whose field is a string equal to one of the texts. None for any other trigger."""
        ast = self.ast
        children = ast.get("children")
        if ast.get("type") != "group" or not isinstance(children, list) or not children:
            return None
        if ast.get("operator") != "or" and len(children) != 1:
            return None
        pairs = []
        for child in children:
            field = _CONDITION_FIELDS.get(child.get("type"))
            value = child.get("value")
            if field is None or child.get("operator") != "=" or not isinstance(value, str):
                return None
            pairs.append((field, value))
        return pairs


def parse(text: str) -> Trigger:
    """Parse and compile an FQL trigger; raises FQLError (an FQLSyntaxError) naming the position and fix."""
    if not isinstance(text, str):
        raise FQLSyntaxError("FQL error: a trigger must be a string", None, repr(text), None)
    units = code_units(text)
    try:
        tokens = _Lexer(units).lex()
    except _LexError as exc:
        fix = exc.fix
        if "\r" in text and "LF" not in fix:
            # a CR after a closing quote keeps the quote open, so the real cause can look unrelated
            fix += "; also use LF line endings (a carriage return is not allowed in FQL)"
        raise _error(text, units, exc.pos, None, exc.problem, fix) from None
    parser = _Parser(text, units, _normalise(tokens))
    ast = parser.parse()
    extensions = frozenset({"nested-parentheses"}) if parser.nested else frozenset()
    return Trigger(text, ast, extensions)
