"""The filters of Segment's liquidjs (10.30), written for python-liquid with JavaScript's semantics.

Each filter takes what python-liquid evaluates (its undefined, `empty` and `blank` objects included)
and answers what liquidjs answers for the same value: text through liquidjs's `stringify`, numbers
through `+value || 0`, lengths and indexes in UTF-16 code units or code points as liquidjs counts
them, and JavaScript's loose comparisons where liquidjs compares raw arguments (`truncate: "3"`).
Checked case by case against Segment's actions-core. Known differences: `nil` written in a template
reaches a filter as null, where liquidjs passes an object (`{{ nil | json }}` is "null", liquidjs
prints "{}"); `sample` is random in liquidjs and is left out (unknown filters return their input);
`number_of_words: "auto"` here always looks for CJK characters, where liquidjs's global regular
expression resumes from where its previous call stopped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from liquid.exceptions import Error as LiquidError
from liquid.expression import Blank, Empty
from liquid.undefined import is_undefined

from streamproc.core.js import (
    UNDEFINED,
    WHITESPACE,
    code_units,
    date_parse,
    join_code_units,
    js_keys,
    json_quote,
    number_to_string,
    string_to_number,
    to_js_string,
    to_number,
    trim,
    truthy,
    utf8,
    utf16_length,
)
from streamproc.core.js.convert import js_add, js_compare, to_integer_or_infinity, to_primitive
from streamproc.core.js.dates import days_from_civil
from streamproc.core.js.url import decode_uri_component, encode_uri_component
from streamproc.core.resolving import MAX_STRING_LENGTH

__all__ = [
    "FILTERS",
    "MEMORY_EXCEEDED",
    "FilterError",
    "fits",
    "js_equals",
    "js_value",
    "paired",
    "read_property",
    "stringify",
]


class FilterError(LiquidError):
    """A filter failed the way liquidjs's does; the message is liquidjs's, `name` the filter's."""

    name = ""


MEMORY_EXCEEDED = "memory alloc limit exceeded"
"""liquidjs's message when a template builds too much; here at MAX_STRING_LENGTH characters."""


def fits(size: int) -> None:
    """Refuse, before it is built, a string longer than MAX_STRING_LENGTH."""
    if size > MAX_STRING_LENGTH:
        raise FilterError(MEMORY_EXCEEDED)


# Values that are the same in JavaScript (JSON-shaped data), checked before python-liquid's types.
_PLAIN_TYPES = frozenset((str, int, float, bool, type(None), dict, list))


def js_value(value: Any) -> Any:
    """liquidjs's `toValue`: python-liquid's undefined is undefined, `empty` and `blank` are ""."""
    if type(value) in _PLAIN_TYPES:
        return value
    if is_undefined(value):
        return UNDEFINED
    if isinstance(value, Empty | Blank):
        return ""
    if isinstance(value, range):
        return list(value)
    return value


def stringify(value: Any) -> str:
    """liquidjs's `stringify`: nil and undefined are "", arrays are their items' texts joined."""
    if type(value) is str:
        return value
    value = js_value(value)
    if isinstance(value, str):
        return value
    if value is None or value is UNDEFINED:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number_to_string(value)
    if isinstance(value, list | tuple):
        return paired("".join(stringify(v) for v in value))
    return "[object Object]"


def paired(text: str) -> str:
    """Text as JavaScript holds it: a high and a low surrogate side by side are one character."""
    if text.isascii() or not any("\ud800" <= c <= "\udbff" for c in text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def _absent(value: Any) -> bool:
    """Undefined, python-liquid's or JavaScript's (a default parameter then applies)."""
    return value is UNDEFINED or is_undefined(value)


def _plain(value: Any) -> Any:
    """A value as JavaScript operators see it (`empty` and `blank` are objects, not "")."""
    if type(value) in _PLAIN_TYPES:
        return value
    return {} if isinstance(value, Empty | Blank) else js_value(value)


def _number(value: Any) -> float:
    """`+toValue(value) || 0`: NaN and -0 are 0."""
    number = to_number(js_value(value))
    return number if number == number and number != 0 else 0.0


def _nil(value: Any) -> bool:
    value = js_value(value)
    return value is None or value is UNDEFINED


def _falsy(value: Any) -> bool:
    """liquidjs's falsy: false, nil and undefined (0 and "" are truthy)."""
    value = js_value(value)
    return value is None or value is False or value is UNDEFINED


def _js_truthy(value: Any) -> bool:
    """JavaScript's `if (value)`."""
    return truthy(js_value(value))


def _result(number: float) -> int | float:
    """A JavaScript number as a Python value: integral doubles below 2**53 become ints."""
    if math.isfinite(number) and number == int(number) and abs(number) < 2**53:
        return int(number)
    return number


def _codepoint_count(count: Any) -> int:
    """How many times liquidjs's `for (i = 0; i < count; i++)` runs."""
    number = to_number(_plain(count))
    if math.isnan(number) or number <= 0:
        return 0
    if math.isinf(number):
        return 2**62
    return math.ceil(number)


def _to_array(value: Any) -> list[Any]:
    value = js_value(value)
    if value is None or value is UNDEFINED:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


# -- math ------------------------------------------------------------------------------------------


def _js_mod(x: float, y: float) -> float:
    if y == 0 or math.isinf(x) or math.isnan(x) or math.isnan(y):
        return math.nan
    if math.isinf(y):
        return x
    return math.fmod(x, y)


def _js_div(x: float, y: float) -> float:
    if y == 0:
        if x == 0 or math.isnan(x):
            return math.nan
        return math.copysign(math.inf, x) * math.copysign(1.0, y)
    return x / y


def _binary(op: Callable[[float, float], float]) -> Callable[..., Any]:
    def apply(value: Any, *args: Any) -> Any:
        other = _number(args[0]) if args else math.nan
        try:
            return _result(op(_number(value), other))
        except OverflowError:
            return math.nan

    return apply


def _modulo(value: Any, *args: Any) -> Any:
    x = _number(value)
    y = _number(args[0]) if args else math.nan
    return _result(_js_mod(_js_mod(x, y) + y, y))


def _divided_by(value: Any, *args: Any) -> Any:
    quotient = _js_div(_number(value), _number(args[0]) if args else math.nan)
    if len(args) > 1 and _number(args[1]) != 0 and math.isfinite(quotient):
        quotient = math.floor(quotient)
    return _result(quotient)


def _unary(op: Callable[[float], float]) -> Callable[..., Any]:
    def apply(value: Any, *_args: Any) -> Any:
        number = _number(value)
        if not math.isfinite(number):
            return number
        return _result(float(op(number)))

    return apply


def _extreme(pick: Callable[..., float]) -> Callable[..., Any]:
    def apply(value: Any, *args: Any) -> Any:
        return _result(pick([_number(value), *(_number(a) for a in args)]))

    return apply


def _shift_decimal(number: float, exponent: float) -> float:
    mantissa, _, power = number_to_string(number).partition("e")
    return string_to_number(f"{mantissa}e{number_to_string(float(power or 0) + exponent)}")


def _math_round(number: float) -> float:
    """`Math.round`: halves go up."""
    if not math.isfinite(number):
        return number
    floor = math.floor(number)
    return float(floor + 1) if number - floor >= 0.5 else float(floor)


def _round(value: Any, digits: Any = 0, *_args: Any) -> Any:
    """liquidjs moves the decimal point in the number's text, so 1.005 rounds to 1.01."""
    number, places = _number(value), _number(digits)
    scaled = _shift_decimal(abs(number), places)
    if not scaled <= 2**53 - 1:
        return _result(number)
    rounded = _shift_decimal(_math_round(scaled), -places)
    return _result(-rounded if number < 0 else rounded)


# -- text ------------------------------------------------------------------------------------------


def _append(value: Any, *args: Any) -> str:
    if len(args) != 1:
        raise FilterError("append expect 2 arguments")
    head, tail = stringify(value), stringify(args[0])
    fits(len(head) + len(tail))
    return head + tail


def _prepend(value: Any, *args: Any) -> str:
    if len(args) != 1:
        raise FilterError("prepend expect 2 arguments")
    head, tail = stringify(args[0]), stringify(value)
    fits(len(head) + len(tail))
    return head + tail


def _downcase(value: Any, *_args: Any) -> str:
    return stringify(value).lower()


def _upcase(value: Any, *_args: Any) -> str:
    return stringify(value).upper()


def _capitalize(value: Any, *_args: Any) -> str:
    """The first UTF-16 code unit upper-cased, the rest lower-cased (an astral first character
    stays as it is; Python's str.capitalize title-cases and lower-cases a final sigma)."""
    text = stringify(value)
    if not text:
        return ""
    if ord(text[0]) > 0xFFFF:
        return text[0] + text[1:].lower()
    return text[0].upper() + text[1:].lower()


def _remove(value: Any, pattern: Any = UNDEFINED, *_args: Any) -> str:
    text, old = stringify(value), stringify(pattern)
    return text.replace(old, "") if old else text


def _replace(value: Any, pattern: Any = UNDEFINED, replacement: Any = UNDEFINED, *_args: Any) -> str:
    text, old, new = stringify(value), stringify(pattern), stringify(replacement)
    if old:
        if len(new) > len(old):
            fits(len(text) + text.count(old) * (len(new) - len(old)))
        return text.replace(old, new)
    # JavaScript splits "" into UTF-16 code units and puts the replacement between them.
    units = code_units(text)
    fits(len(text) + max(len(units) - 1, 0) * len(new))
    return join_code_units([piece for unit in units for piece in (new, unit)][1:]) if units else ""


def _replace_first(value: Any, pattern: Any = UNDEFINED, replacement: Any = UNDEFINED, *_args: Any) -> str:
    text, old, new = stringify(value), stringify(pattern), stringify(replacement)
    fits(len(text) + len(new))
    return text.replace(old, new, 1) if old else new + text


def _replace_last(value: Any, pattern: Any = UNDEFINED, replacement: Any = UNDEFINED, *_args: Any) -> str:
    text, old, new = stringify(value), stringify(pattern), stringify(replacement)
    index = text.rfind(old)
    if index < 0:
        return text
    fits(len(text) + len(new))
    return text[:index] + new + text[index + len(old) :]


def _remove_first(value: Any, pattern: Any = UNDEFINED, *_args: Any) -> str:
    return _replace_first(value, pattern, "")


def _remove_last(value: Any, pattern: Any = UNDEFINED, *_args: Any) -> str:
    return _replace_last(value, pattern, "")


def _split(value: Any, separator: Any = UNDEFINED, *_args: Any) -> list[str]:
    text, sep = stringify(value), stringify(separator)
    parts = code_units(text) if sep == "" else text.split(sep)
    while parts and parts[-1] == "":
        parts.pop()
    return parts


_NEWLINES = re.compile(r"\r?\n")
_SPACES = re.compile(f"[{re.escape(WHITESPACE)}]+")


def _strip_newlines(value: Any, *_args: Any) -> str:
    return _NEWLINES.sub("", stringify(value))


def _squish(value: Any, *_args: Any) -> str:
    return trim(_SPACES.sub(" ", stringify(value)))


def _normalize_whitespace(value: Any, *_args: Any) -> str:
    return _SPACES.sub(" ", stringify(value))


_CJK = "\u4e00-\u9fff\uf900-\ufaff\u3400-\u4dbf\u3040-\u309f\u30a0-\u30ff\uac00-\ud7af"
_CJK_CHAR = re.compile(f"[{_CJK}]")
_NON_CJK_WORD = re.compile(f"[^{_CJK}{re.escape(WHITESPACE)}]+")


def _number_of_words(value: Any, mode: Any = UNDEFINED, *_args: Any) -> int:
    text = trim(stringify(value))
    if not text:
        return 0
    cjk = len(_CJK_CHAR.findall(text))
    if mode == "cjk" or (mode == "auto" and cjk):
        return cjk + len(_NON_CJK_WORD.findall(text))
    return len(_SPACES.split(text))


def _truncate(value: Any, length: Any = UNDEFINED, ellipsis: Any = UNDEFINED, *_args: Any) -> Any:
    """liquidjs counts code points and compares `length` the JavaScript way (so "3" is 3 and a
    non-number truncates to the ellipsis alone); a short value is returned as it came."""
    limit = 50 if _absent(length) else _plain(length)
    text = stringify(value)
    tail = "..." if _absent(ellipsis) else stringify(ellipsis)
    if js_compare(utf16_length(text), "<=", limit) or _codepoint_count(limit) >= len(text):
        return js_value(value)
    keep = to_number(limit) - len(tail)
    fits(len(text) + len(tail))
    return text[: _codepoint_count(max(keep, 0) if keep == keep else keep)] + tail


def _truncatewords(value: Any, words: Any = UNDEFINED, ellipsis: Any = UNDEFINED, *_args: Any) -> str:
    """Note liquidjs adds the ellipsis whenever there are at least `words` words, even exactly
    that many ("a b" | truncatewords: 2 is "a b...")."""
    count = 15 if _absent(words) else _plain(words)
    text = stringify(value)
    tail = "..." if _absent(ellipsis) else stringify(ellipsis)
    parts = _SPACES.split(text.lstrip(WHITESPACE))
    if js_compare(count, "<=", 0):
        count = 1
    end = to_integer_or_infinity(count)
    kept = parts[: max(0, int(min(end, len(parts))))] if end >= 0 else parts[: max(0, len(parts) + int(end))]
    out = " ".join(kept)
    if js_compare(len(parts), ">=", count):
        fits(len(out) + len(tail))
        out += tail
    return out


def _slice_bounds(length: int, start: Any, end: Any) -> tuple[int, int]:
    """Array.prototype.slice's relative start and end."""

    def position(value: Any) -> int:
        n = to_integer_or_infinity(value)
        if n < 0:
            return int(max(length + n, 0))
        return int(min(n, length))

    return position(start), position(end)


def _slice(value: Any, begin: Any = UNDEFINED, length: Any = UNDEFINED, *_args: Any) -> Any:
    """liquidjs's slice: strings by code points, arrays by items; a negative start counts from
    the end; a negative start beyond the beginning or a negative length gives nothing."""
    subject = js_value(value)
    if subject is None or subject is UNDEFINED:
        return []
    if not isinstance(subject, list | tuple):
        subject = stringify(subject)
    size = len(subject)
    start = _plain(begin)
    count = 1 if _absent(length) else _plain(length)
    if js_compare(start, "<", 0):
        start = js_add(size, start)
    if js_compare(start, "<", 0) or js_compare(count, "<", 0):
        return [] if isinstance(subject, list | tuple) else ""
    if isinstance(subject, list | tuple):
        lo, hi = _slice_bounds(size, start, js_add(start, count))
        return list(subject[lo:hi])
    first = min(_codepoint_count(start), size)
    return subject[first : first + _codepoint_count(count)]


# -- arrays ----------------------------------------------------------------------------------------


def _size(value: Any, *_args: Any) -> Any:
    """`(value && value.length) || 0`: UTF-16 code units for text; an object's own "length"."""
    value = _plain(value)
    if isinstance(value, str):
        return utf16_length(value)
    if isinstance(value, list | tuple):
        return len(value)
    if isinstance(value, dict):
        length = value.get("length", UNDEFINED)
        return length if _js_truthy(length) else 0
    return 0


def _element(value: Any, index: int) -> Any:
    """liquidjs's readArrayElement on anything with a numeric length (texts by code unit)."""
    if isinstance(value, str):
        units = code_units(value)
        index = len(units) + index if index < 0 else index
        return units[index] if 0 <= index < len(units) else UNDEFINED
    if isinstance(value, list | tuple):
        index = len(value) + index if index < 0 else index
        return value[index] if 0 <= index < len(value) else UNDEFINED
    length = value["length"]
    if index < 0:
        return value.get(number_to_string(js_add(length, index)), UNDEFINED)
    return value.get(str(index), UNDEFINED)


def _array_like(value: Any) -> bool:
    if isinstance(value, str):
        return value != ""
    if isinstance(value, list | tuple):
        return True
    return isinstance(value, dict) and type(value.get("length")) in (int, float)


def _first(value: Any, *_args: Any) -> Any:
    value = js_value(value)
    return _element(value, 0) if _array_like(value) else ""


def _last(value: Any, *_args: Any) -> Any:
    value = js_value(value)
    return _element(value, -1) if _array_like(value) else ""


def _join(value: Any, separator: Any = UNDEFINED, *_args: Any) -> str:
    sep = " " if _nil(separator) else stringify(separator)
    items = ["" if v is None or v is UNDEFINED else to_js_string(js_value(v)) for v in _to_array(value)]
    fits(sum(map(len, items)) + max(len(items) - 1, 0) * len(sep))
    return sep.join(items)


def _compact(value: Any, *_args: Any) -> list[Any]:
    return [v for v in _to_array(value) if not _nil(v)]


def read_property(obj: Any, key: Any) -> Any:
    """liquidjs's property read (own properties only): `size`, `first`, `last` and `length`
    included; UNDEFINED where there is nothing."""
    if type(obj) is dict and type(key) is str and key in obj:
        return obj[key]
    obj = _plain(obj)
    if obj is None or obj is UNDEFINED:
        return obj
    key = js_value(key)
    if isinstance(obj, list | tuple) and type(key) in (int, float):
        return _element(obj, int(key)) if key == int(key) else UNDEFINED
    name = key if isinstance(key, str) else to_js_string(key)
    if isinstance(obj, dict):
        if name in obj:
            return obj[name]
    elif isinstance(obj, list | tuple | str):
        if name == "length":
            return utf16_length(obj) if isinstance(obj, str) else len(obj)
        if name.isdigit() and (name == "0" or name[0] != "0"):
            return _element(obj, int(name))
    if name == "size":
        if isinstance(obj, str):
            return utf16_length(obj)
        if isinstance(obj, list | tuple | dict):
            return len(obj)
        return UNDEFINED
    if name in ("first", "last") and isinstance(obj, list | tuple):
        return _element(obj, 0 if name == "first" else -1)
    return UNDEFINED


def _path(item: Any, property: Any) -> Any:
    for key in stringify(property).split("."):
        item = read_property(item, key)
    return item


def _sum(value: Any, property: Any = UNDEFINED, *_args: Any) -> Any:
    total = 0.0
    for item in _to_array(value):
        number = to_number(_path(item, property) if _js_truthy(property) else js_value(item))
        total += 0.0 if math.isnan(number) else number
    return _result(total)


def _push(value: Any, item: Any = UNDEFINED, *_args: Any) -> list[Any]:
    return [*_to_array(value), js_value(item)]


def _unshift(value: Any, item: Any = UNDEFINED, *_args: Any) -> list[Any]:
    return [js_value(item), *_to_array(value)]


def _pop(value: Any, *_args: Any) -> list[Any]:
    return _to_array(value)[:-1]


def _shift(value: Any, *_args: Any) -> list[Any]:
    return _to_array(value)[1:]


def js_equals(left: Any, right: Any) -> bool:
    """liquidjs's `==`: `empty` and `blank` compare by emptiness, arrays item by item, anything
    else with `===` (so 1 is not true, and two objects are never equal)."""
    if isinstance(left, Empty | Blank) or isinstance(right, Empty | Blank):
        drop, other = (left, right) if isinstance(left, Empty | Blank) else (right, left)
        if isinstance(other, Empty | Blank):
            return False
        return _empty_equals(drop, js_value(other))
    left, right = js_value(left), js_value(right)
    if left is None or right is None:
        # Written `nil`, null equals undefined in liquidjs; null in the data does not.
        return (left is None or left is UNDEFINED) and (right is None or right is UNDEFINED)
    if isinstance(left, list | tuple):
        return (
            isinstance(right, list | tuple)
            and len(left) == len(right)
            and all(js_equals(a, b) for a, b in zip(left, right, strict=True))
        )
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return float(left) == float(right)
    if isinstance(left, dict) or isinstance(right, dict):
        return left is right
    return type(left) is type(right) and left == right


def _empty_equals(drop: Any, value: Any) -> bool:
    """EmptyDrop.equals / BlankDrop.equals: blank also equals false, nil and whitespace."""
    if isinstance(drop, Blank):
        if value is False or value is None or value is UNDEFINED:
            return True
        if isinstance(value, str):
            return trim(value) == ""
    if isinstance(value, str | list | tuple | dict):
        return len(value) == 0
    return False


def _where(value: Any, property: Any = UNDEFINED, *args: Any) -> list[Any]:
    items = _to_array(value)
    if not args or _absent(args[0]):
        return [item for item in items if not _falsy(_path(item, property))]
    return [item for item in items if js_equals(_path(item, property), args[0])]


# -- URLs and HTML ---------------------------------------------------------------------------------


def _url_encode(value: Any, *_args: Any) -> str:
    return _uri(stringify(value)).replace("%20", "+")


def _uri(text: str, *, whole: bool = False) -> str:
    try:
        return encode_uri_component(text, uri=whole)
    except ValueError as exc:
        raise FilterError(str(exc)) from None


def _url_decode(value: Any, *_args: Any) -> str:
    try:
        return decode_uri_component(stringify(value).replace("+", " "))
    except ValueError as exc:
        raise FilterError(str(exc)) from None


_CGI_EXTRA = re.compile(r"[!'()*]")


def _cgi_escape(value: Any, *_args: Any) -> str:
    return _CGI_EXTRA.sub(lambda m: f"%{ord(m.group(0)):X}", _url_encode(value))


def _uri_escape(value: Any, *_args: Any) -> str:
    return _uri(stringify(value), whole=True).replace("%5B", "[").replace("%5D", "]")


def _slug_kept(mode: str) -> Callable[[str], bool]:
    if mode == "ascii":
        return lambda c: c.isascii() and c.isalnum()
    if mode == "raw":
        return lambda c: c not in WHITESPACE
    extra = "._~!$&'()+,;=@" if mode == "pretty" else ""
    return lambda c: c in extra or unicodedata.category(c)[0] in "LM" or unicodedata.category(c) == "Nd"


_ACCENTS = (
    ("àáâãäå", "a"),
    ("æ", "ae"),
    ("ç", "c"),
    ("èéêë", "e"),
    ("ìíîï", "i"),
    ("ð", "d"),
    ("ñ", "n"),
    ("òóôõöø", "o"),
    ("ùúûü", "u"),
    ("ýÿ", "y"),
    ("ß", "ss"),
    ("œ", "oe"),
    ("þ", "th"),
    ("ẞ", "SS"),
    ("Œ", "OE"),
    ("Þ", "TH"),
)


def _slugify(value: Any, mode: Any = "default", cased: Any = False, *_args: Any) -> str:
    text = stringify(value)
    mode = "default" if _absent(mode) else js_value(mode)
    if mode in ("raw", "default", "pretty", "ascii", "latin"):
        if mode == "latin":
            for chars, plain in _ACCENTS:
                text = re.sub(f"[{chars}]", plain, text)
        kept = _slug_kept(mode)
        out: list[str] = []
        in_run = False
        for c in text:
            if kept(c):
                out.append(c)
            elif not in_run:
                out.append("-")
            in_run = not kept(c)
        text = "".join(out)
        if text.startswith("-"):
            text = text[1:]
        if text.endswith("-"):
            text = text[:-1]
    return text if _js_truthy(cased) else text.lower()


_ESCAPE = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"}
_ESCAPE_RE = re.compile("[&<>\"']")
_UNESCAPE = {v: k for k, v in _ESCAPE.items()}
_UNESCAPE_RE = re.compile("&(?:amp|lt|gt|#34|#39);")


def _escape(value: Any, *_args: Any) -> str:
    return _ESCAPE_RE.sub(lambda m: _ESCAPE[m.group(0)], stringify(value))


def _escape_once(value: Any, *_args: Any) -> str:
    return _escape(_UNESCAPE_RE.sub(lambda m: _UNESCAPE[m.group(0)], stringify(value)))


def _strip_html(value: Any, *_args: Any) -> str:
    """Drops <script>…</script>, <style>…</style>, <!--…--> and <…>; an opener without its closer
    stops the removal of that kind (and, for "<", all text from there on is kept)."""
    text = stringify(value)
    kinds = {"<script": "</script>", "<style": "</style>", "<!--": "-->", "<": ">"}
    out: list[str] = []
    i = 0
    while i < len(text):
        lt = text.find("<", i)
        if lt < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:lt])
        for opener in list(kinds):
            if not text.startswith(opener, lt):
                continue
            end = text.find(kinds[opener], lt + len(opener))
            if end >= 0:
                i = end + len(kinds[opener])
                break
            del kinds[opener]
        if i <= lt:
            out.append(text[lt:])
            return "".join(out)
    return "".join(out)


# -- encodings and hashes --------------------------------------------------------------------------


def _base64_encode(value: Any, *_args: Any) -> str:
    return base64.b64encode(utf8(stringify(value))).decode("ascii")


_BASE64_SPACE = re.compile(r"[\t\n\f\r ]")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*")


def _base64_decode(value: Any, *_args: Any) -> str:
    text = _BASE64_SPACE.sub("", stringify(value))
    if len(text) % 4 == 0:
        text = re.sub("==?$", "", text, count=1)
    if len(text) % 4 == 1 or not _BASE64.fullmatch(text):
        raise FilterError("invalid base64 provided to base64_decode")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raw = base64.b64decode(text[: len(text) - len(text) % 4])
    return raw.decode("utf-8", "replace")


def _sha256(value: Any, *_args: Any) -> str:
    return hashlib.sha256(utf8(stringify(value))).hexdigest()


def _hmac_sha256(value: Any, key: Any = UNDEFINED, *_args: Any) -> str:
    return hmac.new(utf8(stringify(key)), utf8(stringify(value)), hashlib.sha256).hexdigest()


# -- misc ------------------------------------------------------------------------------------------


def _default(value: Any, default: Any = UNDEFINED, *_args: Any, **kwargs: Any) -> Any:
    value = js_value(value)
    if isinstance(value, str | list | tuple):
        return value if len(value) else default
    if value is False and _js_truthy(kwargs.get("allow_false")):
        return False
    return default if _falsy(value) else value


def _indent(space: Any) -> str:
    space = js_value(space)
    if isinstance(space, str):
        return space[:10]
    if isinstance(space, int | float) and not isinstance(space, bool):
        return " " * int(min(10, max(0, to_integer_or_infinity(space))))
    return ""


def json_text(value: Any, indent: str = "", level: str = "") -> str | None:
    """`JSON.stringify(value, null, indent)` of a template value (None for undefined)."""
    value = _plain(value)
    if value is UNDEFINED or callable(value):
        return None
    if value is None or value is True or value is False:
        return "null" if value is None else ("true" if value else "false")
    if isinstance(value, int | float):
        return number_to_string(value) if math.isfinite(value) else "null"
    if isinstance(value, str):
        return json_quote(value)
    inner = level + indent
    sep, open_, close = ("," + "\n" + inner, "\n" + inner, "\n" + level) if indent else (",", "", "")
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        items = [json_text(v, indent, inner) or "null" for v in value]
        return "[" + open_ + sep.join(items) + close + "]"
    if isinstance(value, dict):
        colon = ": " if indent else ":"
        parts = []
        for key in js_keys(value):
            text = json_text(value[key], indent, inner)
            if text is not None:
                parts.append(json_quote(str(key)) + colon + text)
        if not parts:
            return "{}"
        return "{" + open_ + sep.join(parts) + close + "}"
    return json_quote(str(value))


def _json(value: Any, space: Any = 0, *_args: Any) -> Any:
    text = json_text(value, _indent(space))
    return UNDEFINED if text is None else text


def _to_integer(value: Any, *_args: Any) -> Any:
    return _result(to_number(js_value(value)))


def _raw(value: Any, *_args: Any) -> Any:
    return value


# -- dates -----------------------------------------------------------------------------------------

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_DEFAULT_DATE_FORMAT = "%A, %B %-e, %Y at %-l:%M %P %z"
_MAX_TIME = 8.64e15


class _Date:
    """liquidjs's LiquidDate on a UTC host: wall-clock fields of `ms` shifted by the display
    offset (minutes behind UTC, as getTimezoneOffset counts)."""

    def __init__(self, ms: float, offset: float = 0.0, zone: str | None = None) -> None:
        self.ms = ms
        self.offset = offset
        self.zone = zone
        shown = ms - offset * 60000
        days, rest = divmod(int(shown), 86400000)
        self.y, self.mo, self.d = _civil(days)
        self.weekday = (days + 4) % 7
        self.h, rest = divmod(rest, 3600000)
        self.mi, rest = divmod(rest, 60000)
        self.s, self.milli = divmod(rest, 1000)

    def yday(self) -> int:
        return days_from_civil(self.y, self.mo, self.d) - days_from_civil(self.y, 1, 1) + 1

    def week(self, start: int) -> str:
        since = (self.weekday - start + 7) % 7
        return str((self.yday() - 1 - since + 7) // 7)

    def zone_offset(self, colon: bool) -> str:
        whole = abs(self.offset)
        sign = "-" if self.offset > 0 else "+"
        hours, minutes = math.floor(whole / 60), math.fmod(whole, 60)
        return f"{sign}{hours:02d}{':' if colon else ''}{number_to_string(_result(minutes)).rjust(2, '0')}"


def _civil(days: int) -> tuple[int, int, int]:
    """Year, month, day of a day count since 1970-01-01 (proleptic Gregorian)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def _locale_time(d: _Date) -> str:
    return f"{d.h % 12 or 12}:{d.mi:02d}:{d.s:02d} {'AM' if d.h < 12 else 'PM'}"


def _ordinal(day: int) -> str:
    if day in (11, 12, 13):
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


_CODES: dict[str, Callable[[_Date, dict[str, Any]], Any]] = {
    "a": lambda d, o: _DAYS[d.weekday][:3],
    "A": lambda d, o: _DAYS[d.weekday],
    "b": lambda d, o: _MONTHS[d.mo - 1][:3],
    "h": lambda d, o: _MONTHS[d.mo - 1][:3],
    "B": lambda d, o: _MONTHS[d.mo - 1],
    "c": lambda d, o: f"{d.mo}/{d.d}/{d.y}, {_locale_time(d)}",
    "C": lambda d, o: d.y // 100,
    "d": lambda d, o: d.d,
    "e": lambda d, o: d.d,
    "H": lambda d, o: d.h,
    "I": lambda d, o: str(d.h % 12 or 12),
    "j": lambda d, o: d.yday(),
    "k": lambda d, o: d.h,
    "l": lambda d, o: str(d.h % 12 or 12),
    "L": lambda d, o: d.milli,
    "m": lambda d, o: d.mo,
    "M": lambda d, o: d.mi,
    "N": lambda d, o: str(d.milli).zfill(3)[: o["n"]].ljust(o["n"], "0"),
    "p": lambda d, o: "AM" if d.h < 12 else "PM",
    "P": lambda d, o: "am" if d.h < 12 else "pm",
    "q": lambda d, o: _ordinal(d.d),
    "s": lambda d, o: math.floor(d.ms / 1000),
    "S": lambda d, o: d.s,
    "u": lambda d, o: d.weekday or 7,
    "U": lambda d, o: d.week(0),
    "w": lambda d, o: d.weekday,
    "W": lambda d, o: d.week(1),
    "x": lambda d, o: f"{d.mo}/{d.d}/{d.y}",
    "X": lambda d, o: _locale_time(d),
    "y": lambda d, o: (d.y % 100 + 100) % 100,
    "Y": lambda d, o: d.y,
    "z": lambda d, o: d.zone_offset(o["colon"]),
    "Z": lambda d, o: "UTC" if d.zone is None else d.zone or d.zone_offset(o["colon"]),
    "t": lambda d, o: "\t",
    "n": lambda d, o: "\n",
    "%": lambda d, o: "%",
}
_WIDTHS = {"C": 2, "d": 2, "e": 2, "H": 2, "I": 2, "j": 3, "k": 2, "l": 2, "L": 3, "m": 2, "M": 2}
_WIDTHS |= {"S": 2, "U": 2, "W": 2, "y": 2, "Y": 4}
_SPACE_PADDED = frozenset("aAbBceklpP")
_FORMAT = re.compile(r"%([-_0^#:]+)?(\d+)?([EO])?([^\n\r\u2028\u2029])")


def _format_one(d: _Date, match: re.Match[str]) -> str:
    flags, width, _modifier, code = match.groups()
    flags = flags or ""
    convert = _CODES.get(code)
    if convert is None:
        return match.group(0)
    opts = {"colon": ":" in flags, "n": int(width or 0) or 9}
    out = convert(d, opts)
    text = out if isinstance(out, str) else number_to_string(out)
    pad = " " if code in _SPACE_PADDED else "0"
    size = int(width or 0) or _WIDTHS.get(code, 0)
    fits(size)
    if "^" in flags:
        text = text.upper()
    elif "#" in flags:
        text = text.upper() if any("a" <= c <= "z" for c in text) else text.lower()
    if "_" in flags:
        pad = " "
    elif "0" in flags:
        pad = "0"
    if "-" in flags:
        size = 0
    if pad == "0" and text.startswith("-"):
        return "-" + text[1:].rjust(size - 1, pad)
    return text.rjust(size, pad)


def strftime(d: _Date, fmt: str) -> str:
    size = len(fmt)

    def one(match: re.Match[str]) -> str:
        # Each directive's width is checked, with what came before it, before it pads.
        nonlocal size
        fits(size + int(match.group(2) or 0))
        text = _format_one(d, match)
        size += len(text) - len(match.group(0))
        fits(size)
        return text

    return _FORMAT.sub(one, fmt)


_DIGITS = re.compile(r"[0-9]+")


def _time_clip(ms: float) -> float:
    if not math.isfinite(ms) or abs(ms) > _MAX_TIME:
        return math.nan
    return float(math.trunc(ms)) + 0.0


def _parse_date(value: Any, zone: Any = UNDEFINED) -> _Date | None:
    value = js_value(value)
    if value is None or value is UNDEFINED:
        return None
    if value in ("now", "today"):
        ms = float(math.floor(time.time() * 1000))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        ms = _time_clip(value * 1000.0)
    elif isinstance(value, str):
        ms = _time_clip(to_number(value) * 1000.0) if _DIGITS.fullmatch(value) else date_parse(value)
    else:
        primitive = to_primitive(value)
        ms = date_parse(primitive) if isinstance(primitive, str) else _time_clip(to_number(primitive))
    if math.isnan(ms):
        return None
    zone = js_value(zone)
    if zone is UNDEFINED:
        return _Date(ms)
    if isinstance(zone, str):
        offset, name = _zone_offset(zone, ms), zone
    else:
        offset, name = to_number(zone), ""
    # The shifted display date must itself be a valid Date, or liquidjs returns the input.
    if not (math.isfinite(offset) and abs(ms - offset * 60000) <= _MAX_TIME):
        return None
    return _Date(ms, offset, name)


# The instants Python's datetime can place in a zone.
_DATETIME_RANGE = (-62135596800.0 + 86400 * 2, 253402300799.0 - 86400 * 2)


def _zone_offset(name: str, ms: float) -> float:
    """Minutes behind UTC of the IANA zone `name` at `ms`, as liquidjs reads it from
    toLocaleString (seconds included, so old local mean times give fractional minutes). Instants
    outside the years 1..9999 take the offset at the nearer end (liquidjs's are unreliable there)."""
    if name.upper() == "UTC":
        return 0.0
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # V8's message shows the name's UTF-8 bytes as Latin-1 characters.
        shown = name.encode("utf-8", "surrogatepass").decode("latin-1")
        raise FilterError(f"Invalid time zone specified: {shown}") from None
    seconds = min(max(math.floor(ms / 1000), _DATETIME_RANGE[0]), _DATETIME_RANGE[1])
    delta = datetime.fromtimestamp(seconds, tz=UTC).astimezone(zone).utcoffset()
    return -delta.total_seconds() / 60 if delta is not None else 0.0


def _date(value: Any, fmt: Any = UNDEFINED, zone: Any = UNDEFINED, *_args: Any) -> Any:
    d = _parse_date(value, zone)
    if d is None:
        return js_value(value)
    fmt = js_value(fmt)
    return strftime(d, _DEFAULT_DATE_FORMAT if fmt is None or fmt is UNDEFINED else stringify(fmt))


def _date_with(fmt: str) -> Callable[..., Any]:
    def apply(value: Any, *_args: Any) -> Any:
        d = _parse_date(value)
        return js_value(value) if d is None else strftime(d, fmt)

    return apply


def _date_words(month: str) -> Callable[..., Any]:
    def apply(value: Any, kind: Any = UNDEFINED, style: Any = UNDEFINED, *_args: Any) -> Any:
        d = _parse_date(value)
        if d is None:
            return js_value(value)
        if kind == "ordinal":
            fmt = f"{month} {d.d}%q, %Y" if style == "US" else f"{d.d}%q {month} %Y"
            return strftime(d, fmt)
        return strftime(d, f"%d {month} %Y")

    return apply


FILTERS: dict[str, Callable[..., Any]] = {
    "abs": _unary(abs),
    "at_least": _extreme(max),
    "at_most": _extreme(min),
    "ceil": _unary(math.ceil),
    "divided_by": _divided_by,
    "floor": _unary(math.floor),
    "minus": _binary(lambda a, b: a - b),
    "plus": _binary(lambda a, b: a + b),
    "modulo": _modulo,
    "times": _binary(lambda a, b: a * b),
    "round": _round,
    "url_decode": _url_decode,
    "url_encode": _url_encode,
    "cgi_escape": _cgi_escape,
    "uri_escape": _uri_escape,
    "slugify": _slugify,
    "join": _join,
    "last": _last,
    "first": _first,
    "size": _size,
    "sum": _sum,
    "compact": _compact,
    "push": _push,
    "unshift": _unshift,
    "pop": _pop,
    "shift": _shift,
    "slice": _slice,
    "where": _where,
    "date": _date,
    "date_to_xmlschema": _date_with("%Y-%m-%dT%H:%M:%S%:z"),
    "date_to_rfc822": _date_with("%a, %d %b %Y %H:%M:%S %z"),
    "date_to_string": _date_words("%b"),
    "date_to_long_string": _date_words("%B"),
    "append": _append,
    "prepend": _prepend,
    "downcase": _downcase,
    "upcase": _upcase,
    "remove": _remove,
    "remove_first": _remove_first,
    "remove_last": _remove_last,
    "split": _split,
    "strip_newlines": _strip_newlines,
    "squish": _squish,
    "capitalize": _capitalize,
    "replace": _replace,
    "replace_first": _replace_first,
    "replace_last": _replace_last,
    "truncate": _truncate,
    "truncatewords": _truncatewords,
    "normalize_whitespace": _normalize_whitespace,
    "number_of_words": _number_of_words,
    "escape": _escape,
    "xml_escape": _escape,
    "escape_once": _escape_once,
    "strip_html": _strip_html,
    "base64_encode": _base64_encode,
    "base64_decode": _base64_decode,
    "sha256": _sha256,
    "hmac_sha256": _hmac_sha256,
    "default": _default,
    "raw": _raw,
    "json": _json,
    "jsonify": _json,
    "inspect": _json,
    "to_integer": _to_integer,
}
