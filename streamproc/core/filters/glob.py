"""FQL's `match(text, pattern)`: tsub's port of Segment's Go glob, on UTF-16 code units as tsub runs it.

`*` is any run of characters (slashes included), `?` one code unit, `[a-z]`, `[^abc]` a class, `\\x`
the character x. A malformed pattern (`[`, `a\\`, `[]a]`) matches nothing.
"""

from __future__ import annotations

from streamproc.core.js import code_units

__all__ = ["glob_matches"]

_NO = ("", False, False)


def _units(text: str) -> str:
    """The text with characters beyond U+FFFF as their two surrogates, so indexing is by code unit."""
    if text.isascii() or all(ord(c) <= 0xFFFF for c in text):
        return text
    return "".join(code_units(text))


def glob_matches(pattern: str, text: str) -> bool:
    """Whether `pattern` matches the whole of `text`."""
    pattern, s = _units(pattern), _units(text)
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and chunk == "":
            return True  # a trailing * matches the rest
        t, ok, err = _match_chunk(chunk, s)
        if err:
            return False
        if ok and (not t or pattern):
            s = t
            continue
        if star:
            found = False
            for i in range(len(s)):
                t, ok, err = _match_chunk(chunk, s[i + 1 :])
                if ok:
                    if not pattern and t:
                        continue  # the last chunk must use up the text
                    s = t
                    found = True
                    break
                if err:
                    return False
            if found:
                continue
        return False
    return not s


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    """Leading stars, then the chunk up to the next star outside a class, then the rest."""
    star = False
    while pattern and pattern[0] == "*":
        pattern = pattern[1:]
        star = True
    in_range = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 < len(pattern):
                i += 1
        elif c == "[":
            in_range = True
        elif c == "]":
            in_range = False
        elif c == "*" and not in_range:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _match_chunk(chunk: str, s: str) -> tuple[str, bool, bool]:
    """Whether `chunk` (no stars) matches the start of `s`: (the rest of s, ok, malformed)."""
    while chunk:
        if not s:
            return _NO
        head = chunk[0]
        if head == "[":
            char = s[0]
            s = s[1:]
            chunk = chunk[1:]
            positive = True
            if chunk and chunk[0] == "^":
                positive = False
                chunk = chunk[1:]
            found = False
            ranges = 0
            while True:
                if chunk and chunk[0] == "]" and ranges > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk, bad = _escaped(chunk)
                if bad:
                    return _NO
                hi = lo
                if chunk and chunk[0] == "-":
                    hi, chunk, bad = _escaped(chunk[1:])
                    if bad:
                        return _NO
                if lo <= char <= hi:
                    found = True
                ranges += 1
            if found != positive:
                return _NO
        elif head == "?":
            s = s[1:]
            chunk = chunk[1:]
        else:
            if head == "\\":
                chunk = chunk[1:]
                if not chunk:
                    return ("", False, True)
            if chunk[0] != s[0]:
                return _NO
            s = s[1:]
            chunk = chunk[1:]
    return s, True, False


def _escaped(chunk: str) -> tuple[str, str, bool]:
    """One possibly escaped character of a class: (it, the rest, malformed). A class must go on
    after it, so a character that ends the pattern is malformed too."""
    if not chunk or chunk[0] in "-]":
        return "", "", True
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            return "", "", True
    return chunk[0], chunk[1:], len(chunk) == 1
