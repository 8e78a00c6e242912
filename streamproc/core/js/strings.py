"""JavaScript strings: the whitespace set, trim(), length in UTF-16 code units, lone surrogates."""

from __future__ import annotations

from typing import Final

# What String.prototype.trim() removes and what Number() and Date.parse() skip: ECMAScript's
# WhiteSpace and LineTerminator code points. Python's str.strip() differs (it removes U+001C..U+001F
# and U+0085, and keeps U+FEFF).
WHITESPACE: Final = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
WHITESPACE_SET: Final = frozenset(WHITESPACE)


def trim(text: str) -> str:
    """`text.trim()`."""
    return text.strip(WHITESPACE)


def utf16_length(text: str) -> int:
    """`text.length`: UTF-16 code units, so a character beyond U+FFFF counts twice."""
    if text.isascii():
        return len(text)
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def code_units(text: str) -> list[str]:
    """The string as JavaScript indexes it: one item per UTF-16 code unit (astral characters become
    their two surrogates)."""
    if text.isascii() or all(ord(c) <= 0xFFFF for c in text):
        return list(text)
    raw = text.encode("utf-16-le", "surrogatepass")
    return [raw[i : i + 2].decode("utf-16-le", "surrogatepass") for i in range(0, len(raw), 2)]


def join_code_units(units: list[str]) -> str:
    """The inverse of `code_units`: surrogate pairs become one character again."""
    text = "".join(units)
    if any("\ud800" <= u <= "\udbff" for u in units):
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return text


def well_formed(text: str) -> str:
    """`text.toWellFormed()`: lone surrogates become U+FFFD, as they do whenever JavaScript turns a
    string into UTF-8 (TextEncoder, URL encoding, hashing)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def utf8(text: str) -> bytes:
    """`new TextEncoder().encode(text)`: UTF-8, lone surrogates as U+FFFD."""
    if text.isascii():
        return text.encode("ascii")
    return well_formed(text).encode("utf-8")
