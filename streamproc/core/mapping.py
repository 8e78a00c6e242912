"""The mapping kit: validates a Mapping once and resolves it against events with Segment's semantics.

`compile(mapping)` does what Segment's transform() does before resolving (object spread of the root,
the root-directive fold, validation with Segment's messages) and turns every node into a closure;
`CompiledMapping.resolve(event)` runs them and drops undefined object members. Errors a directive
raises at run time in Segment are raised at resolve time here too, only when that directive runs.
Not reproduced: JavaScript's inherited properties in paths (`$.a.__proto__`, `$.a.constructor`,
`$.n.toFixed` resolve to undefined here).
"""

from __future__ import annotations

import builtins
import itertools
import re
from collections.abc import Callable, Mapping
from types import CodeType
from typing import Any, cast

from streamproc.core import fast_paths
from streamproc.core.js import (
    UNDEFINED,
    code_units,
    is_array_index,
    js_keys,
    json_parse,
    json_quote,
    json_stringify,
    number_to_string,
    to_js_string,
    trim,
    truthy,
    utf16_length,
)
from streamproc.core.resolving import MAX_STRING_LENGTH, raising
from streamproc.errors import MappingError

__all__ = ["DIRECTIVES", "CompiledMapping", "compile", "problems", "resolve", "validate"]

Resolver = Callable[[Any], Any]

DIRECTIVES: tuple[str, ...] = (
    "@if",
    "@case",
    "@replace",
    "@arrayPath",
    "@path",
    "@template",
    "@literal",
    "@flatten",
    "@json",
    "@merge",
    "@transform",
    "@excludeWhenNull",
    "@liquid",
)

ROOT_DIRECTIVE_KEY = "__segment_internal_directive"
MAX_PATTERN_LENGTH = 10
MAX_REPLACEMENT_LENGTH = 10
STACK_EXCEEDED = "Maximum call stack size exceeded"
"""The message of a mapping or payload nested too deeply to resolve (JavaScript's RangeError)."""


# ---------------------------------------------------------------------------------------------
# JavaScript value helpers specific to the mapping kit
# ---------------------------------------------------------------------------------------------


def real_type_of(value: Any) -> str:
    """`Object.prototype.toString` type word, lower-cased, as Segment's error messages use it."""
    if value is None:
        return "null"
    if value is UNDEFINED:
        return "undefined"
    if value is True or value is False:
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return "object"


def _typeof(value: Any) -> str:
    """JavaScript `typeof` (null and arrays are "object")."""
    t = real_type_of(value)
    return "object" if t in ("null", "array") else t


def _spread_source(value: Any) -> list[tuple[str, Any]]:
    """The (key, value) pairs `Object.assign` / object spread copies from a value."""
    if isinstance(value, dict):
        return [(k, value[k]) for k in js_keys(value)]
    if isinstance(value, list | tuple):
        return [(str(i), v) for i, v in enumerate(value)]
    if isinstance(value, str):
        return [(str(i), u) for i, u in enumerate(code_units(value))]
    return []


def _is_directive(value: Any) -> bool:
    """Resolver's rule: an object with an `@` key whose other keys are all `_metadata`."""
    if not isinstance(value, dict):
        return False
    has_at = False
    for key in value:
        if key.startswith("@"):
            has_at = True
        elif key != "_metadata":
            return False
    return has_at


def _loosely_blank(value: Any) -> bool:
    """JavaScript `value == ''` for a value that is neither null nor undefined."""
    if isinstance(value, str):
        return value == ""
    if value is True or value is False:
        return value is False
    if isinstance(value, int | float):
        return value == 0
    if isinstance(value, list | tuple):
        return to_js_string(value) == ""
    return False


# ---------------------------------------------------------------------------------------------
# Path lookup (Segment's `get`)
# ---------------------------------------------------------------------------------------------

_PATH_SPLIT = re.compile(r"\[(?=[\"'0-9])|\.|(?<=[\"'0-9])\]+")


def split_path(path: str) -> tuple[str, ...] | None:
    """Pieces of a path as Segment splits them; None means the whole payload."""
    if path == "" or path == ".":
        return None
    return tuple(p.replace("'", "").replace('"', "") for p in _PATH_SPLIT.split(path) if p)


def _property(obj: Any, key: str) -> Any:
    """`obj[key]` for a truthy JSON value that is not an object."""
    if isinstance(obj, list | tuple):
        if key == "length":
            return len(obj)
        if is_array_index(key):
            index = int(key)
            return obj[index] if index < len(obj) else UNDEFINED
        return UNDEFINED
    if isinstance(obj, str):
        if key == "length":
            return utf16_length(obj)
        if is_array_index(key):
            units = obj if obj.isascii() else code_units(obj)
            index = int(key)
            return units[index] if index < len(units) else UNDEFINED
        return UNDEFINED
    return UNDEFINED


def lookup(obj: Any, parts: tuple[str, ...] | None) -> Any:
    """Walk pre-split path pieces; a falsy value met on the way is returned as it is."""
    if parts is None:
        return obj
    for key in parts:
        if type(obj) is dict:
            obj = obj.get(key, UNDEFINED)
        elif not truthy(obj):
            return obj
        elif isinstance(obj, dict):
            obj = obj.get(key, UNDEFINED)
        else:
            obj = _property(obj, key)
    return obj


def make_getter(parts: tuple[str, ...] | None) -> Callable[[Any], Any]:
    """A lookup closure for one pre-split path, unrolled for the common short paths."""
    if parts is None:
        return lambda payload: payload
    if len(parts) == 1:
        (k0,) = parts

        def get1(obj: Any) -> Any:
            if type(obj) is dict:
                return obj.get(k0, UNDEFINED)
            return lookup(obj, parts)

        return get1
    if len(parts) == 2:
        k0, k1 = parts
        tail1 = parts[1:]

        def get2(obj: Any) -> Any:
            if type(obj) is dict:
                obj = obj.get(k0, UNDEFINED)
                if type(obj) is dict:
                    return obj.get(k1, UNDEFINED)
                return lookup(obj, tail1)
            return lookup(obj, parts)

        return get2
    if len(parts) == 3:
        k0, k1, k2 = parts
        rest1, rest2 = parts[1:], parts[2:]

        def get3(obj: Any) -> Any:
            if type(obj) is dict:
                obj = obj.get(k0, UNDEFINED)
                if type(obj) is dict:
                    obj = obj.get(k1, UNDEFINED)
                    if type(obj) is dict:
                        return obj.get(k2, UNDEFINED)
                    return lookup(obj, rest2)
                return lookup(obj, rest1)
            return lookup(obj, parts)

        return get3
    return lambda obj: lookup(obj, parts)


_PATH_CACHE: dict[str, tuple[str, ...] | None] = {}


def _cached_split(path: str) -> tuple[str, ...] | None:
    try:
        return _PATH_CACHE[path]
    except KeyError:
        parts = split_path(path)
        if len(_PATH_CACHE) < 4096:
            _PATH_CACHE[path] = parts
        return parts


def _strip_dollar(path: str) -> str:
    return path.replace("$.", "", 1)


# ---------------------------------------------------------------------------------------------
# @template placeholders
# ---------------------------------------------------------------------------------------------

_TRIPLE = re.compile(r"\{\{\{([^}]+)\}\}\}")
_DOUBLE = re.compile(r"\{\{([^}]+)\}\}")


def _placeholder_text(value: Any) -> str:
    if value is None or value is UNDEFINED:
        return ""
    if isinstance(value, str):
        return value
    return to_js_string(value)


def _substitute(pattern: re.Pattern[str], width: int, template: str, data: Any) -> str:
    size = len(template)

    def replace(match: re.Match[str]) -> str:
        nonlocal size
        inner = trim(match.group(0)[width:-width])
        text = _placeholder_text(lookup(data, _cached_split(inner)))
        size += len(text) - len(match.group(0))
        if size > MAX_STRING_LENGTH:
            raise _too_long("@template")
        return text

    return pattern.sub(replace, template)


def compile_template(template: str) -> Callable[[Any], str]:
    """Renderer for an @template string; placeholders are found once, here."""
    if _TRIPLE.search(template) is None:
        literals: list[str] = []
        getters: list[Callable[[Any], Any]] = []
        pos = 0
        for match in _DOUBLE.finditer(template):
            literals.append(template[pos : match.start()])
            getters.append(make_getter(split_path(trim(match.group(1)))))
            pos = match.end()
        tail = template[pos:]
        if not getters:
            return lambda data: template
        if len(getters) == 1:
            head, only = literals[0], getters[0]
            fixed = len(head) + len(tail)

            def render_one(data: Any) -> str:
                text = _placeholder_text(only(data))
                if fixed + len(text) > MAX_STRING_LENGTH:
                    raise _too_long("@template")
                return head + text + tail

            return render_one
        pairs = list(zip(literals, getters, strict=True))

        def render(data: Any) -> str:
            out = []
            size = len(tail)
            for literal, getter in pairs:
                text = _placeholder_text(getter(data))
                size += len(literal) + len(text)
                out.append(literal)
                out.append(text)
            if size > MAX_STRING_LENGTH:
                raise _too_long("@template")
            out.append(tail)
            return "".join(out)

        return render

    # Triple braces are substituted first and their values may form new double-brace
    # placeholders, so this case keeps Segment's two passes.
    return lambda data: _substitute(_DOUBLE, 2, _substitute(_TRIPLE, 3, template, data), data)


def _too_long(directive: str) -> MappingError:
    return MappingError(f"{directive} would build a string longer than {MAX_STRING_LENGTH} characters")


def render_template(template: Any, data: Any = UNDEFINED) -> str:
    """Render an @template string once (Segment's placeholder renderer)."""
    if not isinstance(template, str):
        kind = real_type_of(template)
        raise MappingError(f'Invalid template! Template should be a "string" but {kind} was given.')
    return compile_template(template)({} if data is UNDEFINED else data)


# ---------------------------------------------------------------------------------------------
# @replace with JavaScript replacement templates
# ---------------------------------------------------------------------------------------------

_DOLLAR = re.compile(r"\$([$&`'])")


def _replacement_parts(replacement: str) -> list[str | int]:
    """Split a JavaScript replacement template into literals and references
    (0 = match, 1 = text before it, 2 = text after it). The pattern has no capture groups,
    so `$1`, `$<name>` and other `$` sequences stay literal."""
    parts: list[str | int] = []
    pos = 0
    for match in _DOLLAR.finditer(replacement):
        parts.append(replacement[pos : match.start()])
        symbol = match.group(1)
        if symbol == "$":
            parts.append("$")
        else:
            parts.append({"&": 0, "`": 1, "'": 2}[symbol])
        pos = match.end()
    parts.append(replacement[pos:])
    merged: list[str | int] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        elif part != "":
            merged.append(part)
    return merged


def _js_canonical(ch: str) -> str:
    """The character a JavaScript `i` regex (without `u`) compares: its upper case when that is one
    character and does not turn a non-ASCII character into an ASCII one."""
    upper = ch.upper()
    if len(upper) != 1 or (ord(ch) >= 128 and ord(upper) < 128):
        return ch
    return upper


_CASE_CLASSES: dict[str, str] = {}


def _case_class(ch: str) -> str:
    """Every BMP character that JavaScript's case-insensitive matching treats as `ch`."""
    if not _CASE_CLASSES:
        groups: dict[str, list[str]] = {}
        for code in range(0x10000):
            if 0xD800 <= code <= 0xDFFF:
                continue
            c = chr(code)
            key = _js_canonical(c)
            if key != c or c.lower() != c:
                groups.setdefault(key, []).append(c)
        for members in groups.values():
            for c in members:
                _CASE_CLASSES[c] = "".join(members)
    return _CASE_CLASSES.get(ch, ch)


def _js_ignorecase_pattern(pattern: str) -> str:
    """A Python regex matching `pattern` literally under JavaScript's case-insensitive rules
    (Python's own IGNORECASE also folds e.g. "ſ" to "s" and the Kelvin sign to "k")."""
    out = []
    for ch in pattern:
        if ch.isascii():
            alternatives = {ch, ch.upper(), ch.lower()} if ch.isalpha() else {ch}
        elif ord(ch) > 0xFFFF:
            alternatives = {ch}
        else:
            key = _js_canonical(ch)
            alternatives = set(_case_class(key)) | {ch, key}
            alternatives = {a for a in alternatives if _js_canonical(a) == key}
        if len(alternatives) == 1:
            out.append(re.escape(ch))
        else:
            out.append("[" + "".join(re.escape(a) for a in sorted(alternatives)) + "]")
    return "".join(out)


def _make_replacer(pattern: str, replacement: str, flags: str) -> Callable[[str], str]:
    if utf16_length(pattern) > MAX_PATTERN_LENGTH:
        message = f'@replace requires a "pattern" less than {MAX_PATTERN_LENGTH} characters'
        return raising(message)
    if utf16_length(replacement) > MAX_REPLACEMENT_LENGTH:
        message = f'@replace requires a "replacement" less than {MAX_REPLACEMENT_LENGTH} characters'
        return raising(message)
    count = 0 if "g" in flags else 1
    parts = _replacement_parts(replacement)
    if "i" not in flags and all(isinstance(p, str) for p in parts):
        literal = "".join(p for p in parts if isinstance(p, str))
        if count:
            return lambda value: value.replace(pattern, literal, 1)
        if len(literal) <= len(pattern):
            return lambda value: value.replace(pattern, literal)
        growth = len(literal) - len(pattern)

        def replace_all(value: str) -> str:
            if len(value) + value.count(pattern) * growth > MAX_STRING_LENGTH:
                raise _too_long("@replace")
            return value.replace(pattern, literal)

        return replace_all
    regex = re.compile(_js_ignorecase_pattern(pattern) if "i" in flags else re.escape(pattern))
    literal_size = sum(len(p) for p in parts if isinstance(p, str))

    def expand(value: str) -> str:
        # $` and $' repeat the text before and after each match: the result can be quadratic
        # in the value, so its length is added up from the matches before anything is built.
        spans = [m.span() for m in itertools.islice(regex.finditer(value), count or None)]
        size = len(value)
        for start, end in spans:
            size += literal_size - (end - start)
            for part in parts:
                if part == 0:
                    size += end - start
                elif part == 1:
                    size += start
                elif part == 2:
                    size += len(value) - end
            if size > MAX_STRING_LENGTH:
                raise _too_long("@replace")
        out = []
        pos = 0
        for start, end in spans:
            out.append(value[pos:start])
            for part in parts:
                if isinstance(part, str):
                    out.append(part)
                elif part == 0:
                    out.append(value[start:end])
                elif part == 1:
                    out.append(value[:start])
                else:
                    out.append(value[end:])
            pos = end
        out.append(value[pos:])
        return "".join(out)

    return expand


# ---------------------------------------------------------------------------------------------
# Resolution: each mapping node becomes a closure payload -> value
# ---------------------------------------------------------------------------------------------


def _const(value: Any) -> Resolver:
    return lambda payload: value


def _compile_node(node: Any) -> Resolver:
    if isinstance(node, dict):
        if _is_directive(node):
            name = next(k for k in node if k.startswith("@"))
            builder = _BUILDERS.get(name)
            if builder is None:
                return raising(f"{name} is not a valid directive, got undefined")
            return builder(node[name])
        # Keys resolve in JavaScript's order, which decides which failing directive reports first.
        items = [(key, _compile_node(node[key]), node[key]) for key in js_keys(node)]
        if all(not isinstance(v, dict | list | tuple) for _, _, v in items):
            constant = {key: value for key, _, value in items}
            return lambda payload: dict(constant)
        pairs = [(key, fn) for key, fn, _ in items]
        return lambda payload: {key: fn(payload) for key, fn in pairs}
    if isinstance(node, list | tuple):
        fns = [_compile_node(value) for value in node]
        return lambda payload: [fn(payload) for fn in fns]
    return _const(node)


def _cleaned(fn: Resolver) -> Resolver:
    def run(payload: Any) -> Any:
        value = fn(payload)
        kind = type(value)
        return remove_undefined(value) if kind is dict or kind is list else value

    return run


def _compile_clean(node: Any) -> Resolver:
    """Like _compile_node, but what it returns is already what Segment's final undefined cleanup
    would return (undefined members dropped, containers fresh), so the root needs no second pass.
    Only raw objects and arrays are fused; a directive's value is cleaned as it comes out."""
    if isinstance(node, dict) and not _is_directive(node):
        return _ObjectCode(node).function()
    if isinstance(node, list | tuple):
        fns = [_compile_clean(value) for value in node]
        return lambda payload: [fn(payload) for fn in fns]
    if isinstance(node, dict):
        return _cleaned(_compile_node(node))
    return _const(node)


# Paths deeper than this are looked up by `lookup` instead of unrolled into nested tests.
_INLINE_PATH_DEPTH = 6


def _directive_option(node: Any, name: str) -> tuple[bool, Any]:
    """(True, option) when `node` is the directive `name`, as _compile_node would dispatch it."""
    if isinstance(node, dict) and _is_directive(node):
        first = next(k for k in node if k.startswith("@"))
        if first == name:
            return True, node[first]
    return False, None


def _string_path(node: Any) -> tuple[bool, tuple[str, ...] | None]:
    """(True, pieces) for an `@path` directive with a literal path: a pure lookup that can be inlined."""
    found, option = _directive_option(node, "@path")
    if found and isinstance(option, str):
        return True, split_path(_strip_dollar(option))
    return False, None


_CODE_CACHE: dict[str, CodeType] = {}
# Where a walk met a value other than a dict, undefined or null: only `lookup` knows the answer.
_NOT_WALKED = object()


class _ObjectCode:
    """Generates one Python function for a raw mapping object (members in JavaScript key order),
    with literal-path lookups, `@if` on paths, constants and nested raw objects written out inline
    instead of one closure call per member. Everything else calls its compiled closure. The function
    returns exactly what the closure-per-member build returned: undefined members dropped, containers
    copied by remove_undefined."""

    def __init__(self, node: dict[str, Any], *, dict_mode: bool = True, schema: Any = None) -> None:
        self.node = node
        # With a payload schema (PayloadSchema), members of the root object are stored as its
        # `validate` would return them, or the function returns UNDECIDED.
        self.schema = schema
        self.root_out: str | None = None
        # In dict mode the function body assumes an exact dict payload (another function, generated
        # without that assumption, takes anything else), and the containers that literal paths pass
        # through are read once, at the top.
        self.dict_mode = dict_mode
        self.head: list[str] = []
        self.containers: dict[tuple[str, ...], str] = {}
        self.lines: list[str] = []
        self.names: dict[str, Any] = {
            "_U": UNDEFINED,
            "_NA": _NOT_WALKED,
            "_dict": dict,
            "_list": list,
            "_lookup": lookup,
            "_clean": remove_undefined,
            "_isinstance": isinstance,
            "_sequence": list | tuple,
            "_str": str,
            "_loosely_blank": _loosely_blank,
        }
        self.counter = 0

    def _name(self, prefix: str, value: Any = None) -> str:
        self.counter += 1
        name = f"{prefix}{self.counter}"
        if prefix.startswith("_"):
            self.names[name] = value
        return name

    def function(self) -> Resolver:
        out = self._object(self.node, "payload", 1)
        if self.schema is not None:
            for line in self.schema.required_lines(out):
                self._emit(1, line)
        self.lines.append(f"    return {out}")
        guard = []
        if self.schema is not None:
            guard = ["    if type(payload) is not _dict:", "        return _UNDECIDED"]
        elif self.dict_mode:
            other = self._name("_f", _ObjectCode(self.node, dict_mode=False).function())
            guard = ["    if type(payload) is not _dict:", f"        return {other}(payload)"]
        source = "def build(payload):\n" + "\n".join(guard + self.head + self.lines) + "\n"
        namespace = dict(self.names)
        # Mappings of the same shape (presets differing only in constants) share the source text,
        # and compiling it is most of the cost of compiling a mapping.
        code = _CODE_CACHE.get(source)
        if code is None:
            code = builtins.compile(source, "<mapping>", "exec")
            if len(_CODE_CACHE) < 256 and len(source) < 100_000:
                _CODE_CACHE[source] = code
        # Keys enter the source only as repr() literals; every value is passed in the namespace.
        exec(code, namespace)
        fn: Any = namespace["build"]
        # Each function runs its own copy of the code: the interpreter specialises a code object to
        # the globals it meets, and mappings of one shape have a namespace each.
        fn.__code__ = fn.__code__.replace()
        return cast(Resolver, fn)

    def _emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def _object(self, node: dict[str, Any], src: str, indent: int) -> str:
        out = self._name("o")
        if self.root_out is None:
            self.root_out = out
        self._emit(indent, f"{out} = {{}}")
        for key in js_keys(node):
            self._member(out, key, node[key], src, indent)
        return out

    def _store(self, out: str, key: str, value: str, indent: int) -> None:
        """`out[key] = value`, or in the root object with a schema, what its validation keeps."""
        if self.schema is None or out != self.root_out:
            self._emit(indent, f"{out}[{key!r}] = {value}")
            return
        for line in self.schema.member_lines(key, value, out, self.names):
            self._emit(indent, line)

    def _member(self, out: str, key: str, node: Any, src: str, indent: int) -> None:
        if not isinstance(node, dict | list | tuple):
            if node is not UNDEFINED:
                if self.schema is not None and out == self.root_out:
                    value = self._name("v")
                    self._emit(indent, f"{value} = {self._name('_c', node)}")
                    self._store(out, key, value, indent)
                else:
                    self._store(out, key, self._name("_c", node), indent)
            return
        if isinstance(node, dict) and not _is_directive(node):
            inner = self._object(node, src, indent)
            self._store(out, key, inner, indent)
            return
        value = self._name("v")
        inlined = self._directive_value(node, src, value, indent)
        if inlined is not None:
            self._emit(indent, f"if {value} is not _U:")
            if inlined == "raw":
                # A directive's value is cleaned as it comes out (event containers are copied); the
                # usual value, a string, is let through first.
                self._emit(
                    indent + 1,
                    f"if type({value}) is not _str and (type({value}) is _dict or type({value}) is _list):",
                )
                self._emit(indent + 2, f"{value} = _clean({value})")
            self._store(out, key, value, indent + 1)
            return
        fn = self._name("_f", _compile_clean(node))
        self._emit(indent, f"{value} = {fn}({src})")
        self._emit(indent, f"if {value} is not _U:")
        self._store(out, key, value, indent + 1)

    def _directive_value(self, node: Any, src: str, target: str, indent: int) -> str | None:
        """Emit code leaving the directive's value in `target`: "raw" when it still needs cleaning,
        "clean" when it is already fresh and clean, None (nothing emitted) for other shapes."""
        is_path, parts = _string_path(node)
        if is_path:
            self._lookup(parts, src, target, indent)
            return "raw"
        is_if, opts = _directive_option(node, "@if")
        if is_if and self._if(opts, src, target, indent):
            return "raw"
        is_array, opts = _directive_option(node, "@arrayPath")
        if is_array and self._array_path(opts, src, target, indent):
            return "clean"
        return None

    def _value(self, node: Any, src: str, target: str, indent: int) -> None:
        """`target` = what _compile_node(node) returns for `src` (uncleaned)."""
        is_path, parts = _string_path(node)
        if is_path:
            self._lookup(parts, src, target, indent)
        elif not isinstance(node, dict | list | tuple):
            self._emit(indent, f"{target} = {self._name('_c', node)}")
        else:
            self._emit(indent, f"{target} = {self._name('_f', _compile_node(node))}({src})")

    def _if(self, opts: Any, src: str, target: str, indent: int) -> bool:
        # The same decisions as _build_if, taken here once.
        if not isinstance(opts, dict):
            return False
        exists = opts.get("exists", UNDEFINED)
        blank = opts.get("blank", UNDEFINED)
        use_blank = exists is UNDEFINED
        condition = blank if use_blank else exists
        if not truthy(condition):
            return False
        then = opts.get("then", UNDEFINED)
        otherwise = opts.get("else", UNDEFINED)
        self._value(condition, src, target, indent)
        if use_blank:
            self._emit(
                indent,
                f"if {target} is not None and {target} is not _U"
                f' and ({target} != "" if type({target}) is _str else not _loosely_blank({target})):',
            )
        else:
            self._emit(indent, f"if {target} is not None and {target} is not _U:")
        exists_path = _string_path(condition)
        if then is UNDEFINED:
            self._emit(indent + 1, f"{target} = _U")
        elif not (exists_path[0] and _string_path(then) == exists_path):
            # The condition's value is the `then` value when both are the same literal path.
            self._value(then, src, target, indent + 1)
        else:
            self._emit(indent + 1, "pass")
        self._emit(indent, "else:")
        if truthy(otherwise):
            self._value(otherwise, src, target, indent + 1)
        else:
            self._emit(indent + 1, f"{target} = _U")
        return True

    def _array_path(self, opts: Any, src: str, target: str, indent: int) -> bool:
        # Only a literal root path with an object shape; the shape is compiled in the cleaned form,
        # so the list built here is already what cleaning the plain result would give.
        if not isinstance(opts, list | tuple) or len(opts) < 2:
            return False
        path, shape = opts[0], opts[1]
        if not isinstance(path, str) or not (isinstance(shape, dict) and len(shape) > 0):
            return False
        shape_fn = self._name("_f", _compile_clean(shape))
        root = self._name("r")
        self._lookup(split_path(_strip_dollar(path)), src, root, indent)
        item = self._name("i")
        self._emit(indent, f"if _isinstance({root}, _sequence):")
        self._emit(indent + 1, f"{target} = [{shape_fn}({item}) for {item} in {root}]")
        self._emit(indent, f"elif _isinstance({root}, _dict):")
        self._emit(indent + 1, f"{target} = [{shape_fn}({root})]")
        self._emit(indent, "else:")
        self._emit(indent + 1, f"{target} = {root}")
        return True

    def _lookup(self, parts: tuple[str, ...] | None, src: str, target: str, indent: int) -> None:
        """`target = lookup(src, parts)`, unrolled: exact dicts are read directly, anything else
        goes through `lookup` from where the walk stands (in dict mode, from the payload)."""
        if parts is None:
            self._emit(indent, f"{target} = {src}")
            return
        if self.dict_mode and src == "payload" and len(parts) <= _INLINE_PATH_DEPTH:
            if len(parts) == 1:
                self._emit(indent, f"{target} = payload.get({parts[0]!r}, _U)")
                return
            holder = self._container(parts[:-1])
            self._emit(indent, f"if type({holder}) is _dict:")
            self._emit(indent + 1, f"{target} = {holder}.get({parts[-1]!r}, _U)")
            # A missing or null member ends the walk with itself, as lookup would return it.
            self._emit(indent, f"elif {holder} is _U or {holder} is None:")
            self._emit(indent + 1, f"{target} = {holder}")
            self._emit(indent, "else:")
            self._emit(indent + 1, f"{target} = _lookup(payload, {self._name('_p', parts)})")
            return
        if len(parts) > _INLINE_PATH_DEPTH:
            self._emit(indent, f"{target} = _lookup({src}, {self._name('_p', parts)})")
            return
        self._step(parts, 0, src, target, indent)

    def _container(self, parts: tuple[str, ...]) -> str:
        """A variable set at the top of the function to what `lookup(payload, parts)` returns when
        each step is a dict or ends the walk at a missing or null member; otherwise to `_NA`, and
        the reader goes through `lookup`."""
        name = self.containers.get(parts)
        if name is None:
            name = self.containers[parts] = self._name("h")
            if len(parts) == 1:
                line = f"{name} = payload.get({parts[0]!r}, _U)"
            else:
                outer = self._container(parts[:-1])
                line = (
                    f"{name} = {outer}.get({parts[-1]!r}, _U) if type({outer}) is _dict"
                    f" else {outer} if {outer} is _U or {outer} is None else _NA"
                )
            self.head.append("    " + line)
        return name

    def _step(self, parts: tuple[str, ...], i: int, current: str, target: str, indent: int) -> None:
        self._emit(indent, f"if type({current}) is _dict:")
        self._emit(indent + 1, f"{target} = {current}.get({parts[i]!r}, _U)")
        if i + 1 < len(parts):
            self._step(parts, i + 1, target, target, indent + 1)
        if current == target:
            # A missing or null member ends the walk with itself, as lookup would return it.
            self._emit(indent, f"elif {current} is not _U and {current} is not None:")
        else:
            self._emit(indent, "else:")
        self._emit(indent + 1, f"{target} = _lookup({current}, {self._name('_p', parts[i:])})")


def _compile_string_directive(
    name: str, option: Any, make: Callable[[str], Callable[[Any], Any]]
) -> Resolver:
    """A directive whose option must resolve to a string (@path, @template)."""
    if isinstance(option, str):
        return make(option)
    option_fn = _compile_node(option)

    def run(payload: Any) -> Any:
        text = option_fn(payload)
        if not isinstance(text, str):
            raise MappingError(f"{name}: expected string, got {real_type_of(text)}")
        return make(text)(payload)

    return run


def _build_path(option: Any) -> Resolver:
    if isinstance(option, str):
        return make_getter(split_path(_strip_dollar(option)))

    def make(path: str) -> Callable[[Any], Any]:
        parts = _cached_split(_strip_dollar(path))
        return lambda payload: lookup(payload, parts)

    return _compile_string_directive("@path", option, make)


_TEMPLATE_CACHE: dict[str, Callable[[Any], str]] = {}


def _cached_template(template: str) -> Callable[[Any], str]:
    try:
        return _TEMPLATE_CACHE[template]
    except KeyError:
        render = compile_template(template)
        if len(_TEMPLATE_CACHE) < 1024:
            _TEMPLATE_CACHE[template] = render
        return render


def _build_template(option: Any) -> Resolver:
    if isinstance(option, str):
        return compile_template(option)
    return _compile_string_directive("@template", option, _cached_template)


def _build_literal(option: Any) -> Resolver:
    return _compile_node(option)


def _build_if(opts: Any) -> Resolver:
    if not isinstance(opts, dict):
        return raising('@if requires an object with an "exists" key')
    exists = opts.get("exists", UNDEFINED)
    blank = opts.get("blank", UNDEFINED)
    if not truthy(exists) and not truthy(blank):
        return raising('@if requires an "exists" key or a "blank" key')
    use_blank = exists is UNDEFINED
    condition_fn = _compile_node(blank if use_blank else exists)
    then = opts.get("then", UNDEFINED)
    then_fn = _compile_node(then) if then is not UNDEFINED else None
    otherwise = opts.get("else", UNDEFINED)
    else_fn = _compile_node(otherwise) if truthy(otherwise) else None

    def run(payload: Any) -> Any:
        value = condition_fn(payload)
        condition = value is not None and value is not UNDEFINED
        if condition and use_blank:
            condition = not _loosely_blank(value)
        if condition:
            return then_fn(payload) if then_fn is not None else UNDEFINED
        return else_fn(payload) if else_fn is not None else UNDEFINED

    return run


def _build_case(opts: Any) -> Resolver:
    if not isinstance(opts, dict):
        return raising('@case requires an object with a "operator" key')
    operator = opts.get("operator", UNDEFINED)
    if not truthy(operator):
        return raising('@case requires a "operator" key')
    value = opts.get("value", UNDEFINED)
    if not truthy(value):
        return _const(UNDEFINED)
    value_fn = _compile_node(value)

    def run(payload: Any) -> Any:
        resolved = value_fn(payload)
        if isinstance(resolved, str):
            if operator == "lower" and isinstance(operator, str):
                return resolved.lower()
            if operator == "upper" and isinstance(operator, str):
                return resolved.upper()
            raise MappingError('operator key should have a value of "lower" or "upper"')
        return resolved

    return run


def _build_replace(opts: Any) -> Resolver:
    if not isinstance(opts, dict):
        return raising('@replace requires an object with a "pattern" key')
    pattern = opts.get("pattern", UNDEFINED)
    if not truthy(pattern):
        return raising('@replace requires a "pattern" key')
    replacement = opts.get("replacement", UNDEFINED)
    if replacement is None or replacement is UNDEFINED:
        replacement = ""
    pattern2 = opts.get("pattern2", UNDEFINED)
    replacement2 = opts.get("replacement2", UNDEFINED)
    if truthy(pattern2) and (replacement2 is None or replacement2 is UNDEFINED):
        replacement2 = ""
    ignorecase = opts.get("ignorecase", UNDEFINED)
    if ignorecase is None or ignorecase is UNDEFINED:
        ignorecase = False
    is_global = opts.get("global", UNDEFINED)
    if is_global is None or is_global is UNDEFINED:
        is_global = True
    value = opts.get("value", UNDEFINED)
    if not truthy(value):
        return _const(UNDEFINED)
    value_fn = _compile_node(value)
    usable = (
        isinstance(pattern, str)
        and isinstance(replacement, str)
        and isinstance(ignorecase, bool)
        and isinstance(is_global, bool)
    )
    if not usable:
        return lambda payload: (value_fn(payload), "")[1]
    flags = ("g" if is_global else "") + ("i" if ignorecase else "")
    first = _make_replacer(pattern, replacement, flags)
    second = None
    if truthy(pattern2) and isinstance(pattern2, str) and isinstance(replacement2, str):
        second = _make_replacer(pattern2, replacement2, flags)
    problem = getattr(first, "problem", None) or getattr(second, "problem", None)

    def run(payload: Any) -> Any:
        resolved = value_fn(payload)
        if resolved is True or resolved is False:
            resolved = "true" if resolved else "false"
        elif isinstance(resolved, int | float):
            resolved = number_to_string(resolved)
        if not isinstance(resolved, str):
            return ""
        result = first(resolved)
        if second is not None:
            result = second(result)
        return result

    if problem is not None:
        run.problem = problem  # type: ignore[attr-defined]
    return run


def _build_array_path(opts: Any) -> Resolver:
    if not isinstance(opts, list | tuple):
        return raising(f"@arrayPath expected array, got {real_type_of(opts)}")
    path = opts[0] if len(opts) > 0 else UNDEFINED
    shape = opts[1] if len(opts) > 1 else UNDEFINED
    root_fn = make_getter(split_path(_strip_dollar(path))) if isinstance(path, str) else _compile_node(path)
    if not (isinstance(shape, dict) and len(shape) > 0):
        return root_fn
    shape_fn = _compile_node(shape)

    def run(payload: Any) -> Any:
        root = root_fn(payload)
        if isinstance(root, list | tuple):
            return [shape_fn(item) for item in root]
        if isinstance(root, dict):
            return [shape_fn(root)]
        return root

    return run


def flatten(value: Any, prefix: str, separator: str, omit_arrays: bool) -> dict[str, Any]:
    """Segment's flattenObject: nested keys joined with the separator."""
    out: dict[str, Any] = {}
    _flatten_into(out, value, prefix, separator, omit_arrays)
    return out


def _flatten_into(out: dict[str, Any], value: Any, prefix: str, separator: str, omit_arrays: bool) -> None:
    if isinstance(value, dict) or (not omit_arrays and isinstance(value, list | tuple)):
        for key, item in _spread_source(value):
            new_key = f"{prefix}{separator}{key}" if prefix else key
            _flatten_into(out, item, new_key, separator, omit_arrays)
        return
    out.pop(prefix, None)  # a later duplicate key moves to the end, as object spread does
    out[prefix] = value


def _build_flatten(opts: Any) -> Resolver:
    if not isinstance(opts, dict):
        return raising('@flatten requires an object with a "separator" key')
    separator = opts.get("separator", UNDEFINED)
    if not truthy(separator):
        return raising('@flatten requires a "separator" key')
    separator_fn = _compile_node(separator)
    value_fn = _compile_node(opts.get("value", UNDEFINED))
    omit_arrays = truthy(opts.get("omitArrays", UNDEFINED))

    def run(payload: Any) -> Any:
        sep = separator_fn(payload)
        if not isinstance(sep, str):
            raise MappingError("@flatten requires a string separator")
        return flatten(value_fn(payload), "", sep, omit_arrays)

    return run


def _build_json(opts: Any) -> Resolver:
    if not isinstance(opts, dict):
        return raising('@json requires an object with a "value" key')
    mode = opts.get("mode", UNDEFINED)
    if not truthy(mode):
        return raising('@json requires a "mode" key')
    value = opts.get("value", UNDEFINED)
    if not truthy(value):
        return raising('@json requires a "value" key')
    value_fn = _compile_node(value)
    if mode == "encode" and isinstance(mode, str):

        def encode(payload: Any) -> Any:
            text = json_stringify(value_fn(payload))
            return UNDEFINED if text is None else text

        return encode
    if mode == "decode" and isinstance(mode, str):

        def decode(payload: Any) -> Any:
            resolved = value_fn(payload)
            if isinstance(resolved, str):
                try:
                    return json_parse(resolved)
                except (ValueError, RecursionError):
                    return resolved
            return resolved

        return decode
    return lambda payload: (value_fn(payload), UNDEFINED)[1]


def _build_merge(opts: Any) -> Resolver:
    if not isinstance(opts, dict):
        return raising('@merge requires an object with an "objects" key and a "direction" key')
    direction = opts.get("direction", UNDEFINED)
    if not truthy(direction):
        return raising('@merge requires a "direction" key')
    direction_fn = _compile_node(direction)
    objects = opts.get("objects", UNDEFINED)
    problem = None
    if not truthy(objects):
        problem = '@merge requires a "objects" key'
    elif not isinstance(objects, list | tuple):
        problem = f"@merge: expected opts.array, got {_typeof(objects)}"
    if problem is not None:
        message = problem

        def fail(payload: Any) -> Any:
            direction_fn(payload)
            raise MappingError(message)

        fail.problem = message  # type: ignore[attr-defined]
        return fail
    object_fns = [_compile_node(o) for o in objects]

    def run(payload: Any) -> Any:
        side = direction_fn(payload)
        resolved = [fn(payload) for fn in object_fns]
        if side == "left" and isinstance(side, str):
            resolved.reverse()
        merged: dict[str, Any] = {}
        for source in resolved:
            if isinstance(source, dict):
                merged.update(source)
            elif source is not None and source is not UNDEFINED:
                merged.update(_spread_source(source))
        return merged

    return run


def _build_transform(opts: Any) -> Resolver:
    if not isinstance(opts, dict):
        return raising('@transform requires an object with an "apply" key and a "mapping" key')
    mapping = opts.get("mapping", UNDEFINED)
    if not truthy(mapping):
        return raising('@transform requires a "mapping" key')
    apply = opts.get("apply", UNDEFINED)
    if not truthy(apply):
        return raising('@transform requires a "apply" key')
    if not isinstance(apply, dict):
        return raising('@transform "apply" key should be an object')
    try:
        inner = _compile_root(apply, codegen=fast_paths.taken(fast_paths.MAPPING_CODEGEN))[0]
    except MappingError as exc:
        failure = exc
        apply_fn: Resolver = lambda payload: _reraise(failure)  # noqa: E731
    else:
        apply_fn = inner
    mapping_fn = _compile_node(mapping)
    return lambda payload: mapping_fn(apply_fn(payload))


def _reraise(exc: MappingError) -> Any:
    raise MappingError(str(exc), list(getattr(exc, "messages", [str(exc)])))


def _clean_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        cleaned = dict(value)
        for key, item in value.items():
            if item is None:
                cleaned[key] = UNDEFINED
            elif isinstance(item, dict):
                cleaned[key] = _clean_nulls(item)
        return cleaned
    return value


def _build_exclude_when_null(option: Any) -> Resolver:
    value_fn = _compile_node(option)

    def run(payload: Any) -> Any:
        resolved = value_fn(payload)
        if resolved is None:
            return UNDEFINED
        return _clean_nulls(resolved)

    return run


def _build_liquid(option: Any) -> Resolver:
    from streamproc.core.liquid import compile_liquid

    return compile_liquid(option)


_BUILDERS: dict[str, Callable[[Any], Resolver]] = {
    "@if": _build_if,
    "@case": _build_case,
    "@replace": _build_replace,
    "@arrayPath": _build_array_path,
    "@path": _build_path,
    "@template": _build_template,
    "@literal": _build_literal,
    "@flatten": _build_flatten,
    "@json": _build_json,
    "@merge": _build_merge,
    "@transform": _build_transform,
    "@excludeWhenNull": _build_exclude_when_null,
    "@liquid": _build_liquid,
}


def remove_undefined(value: Any) -> Any:
    """Copy of a resolved value without undefined object members (array slots keep them).
    Containers are always copied, as Segment's cleanup does, so a payload never aliases the event."""
    kind = type(value)
    # A C-level shallow copy first, then only nested containers and undefined members need work.
    if kind is dict:
        out = value.copy()
        for key, item in value.items():
            item_kind = type(item)
            if item_kind is dict or item_kind is list:
                out[key] = remove_undefined(item)
            elif item is UNDEFINED:
                del out[key]
        return out
    if kind is list:
        copied = value.copy()
        for i, item in enumerate(value):
            item_kind = type(item)
            if item_kind is dict or item_kind is list:
                copied[i] = remove_undefined(item)
        return copied
    if isinstance(value, dict):
        return {k: remove_undefined(v) for k, v in value.items() if v is not UNDEFINED}
    if isinstance(value, list | tuple):
        return [remove_undefined(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Validation (Segment's validate(mapping)), messages word for word
# ---------------------------------------------------------------------------------------------


class _Invalid(Exception):
    """One or more validation messages (Segment's ValidationError / AggregateError)."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__(messages)
        self.messages = messages


def _invalid(message: str, stack: list[str]) -> _Invalid:
    return _Invalid([f"/{'/'.join(stack)} {message}."])


def _article(word: str) -> str:
    return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"


def _type_or_directive(value: Any) -> str:
    if isinstance(value, dict) and any(k.startswith("@") for k in value):
        return "directive"
    return real_type_of(value)


def _it_is(kind: str) -> str:
    return f"{_article(kind)} {kind}"


def _validate(mapping: Any, stack: list[str]) -> None:
    kind = _type_or_directive(mapping)
    if kind == "directive":
        _validate_directive(mapping, stack)
    elif kind == "object":
        _validate_object(mapping, stack)


def _validate_directive(obj: Any, stack: list[str]) -> None:
    if not isinstance(obj, dict):
        kind = real_type_of(obj)
        raise _invalid(f"should be a directive object but it is {_it_is(kind)}", stack)
    directive_keys = [k for k in obj if k.startswith("@")]
    if len(directive_keys) > 1:
        raise _invalid(f"should only have one @-prefixed key but it has {len(directive_keys)} keys", stack)
    if any(not k.startswith("@") and k != "_metadata" for k in obj):
        raise _invalid(f"should only have one @-prefixed key but it has {len(obj)} keys", stack)
    name = directive_keys[0]
    validator = _VALIDATORS.get(name)
    if validator is None:
        raise _invalid(f"has an invalid directive: {name}", stack)
    validator(obj[name], [*stack, name])


def _validate_directive_or_raw(value: Any, stack: list[str]) -> None:
    kind = _type_or_directive(value)
    if kind == "directive":
        _validate_directive(value, stack)
    elif kind not in ("object", "array", "boolean", "string", "number", "null"):
        raise _invalid(f"should be a mapping directive or a JSON value but it is {_it_is(kind)}", stack)


def _validate_directive_or_string(value: Any, stack: list[str]) -> None:
    kind = _type_or_directive(value)
    if kind == "directive":
        _validate_directive(value, stack)
    elif kind != "string":
        raise _invalid(f"should be a string or a mapping directive but it is {_it_is(kind)}", stack)


def _validate_directive_or_object(value: Any, stack: list[str]) -> None:
    kind = _type_or_directive(value)
    if kind == "directive":
        _validate_directive(value, stack)
    elif kind == "object":
        _validate_object(value, stack)
    else:
        raise _invalid(f"should be a object or a mapping directive but it is {_it_is(kind)}", stack)


def _validate_string(value: Any, stack: list[str]) -> None:
    kind = _type_or_directive(value)
    if kind != "string":
        raise _invalid(f"should be a string but it is {_it_is(kind)}", stack)


def _string_length(low: int, high: int) -> Callable[[Any, list[str]], None]:
    def check(value: Any, stack: list[str]) -> None:
        if isinstance(value, str) and utf16_length(value) < low:
            raise _invalid(f"should be a string of length {low} or greater", stack)
        if isinstance(value, str) and utf16_length(value) > high:
            raise _invalid(f"should be a string of length {high} or less", stack)

    return check


def _allowed_strings(*allowed: str) -> Callable[[Any, list[str]], None]:
    def check(value: Any, stack: list[str]) -> None:
        _validate_string(value, stack)
        if value.lower() not in allowed:
            raise _invalid(f"should be one of {', '.join(allowed)} but it is {json_quote(value)}", stack)

    return check


def _validate_boolean(value: Any, stack: list[str]) -> None:
    kind = _type_or_directive(value)
    if kind != "boolean":
        raise _invalid(f"should be a boolean but it is {_it_is(kind)}", stack)


def _validate_object(value: Any, stack: list[str]) -> None:
    kind = _type_or_directive(value)
    if kind != "object":
        raise _invalid(f"should be an object but it is {_it_is(kind)}", stack)
    errors: list[str] = []
    for key in js_keys(value):
        try:
            _validate(value[key], [*stack, key])
        except _Invalid as exc:
            errors.extend(exc.messages)
    if errors:
        raise _Invalid(errors)


def _validate_array(value: Any, stack: list[str]) -> None:
    kind = real_type_of(value)
    if kind != "array":
        raise _invalid(f"should be an array but it is {_it_is(kind)}", stack)


Check = Callable[[Any, list[str]], None]


def _chain(*checks: Check) -> Check:
    def run(value: Any, stack: list[str]) -> None:
        for check in checks:
            check(value, stack)

    return run


def _validate_fields(
    value: Any, stack: list[str], required: dict[str, Check], optional: dict[str, Check], order: list[str]
) -> None:
    _validate_object(value, stack)
    errors: list[str] = []
    for prop in order:
        try:
            item = value.get(prop, UNDEFINED)
            if prop in required:
                if item is UNDEFINED:
                    raise _invalid(f'should have field "{prop}" but it doesn\'t', stack)
                required[prop](item, [*stack, prop])
            elif item is not UNDEFINED:
                optional[prop](item, [*stack, prop])
        except _Invalid as exc:
            errors.extend(exc.messages)
    if errors:
        raise _Invalid(errors)


def _fields(required: dict[str, Check], optional: dict[str, Check], order: list[str]) -> Check:
    return lambda value, stack: _validate_fields(value, stack, required, optional, order)


def _validate_array_path(value: Any, stack: list[str]) -> None:
    _validate_array(value, stack)
    _validate_directive_or_string(value[0] if len(value) > 0 else UNDEFINED, stack)
    _validate(value[1] if len(value) > 1 else UNDEFINED, stack)


_merge_fields = _fields(
    {"objects": _validate_array}, {"direction": _allowed_strings("left", "right")}, ["direction", "objects"]
)


def _validate_merge(value: Any, stack: list[str]) -> None:
    _merge_fields(value, stack)
    for item in value["objects"]:
        _validate_directive_or_object(item, [])


_VALIDATORS: dict[str, Check] = {
    "@if": _fields(
        {},
        {
            "exists": _validate_directive_or_raw,
            "then": _validate_directive_or_raw,
            "else": _validate_directive_or_raw,
        },
        ["exists", "then", "else"],
    ),
    "@case": _fields(
        {}, {"operator": _validate_string, "value": _validate_directive_or_string}, ["operator", "value"]
    ),
    "@replace": _fields(
        {
            "pattern": _chain(_validate_string, _string_length(1, MAX_PATTERN_LENGTH)),
            "value": _validate_directive_or_string,
        },
        {
            "replacement": _chain(_validate_string, _string_length(0, MAX_REPLACEMENT_LENGTH)),
            "ignorecase": _validate_boolean,
            "global": _validate_boolean,
        },
        ["pattern", "replacement", "value", "ignorecase", "global"],
    ),
    "@arrayPath": _validate_array_path,
    "@path": _validate_directive_or_string,
    "@json": _fields(
        {"value": _validate_directive_or_raw, "mode": _allowed_strings("encode", "decode")},
        {},
        ["value", "mode"],
    ),
    "@flatten": _fields(
        {"value": _validate_directive_or_raw}, {"separator": _validate_string}, ["separator", "value"]
    ),
    "@merge": _validate_merge,
    "@template": _validate_directive_or_string,
    "@literal": _validate_directive_or_raw,
    "@transform": _fields(
        {"apply": _validate_directive_or_object, "mapping": _validate_directive_or_object},
        {},
        ["apply", "mapping"],
    ),
    "@excludeWhenNull": _validate_directive_or_raw,
    "@liquid": _validate_string,
}


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def _json_key(key: Any, stack: list[str]) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool | int | float):
        return to_js_string(key)
    where = "/" + "/".join(stack)
    raise MappingError(f"{where} has a key that is not text: {key!r}.")


def _json_copy(value: Any, stack: list[str]) -> Any:
    """Deep copy of a Mapping as JSON data. Configuration files may hold what JSON cannot
    (YAML's integer keys become JavaScript's string keys; dates and other objects are refused)."""
    if value is None or value is UNDEFINED or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            text = _json_key(key, stack)
            out[text] = _json_copy(item, [*stack, text])
        return out
    if isinstance(value, list | tuple):
        return [_json_copy(item, [*stack, str(i)]) for i, item in enumerate(value)]
    where = "/" + "/".join(stack)
    raise MappingError(f"{where} should be a JSON value but it is {type(value).__name__}.")


def _mapping_to_process(mapping: Any) -> Any:
    """Object-spread copy of the mapping, with the root directive key folded in (Segment's
    getMappingToProcess). Works on a deep copy so the caller's mapping is never changed."""
    if mapping is None or mapping is UNDEFINED:
        raise MappingError("Cannot convert undefined or null to object")
    mapping = _json_copy(mapping, [])
    processed: Any = dict(_spread_source(mapping))
    if isinstance(mapping, dict) and ROOT_DIRECTIVE_KEY in mapping:
        customer = {k: v for k, v in mapping.items() if k != ROOT_DIRECTIVE_KEY}
        processed = mapping[ROOT_DIRECTIVE_KEY]
        if processed is None or processed is UNDEFINED:
            raise MappingError("Cannot convert undefined or null to object")
        keys = _spread_source(processed)
        if len(keys) > 1:
            raise MappingError("The root mapping must only have a single directive object")
        root_directive = keys[0][1] if keys else UNDEFINED
        if not truthy(root_directive) or not isinstance(root_directive, dict | list | tuple):
            raise MappingError("The root directive must be an object")
        if isinstance(root_directive, dict):
            root_directive["mapping"] = customer
    return processed


def _validate_processed(processed: Any) -> None:
    try:
        _validate(processed, [])
    except _Invalid as exc:
        raise MappingError("\n".join(exc.messages), exc.messages) from None


def _compile_root(mapping: Any, codegen: bool) -> tuple[Resolver, Resolver]:
    """Segment's transform() as a closure: validated here, resolved and cleaned per payload, and the
    same for a payload already known to be a dict. With `codegen`, raw objects become generated
    functions that clean as they go; without it, one closure per member and Segment's final
    undefined cleanup, which give the same payloads."""
    processed = _mapping_to_process(mapping)
    _validate_processed(processed)
    fn = _compile_clean(processed) if codegen else _cleaned(_compile_node(processed))

    def run(data: Any) -> Any:
        if data is UNDEFINED:
            data = {}
        elif type(data) is not dict:
            if not isinstance(data, Mapping):
                raise MappingError(f"data must be an object, got {real_type_of(data)}")
            data = dict(data)
        return fn(data)

    return run, fn


class CompiledMapping:
    """A validated Mapping, ready to resolve against many events."""

    __slots__ = ("_run", "mapping", "resolve_dict")

    def __init__(self, mapping: Any, *, codegen: bool = True) -> None:
        self.mapping = mapping
        codegen = codegen and fast_paths.taken(fast_paths.MAPPING_CODEGEN)
        try:
            self._run, resolve_dict = _compile_root(mapping, codegen)
        except RecursionError:
            raise MappingError(STACK_EXCEEDED) from None
        self.resolve_dict: Callable[[dict[str, Any]], Any] = resolve_dict
        """`resolve` for an event that is a dict, where a RecursionError is left to the caller."""

    def resolve(self, event: Any) -> Any:
        """The mapped payload for one event; JavaScript undefined members are absent and a bare
        undefined result is UNDEFINED. Raises MappingError when a directive fails."""
        try:
            return self._run(event)
        except RecursionError:
            raise MappingError(STACK_EXCEEDED) from None

    def __repr__(self) -> str:
        return f"CompiledMapping({self.mapping!r})"


def compile_validated(mapping: Any, schema: Any) -> Callable[[dict[str, Any]], Any] | None:
    """One generated function giving, for a dict event, what `schema.validate` (a PayloadSchema)
    returns for the mapped payload, or UNDECIDED where only `validate` can say (then resolve and
    validate as usual; the mapping kit's errors are raised the same either way). None when the
    mapping's root is not a raw object or the schema has rules the generated code cannot hold."""
    if not schema.inlinable:
        return None
    try:
        processed = _mapping_to_process(mapping)
        _validate_processed(processed)
        if not isinstance(processed, dict) or _is_directive(processed):
            return None
        return _ObjectCode(processed, schema=schema).function()
    except RecursionError:
        raise MappingError(STACK_EXCEEDED) from None


def compile(mapping: Any, *, codegen: bool = True) -> CompiledMapping:
    """Validate a Mapping once; raises MappingError with Segment's path-prefixed messages.
    `codegen=False` resolves with plain closures instead of generated code (same payloads, slower;
    the inner mapping of an @transform, compiled on its own, keeps its generated code).
    STREAMPROC_EXACT_ONLY=1 (core.fast_paths) resolves every mapping, inner ones too, with closures."""
    return CompiledMapping(mapping, codegen=codegen)


def problems(mapping: Any) -> list[tuple[str, str]]:
    """What in a valid mapping fails whenever it is reached, known before any event arrives: the key
    path (`event`, `contents.@arrayPath[1].price`) and Segment's message, for each directive that
    raises when resolved (a liquid template that does not parse, uses a disabled tag or filter or is
    too long, an unknown directive, an @replace pattern too long, ...)."""
    found: list[tuple[str, str]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if _is_directive(node):
                problem = getattr(_compile_node(node), "problem", None)
                if problem is not None:
                    found.append((path, problem))
                    return
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list | tuple):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    try:
        walk(mapping, "")
    except RecursionError:
        return [("", STACK_EXCEEDED)]
    return found


def validate(mapping: Any) -> None:
    """Raise MappingError if Segment would refuse this Mapping."""
    try:
        _validate_processed(_mapping_to_process(mapping))
    except RecursionError:
        raise MappingError(STACK_EXCEEDED) from None


def resolve(mapping: Any, event: Any) -> Any:
    """Compile and resolve in one go (Segment's transform(mapping, event))."""
    return compile(mapping).resolve(event)
