"""The @liquid directive: templates parsed once with python-liquid, configured like Segment's liquidjs.

Matched with Segment: the 1000-character limit, the disabled tags and filters with liquidjs's
messages and positions, unknown tags, how values print (JavaScript numbers, arrays joined, objects as
"[object Object]"), unknown filters passing the value through, JavaScript arithmetic in math filters,
text conversion in string filters, `blank`, sha256/hmac_sha256/json filters, keywords as property
names (`a.empty`). Known differences, all outside the spec's recorded cases:
- other syntax errors keep python-liquid's wording ("..., on line N") instead of "line:L, col:C";
- the memory limit is python-liquid's namespace/output byte count (same message, no position), and
  the 500 ms render limit is not enforced (without loop tags rendering is linear in template size);
- comparisons inside `{{ }}` are a syntax error, and filters applied to values of a type they do not
  expect (`nil | slice`, `where` on text, `date` on numbers) may answer differently.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import re
from collections.abc import Callable
from io import StringIO
from typing import Any

import liquid.expression as _liquid_expression
from liquid import Environment
from liquid.builtin.statement import Statement, StatementNode
from liquid.builtin.tags.echo_tag import EchoNode, EchoTag
from liquid.context import Context
from liquid.exceptions import Error as LiquidError
from liquid.exceptions import LiquidSyntaxError, LiquidTypeError, ResourceLimitError
from liquid.expression import Blank, Empty
from liquid.stream import TokenStream
from liquid.tag import Tag
from liquid.undefined import is_undefined

from streamproc.core.js import (
    UNDEFINED,
    WHITESPACE,
    json_stringify,
    number_to_string,
    to_js_string,
    to_number,
    trim,
    utf16_length,
)
from streamproc.core.mapping import _error

__all__ = ["DISABLED_FILTERS", "DISABLED_TAGS", "MAX_TEMPLATE_LENGTH", "compile_liquid"]

MAX_TEMPLATE_LENGTH = 1000
# Byte budget for strings built while rendering (Segment gives liquidjs a memory limit of 1e8).
MEMORY_LIMIT = 100_000_000

DISABLED_TAGS: tuple[str, ...] = ("case", "for", "include", "layout", "render", "tablerow")
DISABLED_FILTERS: tuple[str, ...] = (
    "array_to_sentence_string",
    "concat",
    "find",
    "find_exp",
    "find_index",
    "find_index_exp",
    "group_by",
    "group_by_exp",
    "has",
    "has_exp",
    "map",
    "newline_to_br",
    "reject",
    "reject_exp",
    "reverse",
    "sort",
    "sort_natural",
    "uniq",
    "where_exp",
    "type",
)


class _Disabled(LiquidSyntaxError):
    """A disabled tag or filter was used; `kind` and `what` rebuild Segment's message."""

    def __init__(self, kind: str, name: str, linenum: int | None = None) -> None:
        super().__init__(f'{kind} "{name}" is disabled', linenum=linenum)
        self.kind = kind
        self.what = name


def _output_text(value: Any) -> str:
    """How liquidjs prints a value: JavaScript numbers, arrays flattened and joined with ""."""
    if isinstance(value, str):
        return value
    if value is None or value is UNDEFINED or is_undefined(value) or isinstance(value, Empty | Blank):
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number_to_string(value)
    if isinstance(value, list | tuple):
        return "".join(_output_text(v) for v in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


class _JsStatementNode(StatementNode):
    def render_to_output(self, context: Context, buffer: Any) -> bool | None:
        buffer.write(_output_text(self.expression.evaluate(context)))
        return None


class _JsStatement(Statement):
    node_class = _JsStatementNode


class _JsEchoNode(EchoNode):
    def render_to_output(self, context: Context, buffer: Any) -> bool | None:
        buffer.write(_output_text(self.expression.evaluate(context)))
        return None


class _JsEchoTag(EchoTag):
    node_class = _JsEchoNode


def _disabled_tag(tag_name: str) -> type[Tag]:
    class DisabledTag(Tag):
        name = tag_name
        block = False

        def parse(self, stream: TokenStream) -> Any:
            raise _Disabled("tag", tag_name, linenum=stream.current.linenum)

    return DisabledTag


def _disabled_filter(filter_name: str) -> Callable[..., Any]:
    def disabled(*_args: Any, **_kwargs: Any) -> Any:
        raise _Disabled("filter", filter_name)

    return disabled


def _number(value: Any) -> float:
    """The number liquidjs math filters see: JavaScript `Number(value)`, with NaN read as 0."""
    number = to_number(value)
    return 0.0 if math.isnan(number) else number


def _integral(value: float) -> int | float:
    if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
        return int(value)
    return value


def _arith(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """A math filter with JavaScript doubles (Python ints stay exact where both sides are ints)."""

    def apply(value: Any, other: Any = None) -> Any:
        if type(value) is int and type(other) is int:
            return op(value, other)
        try:
            return op(_number(value), _number(other))
        except (OverflowError, ZeroDivisionError):
            return math.nan

    return apply


def _divided_by(value: Any, other: Any = None) -> Any:
    divisor = _number(other)
    dividend = _number(value)
    if divisor == 0:
        if dividend == 0 or math.isnan(dividend):
            return math.nan
        return math.copysign(math.inf, dividend) * math.copysign(1, divisor)
    return _integral(dividend / divisor)


def _round(value: Any, digits: Any = 0) -> Any:
    """liquidjs rounds halves away from zero."""
    places = int(_number(digits)) if digits is not None and not is_undefined(digits) else 0
    scale = 10.0**places
    number = _number(value)
    if not math.isfinite(number):
        return number
    return _integral(math.copysign(math.floor(abs(number) * scale + 0.5) / scale, number))


def _unary(op: Callable[[float], Any]) -> Callable[[Any], Any]:
    def apply(value: Any) -> Any:
        number = _number(value)
        if not math.isfinite(number):
            return number
        return _integral(float(op(number)))

    return apply


def _join(value: Any, separator: Any = " ") -> Any:
    if not isinstance(value, list | tuple):
        return value
    sep = " " if separator is None or is_undefined(separator) else _output_text(separator)
    return sep.join("" if v is None or is_undefined(v) else to_js_string(v) for v in value)


def _append(value: Any, other: Any = None) -> str:
    return _output_text(value) + _output_text(other)


def _prepend(value: Any, other: Any = None) -> str:
    return _output_text(other) + _output_text(value)


# Filters that take text: liquidjs turns their input and arguments into text the JavaScript way
# ("true", "100", arrays joined), where python-liquid would use Python's str().
_TEXT_FILTERS = (
    "capitalize",
    "downcase",
    "upcase",
    "escape",
    "escape_once",
    "strip_html",
    "strip_newlines",
    "remove",
    "remove_first",
    "remove_last",
    "replace",
    "replace_first",
    "replace_last",
    "split",
    "truncate",
    "truncatewords",
    "url_encode",
    "url_decode",
    "base64_encode",
    "base64_decode",
    "base64_url_safe_encode",
    "base64_url_safe_decode",
)


def _text_filter(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def apply(value: Any, *args: Any, **kwargs: Any) -> Any:
        texts = [a if type(a) in (int, float) else _output_text(a) for a in args]
        return func(_output_text(value), *texts, **kwargs)

    return apply


def _falsy(value: Any) -> bool:
    """JavaScript's `!value` (undefined, null, false, 0, NaN, "")."""
    if value is None or value is False or value == "" or is_undefined(value):
        return True
    return type(value) in (int, float) and not (value == value and value != 0)


def _stripper(ends: str) -> Callable[..., str]:
    """liquidjs's strip/lstrip/rstrip: JavaScript whitespace (String.prototype.trim's set), or the
    characters of an optional argument when it is truthy (python-liquid's take no argument and
    strip Python's set). A `nil` literal argument counts as null here; liquidjs passes a drop."""
    method = {"both": str.strip, "left": str.lstrip, "right": str.rstrip}[ends]

    def apply(value: Any, chars: Any = None) -> str:
        text = _output_text(value)
        if _falsy(chars):
            return method(text, WHITESPACE)
        return method(text, _output_text(chars))

    return apply


def _sha256(value: Any) -> str:
    return hashlib.sha256(_output_text(value).encode("utf-8")).hexdigest()


def _hmac_sha256(value: Any, key: Any = "") -> str:
    secret = _output_text(key).encode("utf-8")
    return hmac.new(secret, _output_text(value).encode("utf-8"), hashlib.sha256).hexdigest()


def _json(value: Any, *_args: Any) -> Any:
    text = json_stringify(value)
    return "" if text is None else text


class _SegmentLiquid(Environment):
    local_namespace_limit = MEMORY_LIMIT
    output_stream_limit = MEMORY_LIMIT

    def setup_tags_and_filters(self) -> None:
        super().setup_tags_and_filters()
        self.add_tag(_JsStatement)
        self.add_tag(_JsEchoTag)
        for tag in DISABLED_TAGS:
            self.tags.pop(tag, None)
            self.add_tag(_disabled_tag(tag))
        self.tags.pop("ifchanged", None)  # not a liquidjs tag
        self.add_filter("plus", _arith(lambda a, b: a + b))
        self.add_filter("minus", _arith(lambda a, b: a - b))
        self.add_filter("times", _arith(lambda a, b: a * b))
        self.add_filter("divided_by", _divided_by)
        self.add_filter("round", _round)
        self.add_filter("floor", _unary(math.floor))
        self.add_filter("ceil", _unary(math.ceil))
        self.add_filter("abs", _unary(abs))
        self.add_filter("join", _join)
        self.add_filter("append", _append)
        self.add_filter("prepend", _prepend)
        self.add_filter("json", _json)
        self.add_filter("strip", _stripper("both"))
        self.add_filter("lstrip", _stripper("left"))
        self.add_filter("rstrip", _stripper("right"))
        self.add_filter("sha256", _sha256)
        self.add_filter("hmac_sha256", _hmac_sha256)
        for name in _TEXT_FILTERS:
            if name in self.filters:
                self.add_filter(name, _text_filter(self.filters[name]))
        for name in DISABLED_FILTERS:
            self.add_filter(name, _disabled_filter(name))


def _is_blank(value: Any) -> bool:
    """liquidjs's `blank`: nil, undefined, false, whitespace-only text, empty arrays and objects."""
    if value is None or value is False or is_undefined(value) or isinstance(value, Blank | Empty):
        return True
    if isinstance(value, str):
        return trim(value) == ""
    if isinstance(value, list | tuple | dict):
        return len(value) == 0
    return False


def _lenient_compare(original: Callable[[Any, str, Any], bool]) -> Callable[[Any, str, Any], bool]:
    def compare(left: Any, op: str, right: Any) -> bool:
        if op in ("==", "!=", "<>") and (isinstance(left, Blank) or isinstance(right, Blank)):
            other = right if isinstance(left, Blank) else left
            return _is_blank(other) == (op == "==")
        try:
            return original(left, op, right)
        except LiquidTypeError:
            return False

    compare.__wrapped__ = original  # type: ignore[attr-defined]
    return compare


# liquidjs answers false for a comparison of unrelated types (`5 contains "a"`, `nil > 2`) where
# python-liquid raises. python-liquid looks this function up at module level, and streamproc is its
# only user in the process, so it is replaced once here.
if not hasattr(_liquid_expression.compare, "__wrapped__"):
    _liquid_expression.compare = _lenient_compare(_liquid_expression.compare)  # type: ignore[assignment]

_ENV = _SegmentLiquid(strict_filters=False)


def _location(source: str, exc: _Disabled) -> str:
    """liquidjs's ", line:L, col:C" suffix: where the tag or output holding the name starts."""
    if exc.kind == "tag":
        pattern = re.compile(r"\{%-?\s*" + re.escape(exc.what) + r"(?![\w-])")
    else:
        pattern = re.compile(r"(\{\{|\{%)(?:(?!\}\}|%\}).)*?\|\s*" + re.escape(exc.what) + r"(?![\w-])", re.S)
    matches = list(pattern.finditer(source))
    if not matches:
        return ""
    chosen = matches[0]
    if exc.linenum:
        on_line = [m for m in matches if source.count("\n", 0, m.start()) + 1 == exc.linenum]
        if on_line:
            chosen = on_line[0]
    start = chosen.start()
    line = source.count("\n", 0, start) + 1
    col = start - (source.rfind("\n", 0, start) + 1) + 1
    return f", line:{line}, col:{col}"


_UNKNOWN_TAG = re.compile(r"unexpected tag '([^']+)'")


def _message(source: str, exc: LiquidError) -> str:
    if isinstance(exc, _Disabled):
        return str(exc.args[0]) + _location(source, exc)
    if isinstance(exc, ResourceLimitError):
        return "memory alloc limit exceeded"
    unknown = _UNKNOWN_TAG.match(str(exc.args[0]) if exc.args else "")
    if unknown:
        name = unknown.group(1)
        where = _location(source, _Disabled("tag", name, linenum=exc.linenum))
        return f'tag "{name}" not found{where}'
    return str(exc)


_MARKUP = re.compile(r"\{%-?\s*raw\s*-?%\}.*?\{%-?\s*endraw\s*-?%\}|\{\{.*?\}\}|\{%.*?%\}", re.S)
_RAW_START = re.compile(r"\{%-?\s*raw\s*-?%\}")
_QUOTED = re.compile(r"(\"[^\"]*\"|'[^']*')")
_KEYWORD_PROPERTY = re.compile(r"(?<=[\w\]])\.(empty|blank|nil|null|true|false)(?![\w-])")


def _quote_keyword_properties(source: str) -> str:
    """`a.empty`, `a.true` ... are plain properties to liquidjs but keywords to python-liquid's
    lexer, so inside tags and outputs they are rewritten as `a["empty"]` (quoted text untouched)."""
    if "." not in source:
        return source

    def in_markup(match: re.Match[str]) -> str:
        if _RAW_START.match(match.group(0)):
            return match.group(0)
        parts = _QUOTED.split(match.group(0))
        for i in range(0, len(parts), 2):
            parts[i] = _KEYWORD_PROPERTY.sub(lambda m: f'["{m.group(1)}"]', parts[i])
        return "".join(parts)

    return _MARKUP.sub(in_markup, source)


def _fail(message: str) -> Callable[[Any], Any]:
    def fail(payload: Any) -> Any:
        raise _error(message)

    return fail


def compile_liquid(option: Any) -> Callable[[Any], Any]:
    """A resolver for one @liquid option. The template is parsed here; a template Segment would
    refuse fails each time it is resolved, with Segment's message, as Segment does."""
    if not isinstance(option, str):
        return _fail("liquid template value must be a string")
    if option == "":
        return lambda payload: ""
    if utf16_length(option) > MAX_TEMPLATE_LENGTH:
        return _fail("liquid template values are limited to 1000 characters")
    try:
        template = _ENV.from_string(_quote_keyword_properties(option))
    except LiquidError as exc:
        return _fail(_message(option, exc))
    except (RecursionError, ValueError) as exc:
        return _fail(str(exc))

    def render(payload: Any) -> Any:
        data = payload if isinstance(payload, dict) else {}
        buffer = StringIO()
        try:
            context = Context(_ENV, globals=data)
            template.render_with_context(context, buffer)
        except LiquidError as exc:
            raise _error(_message(option, exc)) from None
        except (RecursionError, ValueError, TypeError, ArithmeticError) as exc:
            raise _error(f"liquid render failed: {exc}") from None
        return buffer.getvalue()

    return render
