"""The @liquid directive: templates parsed once with python-liquid, configured like Segment's liquidjs.

Matched with Segment: the 1000-character limit, the disabled tags and filters with liquidjs's
messages and positions, unknown tags, how values print (JavaScript numbers, arrays joined, objects as
"[object Object]"), unknown filters passing the value through, every liquidjs filter with its
JavaScript semantics (streamproc.core.liquid_filters), property reads (`s.length`, `s[0]` by UTF-16
code unit, own properties only), liquidjs's `==`, `contains` and JavaScript's `<`/`>`, `blank` and
`empty`, keywords as property names (`a.empty`). Known differences, all outside the spec's recorded
cases:
- other syntax errors keep python-liquid's wording ("..., on line N") instead of "line:L, col:C",
  and some text liquidjs reads leniently is a syntax error here (`.5`, `1e+308`, `[]`, `v[1.5]`,
  `'abc'.size`, `'a\\'b'`, `{% break %}` outside a loop);
- a `nil` literal is null (liquidjs has an object that never orders: `1 > nil` is false there);
- date time zones at instants outside the years 1-9999 (liquidjs's answers there are unreliable);
- the memory limit is lower: no filter result and no output longer than MAX_STRING_LENGTH
  characters, refused before it is built (liquidjs's message, "memory alloc limit exceeded"; liquidjs
  counts up to 1e8 bytes, in some filters only, and pads a `date` to any width); the 500 ms render
  limit is not enforced (without loop tags rendering is linear in template size);
- comparisons inside `{{ }}` are a syntax error.
"""

from __future__ import annotations

import functools
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
from liquid.exceptions import LiquidSyntaxError, OutputStreamLimitError, ResourceLimitError
from liquid.expression import Blank, Empty
from liquid.stream import TokenStream
from liquid.tag import Tag
from liquid.undefined import is_undefined

from streamproc.core.js import UNDEFINED, WHITESPACE, to_js_string, utf16_length
from streamproc.core.js.convert import js_compare
from streamproc.core.liquid_filters import (
    FILTERS,
    MEMORY_EXCEEDED,
    FilterError,
    fits,
    js_equals,
    js_value,
    paired,
    read_property,
    stringify,
)
from streamproc.core.resolving import MAX_STRING_LENGTH, raising
from streamproc.errors import MappingError

__all__ = ["DISABLED_FILTERS", "DISABLED_TAGS", "MAX_TEMPLATE_LENGTH", "compile_liquid"]

MAX_TEMPLATE_LENGTH = 1000
# Budget for what `assign` and `capture` keep while rendering (python-liquid counts sizes in bytes,
# up to four per character); Segment gives liquidjs a memory limit of 1e8.
MEMORY_LIMIT = 4 * MAX_STRING_LENGTH

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


class _JsStatementNode(StatementNode):
    def render_to_output(self, context: Context, buffer: Any) -> bool | None:
        buffer.write(stringify(self.expression.evaluate(context)))
        return None


class _JsStatement(Statement):
    node_class = _JsStatementNode


class _JsEchoNode(EchoNode):
    def render_to_output(self, context: Context, buffer: Any) -> bool | None:
        buffer.write(stringify(self.expression.evaluate(context)))
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
        text = stringify(value)
        if _falsy(chars):
            return method(text, WHITESPACE)
        return method(text, stringify(chars))

    return apply


def _named(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """The filter, its FilterError marked with its name (for liquidjs's position in the message)."""

    @functools.wraps(func)
    def apply(*args: Any, **kwargs: Any) -> Any:
        try:
            result = func(*args, **kwargs)
            # Filters that grow a string by an argument check before they build; the others grow
            # it by a small factor at most (url_encode, escape, json), and are held to it here.
            if type(result) is str:
                fits(len(result))
            return result
        except FilterError as exc:
            exc.name = name
            raise

    return apply


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
        # Only liquidjs's filters: python-liquid's own extras (safe, base64_url_safe_*) are unknown
        # filters to liquidjs, which return their input.
        self.filters.clear()
        for name, func in FILTERS.items():
            self.add_filter(name, _named(name, func))
        self.add_filter("strip", _stripper("both"))
        self.add_filter("lstrip", _stripper("left"))
        self.add_filter("rstrip", _stripper("right"))
        for name in DISABLED_FILTERS:
            self.add_filter(name, _disabled_filter(name))


def _js_compare(original: Callable[[Any, str, Any], bool]) -> Callable[[Any, str, Any], bool]:
    """liquidjs's operators: `==` is `===` (arrays item by item, `empty`/`blank` by emptiness),
    `<`/`>`/`<=`/`>=` are JavaScript's (so "10" > 9 and 1 > nil), `contains` is `includes` on
    arrays and `indexOf(String(right))` on text. A `nil` literal is null here, where liquidjs's nil
    never orders (`1 > nil` is false there) but equals undefined, as it does here."""

    def compare(left: Any, op: str, right: Any) -> bool:
        if op in ("and", "or"):
            return original(left, op, right)
        if op == "==":
            return js_equals(left, right)
        if op in ("!=", "<>"):
            return not js_equals(left, right)
        if op == "contains":
            subject = js_value(left)
            if isinstance(subject, list | tuple):
                return any(js_equals(item, right) for item in subject)
            if isinstance(subject, str):
                return to_js_string(js_value(right)) in subject
            return False
        if isinstance(left, Empty | Blank) or isinstance(right, Empty | Blank):
            return False
        return js_compare(js_value(left), op, js_value(right))

    compare.__wrapped__ = original  # type: ignore[attr-defined]
    return compare


# python-liquid looks this function up at module level, and streamproc is its only user in the
# process, so it is replaced once here.
if not hasattr(_liquid_expression.compare, "__wrapped__"):
    _liquid_expression.compare = _js_compare(_liquid_expression.compare)  # type: ignore[assignment]


class _JsContext(Context):
    """Property reads as liquidjs's: own properties only, `length` of text and arrays, text
    indexed by UTF-16 code unit, no negative index on text, `size` of an object is its key count."""

    @classmethod
    def getitem(cls, obj: Any, key: Any) -> Any:
        value = read_property(obj, key)
        if value is UNDEFINED:
            raise KeyError(key)
        return value


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
    if isinstance(exc, FilterError):
        return str(exc.args[0]) + _location(source, _Disabled("filter", exc.name))
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


class _Output(StringIO):
    """A template's output, refused past MAX_STRING_LENGTH characters before it grows there."""

    size = 0

    def write(self, text: str, /) -> int:
        self.size += len(text)
        if self.size > MAX_STRING_LENGTH:
            raise OutputStreamLimitError(MEMORY_EXCEEDED)
        return super().write(text)


def compile_liquid(option: Any) -> Callable[[Any], Any]:
    """A resolver for one @liquid option. The template is parsed here; a template Segment would
    refuse fails each time it is resolved, with Segment's message, as Segment does."""
    if not isinstance(option, str):
        return raising("liquid template value must be a string")
    if option == "":
        return lambda payload: ""
    if utf16_length(option) > MAX_TEMPLATE_LENGTH:
        return raising("liquid template values are limited to 1000 characters")
    try:
        template = _ENV.from_string(_quote_keyword_properties(option))
    except LiquidError as exc:
        return raising(_message(option, exc))
    except (RecursionError, ValueError) as exc:
        return raising(str(exc))

    def render(payload: Any) -> Any:
        data = payload if isinstance(payload, dict) else {}
        buffer = _Output()
        try:
            context = _JsContext(_ENV, globals=data)
            template.render_with_context(context, buffer)
        except LiquidError as exc:
            raise MappingError(_message(option, exc)) from None
        except (RecursionError, ValueError, TypeError, ArithmeticError) as exc:
            raise MappingError(f"liquid render failed: {exc}") from None
        return paired(buffer.getvalue())

    # A disabled filter fails only when rendering reaches it (as in liquidjs), but it can never
    # succeed there, so a configuration check names it.
    disabled = _disabled_filter_used(template)
    if disabled is not None:
        render.problem = _message(option, _Disabled("filter", disabled))  # type: ignore[attr-defined]
    return render


def _disabled_filter_used(template: Any) -> str | None:
    try:
        used = template.analyze(follow_partials=False, raise_for_failures=False).filters
    except (LiquidError, RecursionError):
        return None
    return next((name for name in used if name in DISABLED_FILTERS), None)
