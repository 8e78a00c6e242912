"""Segment's FQL lexer (@segment/fql-ts 1.10.1), shared by triggers and destination filters.

It yields the tokens fql-ts yields and refuses every text fql-ts refuses. It works on UTF-16 code
units, as fql-ts does (`code_units(text)`), and keeps what a friendly error needs: each token's
position, whether a string's closing quote was taken, whether a name escaped a separator. A
`LexError` carries streamproc's own words (`problem`, `fix`) and fql-ts's (`segment`).

fql-ts has one quirk that loses text without an error: a word starting like `and`, `or` or `null`
that ends the text (`an`, `nul`) is read as its first letter only (`x = nul` lexes as `x = n`).
`Lexer.lost` says when that happened, so a parser can refuse the text instead of reading less.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from streamproc.core.js import join_code_units

__all__ = ["EOS", "LexError", "Lexer", "Token", "position", "show"]

EOS: Final = "\x00eos"  # never equal to a real code unit
_SEGMENT_EOS: Final = "-1"  # what fql-ts prints for the end of the text
_MAX_LEN: Final = 100000
ALPHA: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
DIGITS: Final = frozenset("0123456789")
_IDENT_CHARS: Final = ALPHA | DIGITS | frozenset("_-\\")
WHITESPACE: Final = frozenset(" \t\n")
TERMINATORS: Final = WHITESPACE | frozenset(",])") | {EOS}
_AFTER_IDENT: Final = TERMINATORS | frozenset(".(=!")


@dataclass(slots=True)
class Token:
    """One fql-ts token: `kind` is fql-ts's type name, `text` its value (a string keeps both quotes)."""

    kind: str  # ident dot operator conditional string number null brackleft brackright parenleft ...
    text: str
    pos: int  # code-unit index of the first character
    end: int = 0  # code-unit index after the last character consumed
    escaped_separator: bool = False  # ident with a backslash-escaped '.', '[' or ']'
    closed: bool = True  # string whose closing quote was consumed


class LexError(Exception):
    """A text fql-ts refuses: where, what (streamproc's words and fql-ts's), and how to fix it."""

    def __init__(self, pos: int, problem: str, fix: str, segment: str) -> None:
        super().__init__(problem)
        self.pos = pos
        self.problem = problem
        self.fix = fix
        self.segment = segment
        """fql-ts's own message for the same refusal."""


def show(ch: str) -> str:
    """A code unit as an error message names it."""
    if ch == EOS:
        return "the end"
    if ch == "\r":
        return "a carriage return"
    return repr(ch)


def position(units: list[str], unit_pos: int) -> int:
    """A code-unit index as error messages count: characters (code points) from 1."""
    return unit_pos - sum(1 for u in units[:unit_pos] if "\udc00" <= u <= "\udfff") + 1


def _raw(ch: str) -> str:
    return _SEGMENT_EOS if ch == EOS else ch


class Lexer:
    """`Lexer(code_units(text)).lex()`: the tokens, ending with one of kind "eos"; raises LexError."""

    def __init__(self, units: list[str]) -> None:
        self.u = units
        self.n = len(units)
        self.i = 0
        self.reopened = -1  # index of a closing quote that fql-ts leaves to start another string
        self.lost = False
        """True when fql-ts dropped characters at the end of the text (see the module docstring)."""

    def peek(self) -> str:
        return self.u[self.i] if self.i < self.n else EOS

    def accept(self, expected: str) -> bool:
        start = self.i
        chars = ""
        for _ in expected:
            if self.i >= self.n:
                # fql-ts returns here without stepping back over what it already read
                self.lost = self.lost or self.i > start
                return False
            ch = self.u[self.i]
            self.i += 1
            chars += ch
            if ch in TERMINATORS:
                break
        if chars == expected and self.peek() in TERMINATORS:
            return True
        self.i = start
        return False

    def lex(self) -> list[Token]:
        tokens: list[Token] = []
        u = self.u
        while True:
            if self.i >= self.n:
                tokens.append(Token("eos", "eos", self.n, self.n))
                return tokens
            start = self.i
            ch = u[self.i]
            self.i += 1
            if ch in WHITESPACE:
                continue
            if ch == "!":
                nxt = self.peek()
                if nxt in ALPHA or nxt == "(":
                    tokens.append(Token("operator", "!", start, self.i))
                    continue
            if ch in ALPHA or ch in "!=<>\\_":
                tok = self._operator_or_word(ch, start)
            elif ch in DIGITS or ch in "-+":
                tok = self._number(ch, start)
            elif ch in "\"'":
                tok = self._string(ch, start)
            elif ch in ".[],()":
                kind = {
                    ".": "dot",
                    "[": "brackleft",
                    "]": "brackright",
                    ",": "comma",
                    "(": "parenleft",
                    ")": "parenright",
                }[ch]
                tok = Token(kind, ch, start, self.i)
            else:
                raise LexError(
                    start, f"invalid character {show(ch)}", _invalid_char_fix(ch), f'invalid character "{ch}"'
                )
            tok.end = self.i
            tokens.append(tok)

    def _operator_or_word(self, first: str, start: int) -> Token:
        if first == "=":
            return Token("operator", "=", start)
        if first == "!":
            if self.accept("="):
                return Token("operator", "!=", start)
            after = self.peek()
            segment = f"expected '=' after '!', got '{_raw(after)}'"
            if after == "=":
                raise LexError(
                    start,
                    "'!=' directly followed by its value",
                    "put a space after '!=', e.g. userId != null",
                    segment,
                )
            fix = "'!' is only allowed directly before contains( or match(; use '!=' to compare"
            raise LexError(start, f"'!' followed by {show(after)}", fix, segment)
        if first == "a":
            return Token("conditional", "and", start) if self.accept("nd") else self._word(first, start)
        if first == "o":
            return Token("conditional", "or", start) if self.accept("r") else self._word(first, start)
        if first == "n":
            return Token("null", "null", start) if self.accept("ull") else self._word(first, start)
        if first in "<>":
            if self.accept("="):
                return Token("operator", first + "=", start)
            return Token("operator", first, start)
        return self._word(first, start)

    def _word(self, first: str, start: int) -> Token:
        chars: list[str] = []
        ch = first
        escaped_separator = False
        while True:
            if ch == "\\":
                if self.i >= self.n:
                    raise LexError(
                        self.i - 1,
                        "a backslash at the end",
                        "remove the trailing backslash",
                        "expected character after escape character, got EOS",
                    )
                ch = self.u[self.i]
                self.i += 1
                if ch in ".[]":
                    escaped_separator = True
            chars.append(ch)
            if len(chars) >= _MAX_LEN:
                raise LexError(
                    start,
                    "a field name longer than 99999 characters",
                    "shorten it",
                    "unreasonable literal length",
                )
            if self.peek() not in _IDENT_CHARS:
                break
            ch = self.u[self.i]
            self.i += 1
        coming = self.peek()
        if coming not in _AFTER_IDENT:
            raise LexError(
                self.i,
                f"{show(coming)} directly after a name",
                _after_word_fix(coming),
                f"expected termination character after identifier, got {_raw(coming)}",
            )
        return Token("ident", join_code_units(chars), start, escaped_separator=escaped_separator)

    def _number(self, first: str, start: int) -> Token:
        chars = [first]
        decimal = False
        while self.peek() in DIGITS or self.peek() == ".":
            ch = self.u[self.i]
            self.i += 1
            chars.append(ch)
            if ch == ".":
                if self.peek() in TERMINATORS:
                    raise LexError(
                        self.i - 1,
                        "a number ending in '.'",
                        "write the digits after the point",
                        "unexpected terminator after decimal point",
                    )
                if decimal:
                    raise LexError(
                        self.i - 1,
                        "a number with two decimal points",
                        "keep one point",
                        "multiple decimal points in one number",
                    )
                decimal = True
            if len(chars) - 1 >= _MAX_LEN:
                raise LexError(
                    start,
                    "a number longer than 100000 characters",
                    "shorten it",
                    "unreasonable number length",
                )
        return Token("number", "".join(chars), start)

    def _string(self, quote: str, start: int) -> Token:
        chars: list[str] = []
        while self.peek() != quote:
            if self.i >= self.n:
                if start == self.reopened:
                    after = self.u[start + 1] if start + 1 < self.n else EOS
                    raise LexError(
                        start,
                        f"this closing quote is followed directly by {show(after)}, so it starts a new "
                        "string that is never closed (FQL strings have no escapes)",
                        "put a space, ',' or ')' after the closing quote",
                        "unterminated string",
                    )
                raise LexError(
                    start, "a string that is never closed", f"end it with {quote}", "unterminated string"
                )
            chars.append(self.u[self.i])
            self.i += 1
            if len(chars) >= _MAX_LEN:
                raise LexError(
                    start, "a string longer than 99999 characters", "shorten it", "unreasonable string length"
                )
        closed = self.accept(quote)
        if not closed:
            self.reopened = self.i
        body = join_code_units(chars)
        return Token("string", quote + body + quote, start, closed=closed)


def _invalid_char_fix(ch: str) -> str:
    if ch == "\r":
        return "use LF line endings (a carriage return is not allowed)"
    if ch in "&|":
        return "join conditions with 'and' / 'or'"
    if ch == "*":
        return 'wildcards only exist inside match() patterns, e.g. match(event, "Order*")'
    if ch in WHITESPACE or ch.isspace():
        return "use plain spaces, tabs or newlines"
    return "remove it, or put it inside a double-quoted string (in a field name, escape it with '\\')"


def _after_word_fix(ch: str) -> str:
    if ch in "<>":
        return "put a space between the field and the operator, e.g. properties.total > 5"
    if ch == "[":
        return "FQL has no [index]; it cannot address array items"
    if ch in "\"'":
        return "put a space or an operator between the name and the string"
    return "escape the character with '\\' or remove it"
