"""Compiles a destination filter's condition, in Segment's full filter FQL, to tsub's JSON IR.

    parse_condition("type = 'track' and lowercase(event) in ['a', 'b']").ir
    == ["and", ["=", "type", {"value": "track"}], ["in", ["lowercase", "event"], {"value": [...]}]]

The text is lexed by fql-ts's rules (core/fql_lexer.py). Filter FQL is not the trigger subset: both
quotes, any field (`anonymousId`, `context.ip`, `properties.items.0.price`), `!`, `in`, lists, and
the functions contains, match, lowercase, length, typeof and semver. The IR has the shape Segment's
server writes: a chain of one conjunction nests to the right (`a or b or c` is
`["or", a, ["or", b, c]]`), a literal is `{"value": v}`, a list literal `{"value": [operands]}`.
`all` is the condition every event meets (as in Segment's API).

What is refused beyond fql-ts's own refusals is listed in core/filters/differences.py.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

from streamproc.core.filters.differences import NAMES
from streamproc.core.filters.evaluate import Dialect, compile_condition
from streamproc.core.fql_lexer import Lexer, LexError, Token, position, show
from streamproc.core.js import code_units, json_stringify, to_number
from streamproc.errors import FQLError

__all__ = ["ALL", "Condition", "FilterSyntaxError", "parse_condition"]

ALL: Final = "all"
FUNCTIONS: Final = {"contains": 2, "match": 2, "lowercase": 1, "length": 1, "typeof": 1, "semver": 3}
_INDEX_NUMBER: Final = re.compile(r"[0-9]+(?:\.[0-9]*)?")
_SAFE: Final = 2**53


class FilterSyntaxError(FQLError):
    """A filter condition that is refused. `category` names the deliberate difference involved, or is
    None when fql-ts refuses the text too; `segment_message` is then fql-ts's own message.
    `position` counts characters from 1."""

    def __init__(
        self,
        message: str,
        position: int | None,
        fql: str,
        category: str | None = None,
        segment_message: str | None = None,
    ) -> None:
        if category is not None and category not in NAMES:
            raise ValueError(f"unknown filter difference category {category!r}")
        super().__init__(message, position, fql)
        self.category = category
        self.segment_message = segment_message


class Condition:
    """A compiled condition: its text, its IR (None for `all`), and `matches(event)`."""

    __slots__ = ("_holds", "ir", "text")

    def __init__(self, text: str, ir: Any) -> None:
        self.text = text
        self.ir = ir
        self._holds = _always if ir is None else compile_condition(ir)

    def matches(self, event: Any, dialect: Dialect = "segment") -> bool:
        """Whether the filter applies to `event`; FilterEvaluationError where tsub would throw."""
        if dialect == "segment":
            return self._holds(event)
        return True if self.ir is None else compile_condition(self.ir, dialect)(event)

    def ir_json(self) -> str:
        """The IR as JSON text (what Segment's matcher holds in `ir`), or "all"."""
        return ALL if self.ir is None else str(json_stringify(self.ir))

    def __repr__(self) -> str:
        return f"Condition({self.text!r})"


def _always(_event: Any) -> bool:
    return True


def parse_condition(text: str) -> Condition:
    """Compile a filter condition; raises FilterSyntaxError naming the position and the fix."""
    if not isinstance(text, str):
        raise FilterSyntaxError("FQL error: a filter condition must be a string", None, repr(text))
    if text.strip() == ALL:
        return Condition(text, None)
    units = code_units(text)
    lexer = Lexer(units)
    try:
        tokens = lexer.lex()
    except LexError as exc:
        raise _error(text, units, exc.pos, exc.problem, exc.fix, None, exc.segment) from None
    parser = _Parser(text, units, tokens)
    if tokens[0].kind == "eos":
        raise parser.fail(tokens[0], "an empty condition", "write a condition, or `all` for every event")
    ir = parser.parse()
    if lexer.lost:
        raise _error(
            text,
            units,
            len(units),
            "the text ends in the middle of a word starting like `and`, `or` or `null`",
            "Segment's lexer would read only its first letter; complete the word or quote the value",
            "lost-text",
        )
    return Condition(text, ir)


def _error(
    text: str,
    units: list[str],
    unit_pos: int,
    problem: str,
    fix: str,
    category: str | None,
    segment_message: str | None = None,
) -> FilterSyntaxError:
    at = position(units, unit_pos)
    message = f"FQL error at position {at}: {problem}"
    if fix:
        message += f"; {fix}"
    return FilterSyntaxError(message, at, text, category, segment_message)


def _describe(tok: Token) -> str:
    if tok.kind == "eos":
        return "the end"
    if tok.kind in ("string", "number"):
        return f"the {tok.kind} {tok.text}"
    if tok.kind == "ident":
        return f"the name {tok.text!r}"
    return repr(tok.text)


class _Parser:
    def __init__(self, text: str, units: list[str], tokens: list[Token]) -> None:
        self.text = text
        self.units = units
        self.tokens = tokens
        self.i = 0

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        tok = self.peek()
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return tok

    def fail(self, tok: Token, problem: str, fix: str = "", category: str | None = None) -> FilterSyntaxError:
        return _error(self.text, self.units, tok.pos, problem, fix, category)

    def parse(self) -> Any:
        ir = self.condition()
        tok = self.peek()
        if tok.kind == "parenright":
            raise self.fail(tok, "a ')' without its '('", "remove it")
        if tok.kind != "eos":
            raise self.fail(
                tok, f"{_describe(tok)} after a complete condition", "join conditions with `and` or `or`"
            )
        return ir

    def condition(self) -> Any:
        """One level: conditions joined by one kind of conjunction, nested to the right."""
        items = [self.unary()]
        conjunction = None
        while self.peek().kind == "conditional":
            tok = self.next()
            if conjunction is not None and tok.text != conjunction:
                raise self.fail(
                    tok,
                    "`and` and `or` mixed without parentheses",
                    "group them, e.g. (a and b) or c",
                    "mixed-and-or",
                )
            conjunction = tok.text
            items.append(self.unary())
        ir = items[-1]
        for item in reversed(items[:-1]):
            ir = [conjunction, item, ir]
        return ir

    def comparison_follows(self) -> bool:
        tok = self.peek()
        return (tok.kind == "operator" and tok.text != "!") or (tok.kind == "ident" and tok.text == "in")

    def unary(self) -> Any:
        tok = self.peek()
        if tok.kind == "operator" and tok.text == "!":
            self.next()
            if self.peek().kind == "parenleft":
                return ["!", self.group()]
            operand = self.operand()
            if self.comparison_follows():
                raise self.fail(
                    tok,
                    "a `!` before a comparison",
                    "write the negation around it, e.g. !(properties.flag = true), or use !=",
                    "negation-scope",
                )
            return ["!", operand]
        if tok.kind == "parenleft":
            group = self.group()
            if self.comparison_follows():
                raise self.fail(
                    self.peek(),
                    "a parenthesised condition compared like a value",
                    "compare fields, values or function calls",
                )
            return group
        return self.comparison()

    def group(self) -> Any:
        opening = self.next()
        if self.peek().kind == "parenright":
            raise self.fail(self.peek(), "empty parentheses", "put a condition inside or remove them")
        inner = self.condition()
        closing = self.peek()
        if closing.kind != "parenright":
            at = position(self.units, opening.pos)
            raise self.fail(
                closing,
                f"expected ')' to close the '(' at position {at}, found {_describe(closing)}",
                "close the parentheses (and join conditions with `and` or `or`)",
            )
        self.next()
        return inner

    def comparison(self) -> Any:
        left = self.operand()
        tok = self.peek()
        if tok.kind == "operator" and tok.text != "!":
            self.next()
            ir = [tok.text, left, self.operand()]
        elif tok.kind == "ident" and tok.text == "in":
            self.next()
            ir = ["in", left, self.operand()]
        else:
            return left
        if self.comparison_follows():
            raise self.fail(
                self.peek(), "a second comparison operator", "join comparisons with `and` or `or`"
            )
        return ir

    # -- operands -------------------------------------------------------------------------------------
    def operand(self) -> Any:
        tok = self.peek()
        kind = tok.kind
        if kind == "string":
            self.next()
            if not tok.closed:
                after = self.units[tok.end] if tok.end < len(self.units) else ""
                raise self.fail(
                    tok,
                    f"the closing quote of {tok.text} is followed directly by {show(after)}",
                    "put a space, ',' or ')' after it (FQL strings have no escapes)",
                )
            return {"value": tok.text[1:-1]}
        if kind == "number":
            self.next()
            return {"value": self.number(tok)}
        if kind == "null":
            self.next()
            return {"value": None}
        if kind == "brackleft":
            return self.list_literal()
        if kind == "ident":
            if self.peek(1).kind == "parenleft":
                return self.call()
            if tok.text in ("true", "false") and self.peek(1).kind != "dot":
                self.next()
                return {"value": tok.text == "true"}
            return self.path()
        if kind == "eos":
            raise self.fail(tok, "a value is missing at the end", "give a field, a value or a function call")
        raise self.fail(
            tok,
            f"expected a field, a value or a function call, found {_describe(tok)}",
            "quote text with ' or \", write a field as properties.name",
        )

    def number(self, tok: Token) -> int | float:
        value = to_number(tok.text)
        if math.isnan(value):
            raise self.fail(tok, f"{tok.text!r} is not a number", "write digits, e.g. -5 or 2.5")
        if math.isinf(value):
            raise self.fail(tok, f"{tok.text} is too large a number", "use a smaller number")
        if value.is_integer() and abs(value) <= _SAFE and not (value == 0 and math.copysign(1, value) < 0):
            return int(value)
        return value

    def name(self, tok: Token) -> str:
        if "." in tok.text:
            raise self.fail(
                tok,
                f"the field name {tok.text!r} contains '.'",
                "Segment's engine splits paths at every '.', so such a field cannot be reached",
                "dotted-name",
            )
        return tok.text

    def path(self) -> str:
        segments = [self.name(self.next())]
        while self.peek().kind == "dot":
            self.next()
            while True:  # a number token may have taken the dot before the next name ("0." price)
                seg = self.peek()
                if seg.kind == "ident":
                    self.next()
                    segments.append(self.name(seg))
                    break
                if seg.kind == "number" and _INDEX_NUMBER.fullmatch(seg.text):
                    self.next()
                    head, dot, tail = seg.text.partition(".")
                    segments.append(head)
                    if tail:
                        segments.append(tail)
                    if dot and not tail:
                        continue
                    break
                raise self.fail(seg, f"a field name is missing after '.', found {_describe(seg)}")
        return ".".join(segments)

    def call(self) -> list[Any]:
        name_tok = self.next()
        name = name_tok.text
        arity = FUNCTIONS.get(name)
        if arity is None:
            raise self.fail(
                name_tok,
                f"unknown function {name}()",
                "use contains, match, lowercase, length, typeof or semver",
            )
        self.next()  # (
        args = self.operands("parenright", f"in {name}()")
        if len(args) != arity:
            plural = "s" if arity != 1 else ""
            raise self.fail(name_tok, f"{name}() takes {arity} argument{plural}, got {len(args)}")
        return [name, *args]

    def list_literal(self) -> dict[str, Any]:
        self.next()  # [
        return {"value": self.operands("brackright", "in the list")}

    def operands(self, closing: str, where: str) -> list[Any]:
        """Operands separated by commas up to the `closing` token (taken too)."""
        items: list[Any] = []
        if self.peek().kind == closing:
            self.next()
            return items
        while True:
            items.append(self.operand())
            tok = self.next()
            if tok.kind == closing:
                return items
            if tok.kind != "comma":
                close = ")" if closing == "parenright" else "]"
                raise self.fail(tok, f"expected ',' or '{close}' {where}, found {_describe(tok)}")
