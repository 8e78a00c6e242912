"""Validates and coerces a mapped payload against an action's fields, the way Segment's runtime does."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from streamproc.core import fast_paths
from streamproc.core.fields import Choice, ConditionalRequired, Field
from streamproc.core.js import (
    UNDEFINED,
    date_parse,
    json_stringify,
    number_to_string,
    string_to_number,
    utf16_length,
)
from streamproc.errors import PayloadValidationError

__all__ = ["UNDECIDED", "PayloadSchema"]

UNDECIDED: Final = object()
"""What code from `PayloadSchema.member_lines` returns where `validate` has to decide."""

# Segment's pipeline, reproduced here (actions-core + AJV 8 with coerceTypes "array", allErrors,
# removeAdditional, ajv-formats, @segment/ajv-human-errors):
#   1. removeEmptyValues: null dropped unless the type allows null, "" dropped unless the type is a
#      string (at the root "" is always dropped), array items judged one by one but kept unchanged.
#   2. top-level `multiple` fields holding a single value are wrapped in a list.
#   3. AJV: per schema node, type (with coercion) first, then enum / conditional rules, then number
#      limits, string limits and format, then array items, then object required / unknown-key
#      removal / properties. Errors keep that order; messages are ajv-human-errors' sentences.

_Check = Callable[[Any, str, list[str]], Any]
_Clean = Callable[[Any], Any]
# property key -> (field order, checker, JSON-pointer segment, classes that pass untouched)
_Prop = tuple[int, _Check, str, "frozenset[type] | None"]


def _js_number(value: float) -> int | float:
    """A coerced number as Python keeps it: integral values inside the safe range become ints."""
    if value.is_integer() and abs(value) <= 9007199254740992.0:
        return int(value)
    return value


def _is_number(v: Any) -> bool:
    # AJV's strictNumbers: NaN and infinities are not numbers; bool is not a number in JSON.
    cls = v.__class__
    if cls is int:
        return True
    if cls is float:
        return math.isfinite(v)
    return False


def _is_integer(v: Any) -> bool:
    cls = v.__class__
    if cls is int:
        return True
    if cls is float:
        return math.isfinite(v) and v.is_integer()
    return False


_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: v.__class__ is str,
    "number": _is_number,
    "integer": _is_integer,
    "boolean": lambda v: v.__class__ is bool,
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def _type_of(value: Any) -> str:
    """ajv-human-errors' description of what a value was."""
    if value is None:
        return "null"
    if value is UNDEFINED:
        return "undefined"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    return "an object"


def _article(word: str) -> str:
    return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"


def _humanize_list(items: list[str], conjunction: str) -> str:
    if not items:
        return "nothing"
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} {conjunction} {items[1]}"
    return f"{', '.join(items[:-1])}, {conjunction} {items[-1]}"


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _pointer_key(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _js_stringify_scalar(value: Any) -> str:
    """JSON.stringify of an enum member (strings, numbers, booleans, null)."""
    return json_stringify(value) or "undefined"


def _js_equal(a: Any, b: Any) -> bool:
    """Deep equality as AJV's `enum`/`const` see it (bool is never equal to a number)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return bool(a == b)
    same_kind = (isinstance(a, dict) and isinstance(b, dict)) or (isinstance(a, list) and isinstance(b, list))
    if a.__class__ is not b.__class__ and not same_kind:
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_js_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_js_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# ---------------------------------------------------------------------------------------------
# Formats (ajv-formats "full" mode, plus Segment's own `text` and `date-like`).

_FLAGS = re.IGNORECASE | re.ASCII
_EMAIL = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*@"
    r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]*[a-z0-9])?",
    _FLAGS,
)
_HOSTNAME = re.compile(
    r"(?=.{1,253}\.?\Z)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[-0-9a-z]{0,61}[0-9a-z])?)*\.?",
    _FLAGS,
)
_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4]\d|[01]?\d\d?)\.){3}(?:25[0-5]|2[0-4]\d|[01]?\d\d?)", _FLAGS)
_UUID = re.compile(r"(?:urn:uuid:)?[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}", _FLAGS)
_DATE = re.compile(r"(\d\d\d\d)-(\d\d)-(\d\d)", re.ASCII)
_TIME = re.compile(r"(\d\d):(\d\d):(\d\d)(\.\d+)?(z|[+-]\d\d(?::?\d\d)?)?", _FLAGS)
_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_H16 = r"[0-9a-f]{1,4}"
_IPV4_PART = r"(?:(?:25[0-5]|2[0-4]\d|[01]?\d\d?)\.){3}(?:25[0-5]|2[0-4]\d|[01]?\d\d?)"
_URI_HOST_IPV6 = (
    rf"(?:(?:(?:{_H16}:){{6}}|::(?:{_H16}:){{5}}|(?:{_H16})?::(?:{_H16}:){{4}}"
    rf"|(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}|(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}"
    rf"|(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:|(?:(?:{_H16}:){{0,4}}{_H16})?::)"
    rf"(?:{_H16}:{_H16}|{_IPV4_PART})|(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}"
    rf"|(?:(?:{_H16}:){{0,6}}{_H16})?::)"
)
_PCHAR = r"(?:[a-z0-9\-._~!$&'()*+,;=:@]|%[0-9a-f]{2})"
_URI = re.compile(
    r"(?:[a-z][a-z0-9+\-.]*:)(?:/?/(?:(?:[a-z0-9\-._~!$&'()*+,;=:]|%[0-9a-f]{2})*@)?"
    rf"(?:\[(?:{_URI_HOST_IPV6}|[Vv][0-9a-f]+\.[a-z0-9\-._~!$&'()*+,;=:]+)\]|{_IPV4_PART}"
    r"|(?:[a-z0-9\-._~!$&'()*+,;=]|%[0-9a-f]{2})*)(?::\d*)?"
    rf"(?:/{_PCHAR}*)*|/(?:{_PCHAR}+(?:/{_PCHAR}*)*)?|{_PCHAR}+(?:/{_PCHAR}*)*)"
    rf"(?:\?(?:[a-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9a-f]{{2}})*)?"
    rf"(?:#(?:[a-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9a-f]{{2}})*)?",
    _FLAGS,
)
_DAYJS_PARSE = re.compile(
    r"(\d{4})[-/]?(\d{1,2})?[-/]?(\d{0,2})[Tt\s]*(\d{1,2})?:?(\d{1,2})?:?(\d{1,2})?[.:]?(\d+)?", re.ASCII
)


def _is_date(text: str) -> bool:
    m = _DATE.fullmatch(text)
    if not m:
        return False
    year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return 1 <= month <= 12 and 1 <= day <= (29 if month == 2 and leap else _DAYS[month])


def _is_time(text: str, with_zone: bool = False) -> bool:
    m = _TIME.fullmatch(text)
    if not m:
        return False
    h, mi, s = int(m.group(1)), int(m.group(2)), int(m.group(3))
    ok = (h <= 23 and mi <= 59 and s <= 59) or (h == 23 and mi == 59 and s == 60)
    return ok and (not with_zone or bool(m.group(5)))


def _is_date_time(text: str) -> bool:
    parts = re.split(r"[tT\s]", text)
    return len(parts) == 2 and _is_date(parts[0]) and _is_time(parts[1], True)


def _is_uri(text: str) -> bool:
    return ("/" in text or ":" in text) and _URI.fullmatch(text) is not None


def _is_regex(text: str) -> bool:
    if re.search(r"[^\\]\\Z", text):
        return False
    try:
        re.compile(text)
    except re.error:
        return False
    return True


def _is_date_like(text: str) -> bool:
    """Segment's `date-like`: anything dayjs can turn into a valid date."""
    if number_to_string(string_to_number(text)) == text:
        # A canonical number string is read as unix seconds.
        return abs(string_to_number(text) * 1000) <= 8.64e15
    if not text.endswith(("Z", "z")) and _DAYJS_PARSE.fullmatch(text):
        return True
    return not math.isnan(date_parse(text))


_FORMATS: dict[str, Callable[[str], bool]] = {
    "email": lambda s: _EMAIL.fullmatch(s) is not None,
    "hostname": lambda s: _HOSTNAME.fullmatch(s) is not None,
    "ipv4": lambda s: _IPV4.fullmatch(s) is not None,
    "uuid": lambda s: _UUID.fullmatch(s) is not None,
    "date": _is_date,
    "time": _is_time,
    "date-time": _is_date_time,
    "uri": _is_uri,
    "regex": _is_regex,
    "date-like": _is_date_like,
}


def _ipv6(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return "%" not in text


_FORMATS["ipv6"] = _ipv6

_FORMAT_LABELS = {
    "date-time": "date and time",
    "time": "time",
    "date": "date",
    "email": "email address",
    "hostname": "hostname",
    "ipv4": "IPv4 address",
    "ipv6": "IPv6 address",
    "uri": "URI",
    "uri-reference": "URI Reference",
    "uri-template": "URI-template",
    "json-pointer": "JSON Pointer",
    "relative-json-pointer": "relative JSON Pointer",
    "regex": "regular expression",
}


# ---------------------------------------------------------------------------------------------
# Coercion (AJV coerceTypes: "array").

_COERCIBLE = ("string", "number", "integer", "boolean", "null", "array")


def _coerce_one(target: str, v: Any) -> Any:
    """One step of AJV's coercion chain; UNDEFINED when this target does not apply."""
    cls = v.__class__
    if target == "string":
        if cls is bool:
            return "true" if v else "false"
        if cls is int or cls is float:
            return number_to_string(v)
        if v is None:
            return ""
    elif target == "number" or target == "integer":
        if cls is bool:
            return 1 if v else 0
        if v is None:
            return 0
        if cls is str and v:
            n = string_to_number(v)
            if not math.isnan(n) and (target == "number" or math.isinf(n) or n.is_integer()):
                return _js_number(n)
    elif target == "boolean":
        if v == "false" or v is None or (cls in (int, float) and v == 0):
            return False
        if v == "true" or (cls in (int, float) and v == 1):
            return True
    elif target == "null" and (v == "" or v is False or (cls in (int, float) and v == 0)):
        return None
    elif target == "array" and (cls in (str, int, float, bool) or v is None):
        return [v]
    return UNDEFINED


@dataclass
class _Node:
    """One JSON-schema node as Segment builds it from a field (only the keywords it can have)."""

    title: str | None
    types: tuple[str, ...]
    enum: tuple[Any, ...] | None = None
    format: str | None = None
    min_length: float | None = None
    max_length: float | None = None
    minimum: float | None = None
    maximum: float | None = None
    items: _Node | None = None
    properties: dict[str, _Node] | None = None
    required: tuple[str, ...] = ()
    additional: bool = True


def _field_node(f: Field) -> _Node:
    base = {"string": "string", "text": "string", "password": "string", "datetime": None}.get(f.type, f.type)
    types: tuple[str, ...] = ("string", "number") if base is None else (base,)
    fmt = f.format
    if f.type == "datetime":
        fmt = "date-like"
    elif f.type in ("password", "text"):
        fmt = f.type
    node = _Node(title=f.label, types=types, format=fmt)
    # Limits count only when truthy, and only for plain strings and numbers.
    if f.type == "string":
        node.min_length = f.minimum or None
        node.max_length = f.maximum or None
    elif f.type == "number":
        node.minimum = f.minimum or None
        node.maximum = f.maximum or None
    enum: list[Any] | None = None
    if f.choices is not None:
        enum = [c.value if isinstance(c, Choice) else c for c in f.choices]
    if f.allow_null:
        node.types = (*types, "null")
        if enum is not None:
            enum.append(None)
    node.enum = tuple(enum) if enum is not None else None
    nested: _Node | None = None
    if base == "object" and f.properties is not None:
        nested = _object_node(f.properties, None, f.additional_properties)
    if f.multiple:
        node.items = _Node(title=None, types=types, enum=node.enum)
        node.enum = None
        node.types = ("array",)
        if nested is not None:
            node.items = nested
    elif nested is not None:
        node.properties = nested.properties
        node.required = nested.required
        node.additional = nested.additional
    return node


def _object_node(fields: Mapping[str, Field], title: str | None, additional: bool) -> _Node:
    nested_conditional = any(isinstance(sub.required, ConditionalRequired) for sub in fields.values())
    required = () if nested_conditional else tuple(k for k, sub in fields.items() if sub.required is True)
    return _Node(
        title=title,
        types=("object",),
        properties={k: _field_node(sub) for k, sub in fields.items()},
        required=required,
        additional=additional,
    )


def _preamble(title: str | None, ptr: str) -> str:
    if title:
        return title
    return "the root value" if ptr == "" else f"the value at {ptr}"


def _sentence(title: str | None, ptr: str, text: str) -> str:
    """One human message: the field's label (or where it is), the problem, a full stop."""
    return _capitalize(f"{_preamble(title, ptr)} {text}") + "."


def _characters(n: float) -> str:
    return f"{number_to_string(n)} {'character' if n == 1 else 'characters'}"


def _compile_clean(node: _Node) -> _Clean:
    """removeEmptyValues for values below the root (the root has its own loop)."""
    keeps_null = "null" in node.types
    keeps_empty = "string" in node.types
    items = node.items
    # An item is only ever dropped (never rewritten), so its own emptiness is all that matters.
    item_keeps_null = items is not None and "null" in items.types
    item_keeps_empty = items is not None and "string" in items.types
    props = {k: _compile_clean(n) for k, n in (node.properties or {}).items()} if node.properties else None

    def clean(v: Any) -> Any:
        if v is None:
            return v if keeps_null else UNDEFINED
        cls = v.__class__
        if cls is str:
            return v if (v or keeps_empty) else UNDEFINED
        if cls is list:
            if items is None:
                return v
            return [
                x
                for x in v
                if not (
                    (x is None and not item_keeps_null)
                    or (x == "" and x.__class__ is str and not item_keeps_empty)
                )
            ]
        if cls is dict and props is not None:
            out = {}
            for k, val in v.items():
                c = val.__class__
                # A non-empty string, a number or a boolean comes out of any `clean` unchanged.
                if (c is str and val) or c is int or c is float or c is bool:
                    out[k] = val
                    continue
                sub = props.get(k)
                if sub is not None:
                    val = sub(val)
                if val is not UNDEFINED:
                    out[k] = val
            return out
        return v

    return clean


# Floats pass as numbers untouched: payloads come from JSON, which has no NaN or Infinity.
_CLASSES = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "null": (type(None),),
}


def _fast_classes(node: _Node, shortcuts: bool) -> frozenset[type] | None:
    """Classes whose values need no work at all for this node (valid as they are, nothing to coerce):
    the hot path tests `value.__class__ in fast` instead of calling the checker. None without
    `shortcuts`, or when every value needs the checker."""
    if (
        not shortcuts
        or node.enum is not None
        or node.format not in (None, "text", "password")
        or node.min_length is not None
        or node.max_length is not None
        or node.minimum is not None
        or node.maximum is not None
        or node.items is not None
        or node.properties is not None
    ):
        return None
    classes: set[type] = set()
    for t in node.types:
        if t == "object":
            classes.add(dict)
        elif t in _CLASSES:
            classes.update(_CLASSES[t])
        else:
            return None
    return frozenset(classes)


_ABSENT = object()


def _compile_plain(
    props: dict[str, _Prop], required: tuple[str, ...], additional: bool
) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """`_check_object` for the usual object, whose values all need no work: the checked copy, or
    None when some value needs the full check (which then produces the same copy or the errors)."""
    plain_get = {k: (fast or frozenset()) for k, (_i, _c, _p, fast) in props.items()}.get

    def plain(d: dict[str, Any]) -> dict[str, Any] | None:
        for key in required:
            if d.get(key, UNDEFINED) is UNDEFINED:
                return None
        out: dict[str, Any] = {}
        for k, val in d.items():
            fast = plain_get(k, _ABSENT)
            if fast is _ABSENT:
                if additional:
                    if val is UNDEFINED:
                        return None
                    out[k] = val
                continue
            if val.__class__ in fast:  # type: ignore[operator]
                out[k] = val
                continue
            if val is UNDEFINED:
                continue
            return None
        return out

    return plain


def _items_plain(node: _Node, shortcuts: bool) -> Callable[[dict[str, Any]], dict[str, Any] | None] | None:
    """The plain-object copier of a `multiple` object field whose list the checker handles item by
    item with nothing else to test (see `check`), else None."""
    items = node.items
    if (
        not shortcuts
        or node.types != ("array",)
        or items is None
        or items.properties is None
        or items.enum is not None
        or node.enum is not None
        or node.format is not None
        or node.min_length is not None
    ):
        return None
    props = {
        k: (i, _compile_check(n, shortcuts), "/" + _pointer_key(k), _fast_classes(n, shortcuts))
        for i, (k, n) in enumerate(items.properties.items())
    }
    return _compile_plain(props, items.required, items.additional)


def _object_plain(node: _Node, shortcuts: bool) -> Callable[[dict[str, Any]], dict[str, Any] | None] | None:
    """The plain-object copier of an object field with properties, for a dict whose values need no
    work (removeEmptyValues keeps each, the check copies each), else None."""
    if not shortcuts or node.types != ("object",) or node.properties is None or node.enum is not None:
        return None
    props = {
        k: (i, _compile_check(n, shortcuts), "/" + _pointer_key(k), _fast_classes(n, shortcuts))
        for i, (k, n) in enumerate(node.properties.items())
    }
    return _compile_plain(props, node.required, node.additional)


def _str_choices(node: _Node, shortcuts: bool) -> frozenset[str] | None:
    """The strings a string field with choices takes as they are (no format or length to test)."""
    if (
        not shortcuts
        or node.types != ("string",)
        or node.enum is None
        or node.format not in (None, "text", "password")
        or node.min_length is not None
        or node.max_length is not None
    ):
        return None
    return frozenset(e for e in node.enum if e.__class__ is str)


def _compile_check(node: _Node, shortcuts: bool) -> _Check:
    """AJV's validation of one node: returns the (possibly coerced) value, appends messages. With
    `shortcuts`, values that need no work are recognised by class and copied without the checks."""
    types = node.types
    tests = tuple(_TYPE_TESTS[t] for t in types)
    coerce_to = tuple(t for t in types if t in _COERCIBLE)
    title = node.title
    expected = _humanize_list(list(types), "or")
    expected = f"{_article(expected)} {expected}"
    enum = node.enum
    enum_text = _humanize_list([_js_stringify_scalar(e) for e in enum], "or") if enum is not None else ""
    enum_strings = frozenset(e for e in enum or () if e.__class__ is str)
    fmt = node.format
    fmt_test = _FORMATS.get(fmt) if fmt else None
    fmt_label = _FORMAT_LABELS.get(fmt, fmt) if fmt else ""
    min_len, max_len = node.min_length, node.max_length
    minimum, maximum = node.minimum, node.maximum
    item_check = _compile_check(node.items, shortcuts) if node.items is not None else None
    item_fast = _fast_classes(node.items, shortcuts) if node.items is not None else None
    props: dict[str, _Prop] | None = None
    if node.properties is not None:
        props = {
            k: (i, _compile_check(n, shortcuts), "/" + _pointer_key(k), _fast_classes(n, shortcuts))
            for i, (k, n) in enumerate(node.properties.items())
        }
    required = node.required
    additional = node.additional
    only_items = item_check is not None and enum is None and fmt_test is None and min_len is None
    only_props = props is not None and enum is None
    plain = (
        _compile_plain(props, required, additional)
        if shortcuts and only_props and props is not None
        else None
    )
    item_node = node.items
    item_plain = None
    if shortcuts and item_node is not None and item_node.properties is not None and item_node.enum is None:
        item_props = {
            k: (i, _compile_check(n, shortcuts), "/" + _pointer_key(k), _fast_classes(n, shortcuts))
            for i, (k, n) in enumerate(item_node.properties.items())
        }
        item_plain = _compile_plain(item_props, item_node.required, item_node.additional)
    simple = (
        enum is None
        and fmt_test is None
        and min_len is None
        and max_len is None
        and minimum is None
        and maximum is None
        and item_check is None
        and props is None
    )
    single_test = tests[0] if len(tests) == 1 else None

    def type_error(v: Any, ptr: str, errors: list[str]) -> None:
        errors.append(
            _capitalize(f"{_preamble(title, ptr)} must be {expected} but it was {_type_of(v)}") + "."
        )

    def coerce(v: Any, ptr: str, errors: list[str]) -> tuple[Any, Any, bool]:
        """(value for the parent, value the later keywords see, type ok)."""
        if any(t(v) for t in tests):
            return v, v, True
        if types == ("object",):
            type_error(v, ptr, errors)
            return v, v, False
        d = v
        if isinstance(d, list) and len(d) == 1:
            d = d[0]
            # AJV accepts the lone item as it is only for a single type: its test for several types
            # requires the item to be all of them at once, so unions go on to coercion.
            if single_test is not None and single_test(d):
                return d, d, True
        for target in coerce_to:
            c = _coerce_one(target, d)
            if c is not UNDEFINED:
                return c, c, True
        type_error(d, ptr, errors)
        return v, d, False

    def check(v: Any, ptr: str, errors: list[str]) -> Any:
        cls = v.__class__
        if only_items and cls is list:
            assert item_check is not None
            if item_fast is not None and all(x.__class__ in item_fast for x in v):
                return list(v)
            if item_plain is not None:
                # Objects that need no work are copied; only the others get a pointer and a check.
                checked = []
                for i, x in enumerate(v):
                    if x.__class__ is dict:
                        copy = item_plain(x)
                        if copy is not None:
                            checked.append(copy)
                            continue
                    checked.append(item_check(x, f"{ptr}/{i}", errors))
                return checked
            return [item_check(x, f"{ptr}/{i}", errors) for i, x in enumerate(v)]
        if only_props and cls is dict:
            assert props is not None
            if plain is not None:
                copy = plain(v)
                if copy is not None:
                    return copy
            return _check_object(v, ptr, errors, title, props, required, additional)
        if single_test is not None and single_test(v):
            if simple:
                return v
            out = d = v
        else:
            out, d, _ok = coerce(v, ptr, errors)
        if simple:
            return out
        if (
            enum is not None
            and not (d.__class__ is str and d in enum_strings)
            and not any(_js_equal(d, e) for e in enum)
        ):
            errors.append(_sentence(title, ptr, f"must be one of: {enum_text}"))
        if _is_number(d):
            if maximum is not None and d > maximum:
                errors.append(
                    _sentence(title, ptr, f"must be equal to or less than {number_to_string(maximum)}")
                )
            if minimum is not None and d < minimum:
                errors.append(
                    _sentence(title, ptr, f"must be equal to or greater than {number_to_string(minimum)}")
                )
        elif d.__class__ is str:
            if max_len is not None or min_len is not None:
                # AJV compares code points but reports JavaScript's length (UTF-16 units).
                length = len(d)
                actual = _characters(utf16_length(d))
                if max_len is not None and length > max_len:
                    errors.append(
                        _sentence(title, ptr, f"must be {_characters(max_len)} or fewer but it was {actual}")
                    )
                if min_len is not None and length < min_len:
                    errors.append(
                        _sentence(title, ptr, f"must be {_characters(min_len)} or more but it was {actual}")
                    )
            if fmt_test is not None and not fmt_test(d):
                errors.append(_sentence(title, ptr, f"must be a valid {fmt_label} string but it was not"))
        elif item_check is not None and isinstance(d, list):
            out = [item_check(item, f"{ptr}/{i}", errors) for i, item in enumerate(d)]
        elif props is not None and isinstance(d, dict):
            out = _check_object(d, ptr, errors, title, props, required, additional)
        return out

    return check


def _check_object(
    d: dict[str, Any],
    ptr: str,
    errors: list[str],
    title: str | None,
    props: dict[str, _Prop],
    required: tuple[str, ...],
    additional: bool,
) -> dict[str, Any]:
    for key in required:
        if d.get(key, UNDEFINED) is UNDEFINED:
            errors.append(_sentence(title, ptr, f"is missing the required field '{key}'"))
    out: dict[str, Any] = {}
    spans: list[tuple[int, int, int]] | None = None
    for k, val in d.items():
        entry = props.get(k)
        if entry is None:
            if additional:
                out[k] = val
            continue
        if val is UNDEFINED:
            continue
        idx, sub, kptr, fast = entry
        if fast is not None and val.__class__ in fast:
            out[k] = val
            continue
        n = len(errors)
        out[k] = sub(val, ptr + kptr, errors)
        if len(errors) != n:
            if spans is None:
                spans = []
            spans.append((idx, n, len(errors)))
    if spans is not None and len(spans) > 1:
        _reorder(errors, spans)
    return out


def _reorder(errors: list[str], spans: list[tuple[int, int, int]]) -> None:
    """Errors were produced in payload key order; AJV reports them in field order."""
    start = spans[0][1]
    chunks = sorted(spans, key=lambda s: s[0])
    errors[start:] = [m for _i, a, b in chunks for m in errors[a:b]]


# ---------------------------------------------------------------------------------------------
# Conditionally required fields (Segment's if/then rules).

_Cond = Callable[[dict[str, Any]], bool]


def _null_like(d: dict[str, Any], key: str) -> bool:
    """AJV's `{type: "null"}` test inside Segment's "has no value" rules. With coercion on, it does
    more than test: "", 0, false (or a one-item list of those, or of null) become null in the payload
    itself, which the field's own validation then sees."""
    v = d[key]
    if v is None:
        return True
    if v.__class__ is list and len(v) == 1:
        v = v[0]
        if v is None:
            d[key] = None
            return True
    if (v.__class__ is str and v == "") or v is False or (v.__class__ in (int, float) and v == 0):
        d[key] = None
        return True
    return False


def _compile_condition(fc: Any, multiple: bool) -> _Cond:
    key: str = fc.field_key
    operator = fc.operator
    value = fc.value
    if "." in key:
        parent, child = key.split(".")[:2]

        def obj_cond(d: Mapping[str, Any]) -> bool:
            if d.get(parent, UNDEFINED) is UNDEFINED:
                return False
            p = d[parent]
            if not isinstance(p, dict):
                return True
            c = p.get(child, UNDEFINED)
            if c is UNDEFINED:
                return False
            equal = _js_equal(c, value) if value is not UNDEFINED else False
            return equal if operator == "is" else not equal

        return obj_cond
    if value is UNDEFINED:
        if multiple:
            if operator == "is":
                return lambda d: d.get(key, UNDEFINED) is UNDEFINED
            return lambda d: d.get(key, UNDEFINED) is not UNDEFINED
        if operator == "is":
            return lambda d: d.get(key, UNDEFINED) is UNDEFINED or _null_like(d, key)
        return lambda d: d.get(key, UNDEFINED) is not UNDEFINED and not _null_like(d, key)

    def simple(d: Mapping[str, Any]) -> bool:
        v = d.get(key, UNDEFINED)
        if v is UNDEFINED:
            return False
        return _js_equal(v, value) if operator == "is" else not _js_equal(v, value)

    return simple


def _compile_rule(field_key: str, rule: ConditionalRequired) -> Callable[[dict[str, Any], list[str]], None]:
    multiple = len(rule.conditions) > 1
    conds = [_compile_condition(c, multiple) for c in rule.conditions]
    match_any = rule.match == "any"
    dotted = "." in field_key and not multiple
    parent, _, child = field_key.partition(".")

    def apply(d: dict[str, Any], errors: list[str]) -> None:
        holds = any(c(d) for c in conds) if match_any else all(c(d) for c in conds)
        if not holds:
            return
        n = len(errors)
        if dotted:
            p = d.get(parent, UNDEFINED)
            if p is UNDEFINED:
                errors.append(f"The root value is missing the required field '{parent}'.")
            elif isinstance(p, dict) and p.get(child, UNDEFINED) is UNDEFINED:
                errors.append(
                    f"The value at /{_pointer_key(parent)} is missing the required field '{child}'."
                )
        elif d.get(field_key, UNDEFINED) is UNDEFINED:
            errors.append(f"The root value is missing the required field '{field_key}'.")
        if len(errors) != n:
            errors.append('The root value must match "then" schema.')

    return apply


def _conditional_rules(
    fields: Mapping[str, Field],
) -> list[tuple[str, Callable[[dict[str, Any], list[str]], None]]]:
    """Each conditionally required field's rule, with the top-level field it is about."""
    rules = []
    for key, f in fields.items():
        if f.properties and f.type == "object":
            for sub_key, sub in f.properties.items():
                if isinstance(sub.required, ConditionalRequired):
                    rules.append((key, _compile_rule(f"{key}.{sub_key}", sub.required)))
        if isinstance(f.required, ConditionalRequired):
            rules.append((key, _compile_rule(key, f.required)))
    return rules


# ---------------------------------------------------------------------------------------------


class PayloadSchema:
    """The compiled validator of one action's fields; `validate` is the hot path. `fast=False` leaves
    out the shortcuts for values that need no work, so every value goes through the full checks
    (same payloads and errors, slower), as under STREAMPROC_EXACT_ONLY=1."""

    __slots__ = (
        "_entries",
        "_fields",
        "_formats",
        "_required",
        "_rule_fields",
        "_rules",
        "_str_keys",
        "_str_wrap_keys",
    )

    _str_keys: dict[str, frozenset[str] | None]

    def __init__(self, fields: Mapping[str, Field], *, fast: bool = True) -> None:
        shortcuts = fast and fast_paths.taken(fast_paths.PAYLOAD_SHORTCUTS)
        self._fields = dict(fields)
        root = _object_node(fields, None, False)
        assert root.properties is not None
        self._required = tuple(k for k, f in fields.items() if f.required is True)
        self._entries: dict[str, _Entry] = {}
        for i, (k, n) in enumerate(root.properties.items()):
            deep = n.items is not None or n.properties is not None
            item_fast = (
                _fast_classes(n.items, shortcuts) if n.items is not None and n.types == ("array",) else None
            )
            self._entries[k] = _Entry(
                index=i,
                fast=_fast_classes(n, shortcuts),
                item_fast=item_fast
                if (n.format in (None, "text", "password") and n.min_length is None)
                else None,
                clean=_compile_clean(n) if deep else None,
                keeps_null="null" in n.types,
                keeps_empty="string" in n.types,
                wrap=n.types == ("array",),
                check=_compile_check(n, shortcuts),
                pointer="/" + _pointer_key(k),
                items_plain=_items_plain(n, shortcuts),
                object_plain=_object_plain(n, shortcuts),
            )
        rules = _conditional_rules(fields)
        self._rules = [rule for _, rule in rules]
        self._rule_fields = tuple(key for key, _ in rules)
        # Fields where a string needs no work (kept as it is, or wrapped in a list for `multiple`):
        # the usual mapped value, so the loop tests these before anything else. A field with
        # choices maps to the strings it takes as they are.
        self._str_keys = {k: None for k, e in self._entries.items() if e.fast is not None and str in e.fast}
        for k, n in root.properties.items():
            choices = _str_choices(n, shortcuts)
            if choices is not None:
                self._str_keys[k] = choices
        # String fields whose only test is a format: a string passing it is kept as it is.
        self._formats = {
            k: _FORMATS[n.format]
            for k, n in root.properties.items()
            if shortcuts
            and n.types == ("string",)
            and n.format in _FORMATS
            and n.enum is None
            and n.min_length is None
            and n.max_length is None
        }
        self._str_wrap_keys = frozenset(
            k
            for k, e in self._entries.items()
            if e.fast is None and e.item_fast is not None and str in e.item_fast
        )

    @property
    def fields(self) -> Mapping[str, Field]:
        return self._fields

    def validate(self, payload: Mapping[str, Any], *, root: bool = True) -> dict[str, Any]:
        """removeEmptyValues, then validation with coercion; unknown keys are dropped.
        Raises PayloadValidationError with Segment's message (every problem, in AJV's order)."""
        if payload.__class__ is not dict and not isinstance(payload, dict):
            if isinstance(payload, Mapping):
                payload = dict(payload)
            else:
                raise PayloadValidationError(
                    f"The root value must be an object but it was {_type_of(payload)}."
                )
        entries = self._entries
        rule_errors: list[str] = []
        source: dict[str, Any] = payload
        prepared = False
        if self._rules:
            # Conditional rules see the payload after empty values are removed, before coercion
            # (and may turn "no value" into null, as AJV does).
            source = self._clean(payload, root)
            prepared = True
            for rule in self._rules:
                rule(source, rule_errors)
        out: dict[str, Any] = {}
        errors: list[str] = []
        spans: list[tuple[int, int, int]] | None = None
        str_keys = self._str_keys
        str_wrap_keys = self._str_wrap_keys
        for k, v in source.items():
            cls = v.__class__
            if cls is str:
                # Same outcome as the `fast` / `item_fast` branches below, or as the check of a
                # string that is one of the choices.
                choices = str_keys.get(k, _ABSENT)
                if choices is None or (choices is not _ABSENT and v in choices):  # type: ignore[operator]
                    if v or not root:
                        out[k] = v
                    continue
                if k in str_wrap_keys:
                    if v or not root:
                        out[k] = [v]
                    continue
            entry = entries.get(k)
            if entry is None:
                continue
            fast = entry.fast
            if fast is not None and cls in fast:
                if root and cls is str and not v:
                    continue
                out[k] = v
                continue
            item_fast = entry.item_fast
            if item_fast is not None:
                # `multiple` fields of plain items: a single item is wrapped, a clean list copied.
                if cls in item_fast:
                    if not (root and cls is str and not v):
                        out[k] = [v]
                    continue
                if cls is list and all(x.__class__ in item_fast for x in v):
                    out[k] = list(v)
                    continue
            items_plain = entry.items_plain
            if items_plain is not None and cls is list:
                # A list of objects that need no work: removeEmptyValues keeps every item and the
                # check copies each, so the copies are made here directly.
                copies = []
                for x in v:
                    if x.__class__ is not dict:
                        break
                    copy = items_plain(x)
                    if copy is None:
                        break
                    copies.append(copy)
                else:
                    out[k] = copies
                    continue
            object_plain = entry.object_plain
            if object_plain is not None and cls is dict:
                copy = object_plain(v)
                if copy is not None:
                    out[k] = copy
                    continue
            if not prepared:
                v = entry.prepare(v, root)
                if v is UNDEFINED:
                    continue
            n = len(errors)
            out[k] = entry.check(v, entry.pointer, errors)
            if len(errors) != n:
                if spans is None:
                    spans = []
                spans.append((entry.index, n, len(errors)))
        if not errors and not rule_errors:
            for k in self._required:
                if k not in out:
                    break
            else:
                return out
        missing = [k for k in self._required if k not in out]
        if errors or missing or rule_errors:
            if spans is not None and len(spans) > 1:
                _reorder(errors, spans)
            required = [f"The root value is missing the required field '{k}'." for k in missing]
            raise PayloadValidationError(
                " ".join(rule_errors + required + errors),
                field=self._first_field(source, bool(rule_errors), missing, spans),
            )
        return out

    def _first_field(
        self,
        source: dict[str, Any],
        rules_failed: bool,
        missing: list[str],
        spans: list[tuple[int, int, int]] | None,
    ) -> str | None:
        """The top-level field the first reported problem is about: problems are reported rules
        first, then missing required fields, then by field order."""
        if rules_failed:
            for key, rule in zip(self._rule_fields, self._rules, strict=True):
                found: list[str] = []
                rule(source, found)
                if found:
                    return key
        if missing:
            return missing[0]
        if spans:
            first = min(spans)[0]
            return next(k for k, e in self._entries.items() if e.index == first)
        return None

    @property
    def inlinable(self) -> bool:
        """Whether `member_lines` can stand for `validate` (no conditional rules, shortcuts on)."""
        return not self._rules and any(e.fast is not None for e in self._entries.values())

    def member_lines(self, key: str, value: str, out: str, names: dict[str, Any]) -> list[str]:
        """Python lines doing for one root member what `validate` does for it when its value needs
        no work: `value` names the member's value (never undefined), `out` the dict being built.
        Anything else makes them `return _UNDECIDED`, and `validate` has the last word. Objects the
        lines use are added to `names`."""
        entry = self._entries.get(key)
        if entry is None:
            return []  # an unknown member is dropped
        n = f"_v{entry.index}"
        quoted = repr(key)
        names["_UNDECIDED"] = UNDECIDED
        names["_str"], names["_list"], names["_dict"] = str, list, dict
        lines = [f"if type({value}) is _str:"]
        # An empty string is dropped at the root, whatever the field.
        choices = self._str_keys.get(key, _ABSENT)
        if choices is None:
            lines += [f"    if {value}:", f"        {out}[{quoted}] = {value}"]
        elif choices is not _ABSENT:
            names[f"{n}_choices"] = choices
            lines += [
                f"    if {value}:",
                f"        if {value} not in {n}_choices:",
                "            return _UNDECIDED",
                f"        {out}[{quoted}] = {value}",
            ]
        elif key in self._str_wrap_keys:
            lines += [f"    if {value}:", f"        {out}[{quoted}] = [{value}]"]
        elif key in self._formats:
            names[f"{n}_format"] = self._formats[key]
            lines += [
                f"    if {value}:",
                f"        if not {n}_format({value}):",
                "            return _UNDECIDED",
                f"        {out}[{quoted}] = {value}",
            ]
        else:
            lines += [f"    if {value}:", "        return _UNDECIDED"]
        if entry.fast is not None:
            names[f"{n}_fast"] = entry.fast
            lines += [f"elif type({value}) in {n}_fast:", f"    {out}[{quoted}] = {value}"]
        if entry.item_fast is not None:
            names[f"{n}_items"] = entry.item_fast
            lines += [
                f"elif type({value}) in {n}_items:",
                f"    {out}[{quoted}] = [{value}]",
                f"elif type({value}) is _list and all(type(x) in {n}_items for x in {value}):",
                f"    {out}[{quoted}] = list({value})",
            ]
        items = entry.items_plain
        plain = (
            ("_list", "plain_items", None if items is None else partial(_plain_items, items)),
            ("_dict", "plain_object", entry.object_plain),
        )
        for kind, suffix, settle in plain:
            if settle is not None:
                # A container settled by `settle` (None: it needs the full validation).
                names[f"{n}_{suffix}"] = settle
                lines += [
                    f"elif type({value}) is {kind}:",
                    f"    {value} = {n}_{suffix}({value})",
                    f"    if {value} is None:",
                    "        return _UNDECIDED",
                    f"    {out}[{quoted}] = {value}",
                ]
        if not entry.keeps_null:
            lines += [f"elif {value} is None:", "    pass"]  # removeEmptyValues drops it
        lines += ["else:", "    return _UNDECIDED"]
        return lines

    def required_lines(self, out: str) -> list[str]:
        """Lines ending the member lines: a required field missing from `out` is for `validate`."""
        if not self._required:
            return []
        keys = " and ".join(f"{k!r} in {out}" for k in self._required)
        return [f"if not ({keys}):", "    return _UNDECIDED"]

    def _clean(self, payload: Mapping[str, Any], root: bool) -> dict[str, Any]:
        cleaned = {}
        for k, v in payload.items():
            entry = self._entries.get(k)
            if entry is not None:
                v = entry.prepare(v, root)
                if v is not UNDEFINED:
                    cleaned[k] = v
        return cleaned


def _plain_items(
    items_plain: Callable[[dict[str, Any]], dict[str, Any] | None], items: list[Any]
) -> list[dict[str, Any]] | None:
    """The copies `validate` makes of a list of plain objects, or None where it has to decide."""
    copies = []
    for x in items:
        if x.__class__ is not dict:
            return None
        copy = items_plain(x)
        if copy is None:
            return None
        copies.append(copy)
    return copies


@dataclass(frozen=True, slots=True)
class _Entry:
    """One top-level field, compiled."""

    index: int
    fast: frozenset[type] | None
    item_fast: frozenset[type] | None
    clean: _Clean | None
    keeps_null: bool
    keeps_empty: bool
    wrap: bool
    check: _Check
    pointer: str
    items_plain: Callable[[dict[str, Any]], dict[str, Any] | None] | None
    object_plain: Callable[[dict[str, Any]], dict[str, Any] | None] | None

    def prepare(self, v: Any, root: bool) -> Any:
        """removeEmptyValues and the wrapping of single values for `multiple` fields."""
        if v is UNDEFINED:
            return v
        if v is None:
            return v if self.keeps_null else UNDEFINED
        if v.__class__ is str and not v:
            return v if (self.keeps_empty and not root) else UNDEFINED
        if self.clean is not None:
            v = self.clean(v)
        if self.wrap and v.__class__ is not list:
            v = [v]
        return v
