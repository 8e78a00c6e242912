"""JavaScript's Date.parse as V8 does it, and the ISO-8601 times the commands read.

V8's grammar: the ES5 ISO form first, then its lenient legacy grammar. Local time is taken to be UTC
(the worker's zone never changes an answer)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from streamproc.core.fast_paths import JS_DATE_PARSE
from streamproc.core.fast_paths import OFF as _FAST_PATHS_OFF
from streamproc.core.js.strings import WHITESPACE_SET

_KEYWORDS: dict[str, tuple[str, int]] = {
    **{
        m: ("month", i + 1)
        for i, m in enumerate(
            ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
        )
    },
    "am": ("ampm", 0),
    "pm": ("ampm", 12),
    "ut": ("zone", 0),
    "utc": ("zone", 0),
    "z": ("zone", 0),
    "gmt": ("zone", 0),
    "cdt": ("zone", -5),
    "cst": ("zone", -6),
    "edt": ("zone", -4),
    "est": ("zone", -5),
    "mdt": ("zone", -6),
    "mst": ("zone", -7),
    "pdt": ("zone", -7),
    "pst": ("zone", -8),
    "t": ("t", 0),
}
_V8_WHITESPACE = WHITESPACE_SET


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days from 1970-01-01 to the proleptic Gregorian date y-m-d."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


class _Tok:
    __slots__ = ("kind", "length", "value", "word")

    def __init__(self, kind: str, value: Any = None, length: int = 0, word: str = "") -> None:
        self.kind = kind  # "num", "sym", "word", "ws", "end", "unknown"
        self.value = value
        self.length = length
        self.word = word

    def is_sym(self, ch: str) -> bool:
        return self.kind == "sym" and self.value == ch

    def is_sign(self) -> bool:
        return self.kind == "sym" and self.value in ("+", "-")

    def is_fixed(self, n: int) -> bool:
        return self.kind == "num" and self.length == n

    def keyword(self) -> tuple[str, int] | None:
        if self.kind != "word":
            return None
        kw = _KEYWORDS.get(self.word[:3])
        if kw is None or (self.length > 3 and kw[0] != "month"):
            return None
        return kw


def _tokenize(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if "0" <= ch <= "9":
            j = i
            while j < n and text[j] == "0":
                j += 1
            value = 0
            significant = 0
            while j < n and "0" <= text[j] <= "9":
                if significant < 9:  # V8 keeps nine significant digits
                    value = value * 10 + ord(text[j]) - 48
                significant += 1
                j += 1
            out.append(_Tok("num", value, j - i))
            i = j
        elif ch in ":-+.)":
            out.append(_Tok("sym", ch))
            i += 1
        elif ch >= "A" and ch not in _V8_WHITESPACE:
            j = i
            while j < n and text[j] >= "A" and text[j] not in _V8_WHITESPACE:
                j += 1
            word = "".join(c.lower() if "A" <= c <= "Z" else c for c in text[i : min(j, i + 3)])
            out.append(_Tok("word", None, j - i, word))
            i = j
        elif ch in _V8_WHITESPACE:
            while i < n and text[i] in _V8_WHITESPACE:
                i += 1
            out.append(_Tok("ws"))
        elif ch == "(":
            depth = 0
            while i < n:
                if text[i] == "(":
                    depth += 1
                elif text[i] == ")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
            out.append(_Tok("unknown"))
        else:
            out.append(_Tok("unknown"))
            i += 1
    out.append(_Tok("end"))
    return out


class _Scanner:
    __slots__ = ("pos", "toks")

    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks
        self.pos = 0

    def peek(self) -> _Tok:
        return self.toks[self.pos]

    def next(self) -> _Tok:
        tok = self.toks[self.pos]
        if tok.kind != "end":
            self.pos += 1
        return tok

    def skip_sym(self, ch: str) -> bool:
        if self.peek().is_sym(ch):
            self.pos += 1
            return True
        return False


def _read_ms(tok: _Tok) -> int:
    # Only the first three digits count; fewer digits are scaled up.
    length = min(tok.length, 9)
    value = tok.value
    if length == 1:
        return value * 100
    if length == 2:
        return value * 10
    while length > 3:
        value //= 10
        length -= 1
    return value


class _DateParts:
    """V8's day, time and zone composers in one place."""

    def __init__(self) -> None:
        self.day: list[int] = []
        self.named_month: int | None = None
        self.iso = False
        self.time: list[int] = []
        self.hour_offset: int | None = None
        self.sign: int | None = None
        self.tz_hour: int | None = None
        self.tz_minute: int | None = None

    def add_day(self, n: int) -> bool:
        if len(self.day) == 3:
            return False
        self.day.append(n)
        return True

    def add_time(self, n: int) -> bool:
        if len(self.time) == 4:
            return False
        self.time.append(n)
        return True

    def add_time_final(self, n: int) -> bool:
        if not self.add_time(n):
            return False
        self.time.extend([0] * (4 - len(self.time)))
        return True

    def time_expecting(self, n: int) -> bool:
        k = len(self.time)
        return (k == 1 and 0 <= n <= 59) or (k == 2 and 0 <= n <= 59) or (k == 3 and 0 <= n <= 999)

    def tz_set(self, hours: int) -> None:
        self.sign = -1 if hours < 0 else 1
        self.tz_hour = abs(hours)
        self.tz_minute = 0

    def tz_expecting(self, n: int) -> bool:
        return self.tz_hour is not None and self.tz_minute is None and 0 <= n <= 59

    def tz_is_utc(self) -> bool:
        return self.tz_hour == 0 and self.tz_minute == 0

    def millis(self) -> float:
        if not self.day:
            return math.nan
        comp = self.day + [1] * (3 - len(self.day))
        year = 0
        if self.named_month is None:
            if self.iso or not 1 <= comp[0] <= 31:
                year, month, day = comp
            else:
                month, day, year = comp
        else:
            month = self.named_month
            if not 1 <= comp[0] <= 31:
                year, day = comp[0], comp[1]
            else:
                day, year = comp[0], comp[1]
        if not self.iso:
            if 0 <= year <= 49:
                year += 2000
            elif 50 <= year <= 99:
                year += 1900
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return math.nan
        t = self.time + [0] * (4 - len(self.time))
        hour, minute, second, ms = t
        if self.hour_offset is not None:
            if not 0 <= hour <= 12:
                return math.nan
            hour = hour % 12 + self.hour_offset
        if not (0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= second <= 59 and 0 <= ms <= 999) and not (
            hour == 24 and minute == 0 and second == 0 and ms == 0
        ):
            return math.nan
        offset_seconds = 0
        if self.sign is not None:
            # V8 adds up the offset in a 32-bit int; absurd offsets wrap around the same way.
            total = ((self.tz_hour or 0) * 3600 + (self.tz_minute or 0) * 60 + 2**31) % 2**32 - 2**31
            offset_seconds = self.sign * total
        days = days_from_civil(year, month, 1) + day - 1
        value = ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + ms - offset_seconds * 1000
        return float(value) if abs(value) <= 8.64e15 else math.nan


def _parse_es5(sc: _Scanner, p: _DateParts) -> _Tok | None:
    """V8's ES5 pass: None means "invalid"; otherwise the first token it did not use."""
    peek = sc.peek()
    if peek.is_sign():
        sign_tok = sc.next()
        if not sc.peek().is_fixed(6):
            return sign_tok
        year = sc.next().value
        if sign_tok.value == "-" and year == 0:
            return sign_tok
        p.add_day(-year if sign_tok.value == "-" else year)
    elif peek.is_fixed(4):
        p.add_day(sc.next().value)
    else:
        return sc.next()
    if sc.skip_sym("-"):
        if not sc.peek().is_fixed(2) or not 1 <= sc.peek().value <= 12:
            return sc.next()
        p.add_day(sc.next().value)
        if sc.skip_sym("-"):
            if not sc.peek().is_fixed(2) or not 1 <= sc.peek().value <= 31:
                return sc.next()
            p.add_day(sc.next().value)
    kw = sc.peek().keyword()
    if kw is None or kw[0] != "t":
        if sc.peek().kind != "end":
            return sc.next()
    else:
        sc.next()
        if not sc.peek().is_fixed(2) or not 0 <= sc.peek().value <= 24:
            return None
        hour_24 = sc.peek().value == 24
        p.add_time(sc.next().value)
        if not sc.skip_sym(":"):
            return None
        if not sc.peek().is_fixed(2) or sc.peek().value > 59 or (hour_24 and sc.peek().value > 0):
            return None
        p.add_time(sc.next().value)
        if sc.skip_sym(":"):
            if not sc.peek().is_fixed(2) or sc.peek().value > 59 or (hour_24 and sc.peek().value > 0):
                return None
            p.add_time(sc.next().value)
            if sc.skip_sym("."):
                if sc.peek().kind != "num" or (hour_24 and sc.peek().value > 0):
                    return None
                p.add_time(_read_ms(sc.next()))
        kw = sc.peek().keyword()
        if kw is not None and sc.peek().word == "z":
            sc.next()
            p.tz_set(0)
        elif sc.peek().is_sign():
            p.sign = 1 if sc.next().value == "+" else -1
            if sc.peek().is_fixed(4):
                hm = sc.next().value
                if not (0 <= hm // 100 <= 23 and 0 <= hm % 100 <= 59):
                    return None
                p.tz_hour, p.tz_minute = hm // 100, hm % 100
            else:
                if not sc.peek().is_fixed(2) or sc.peek().value > 23:
                    return None
                p.tz_hour = sc.next().value
                if not sc.skip_sym(":"):
                    return None
                if not sc.peek().is_fixed(2) or sc.peek().value > 59:
                    return None
                p.tz_minute = sc.next().value
        if sc.peek().kind != "end":
            return None
    if p.sign is None and not p.time:
        p.tz_set(0)
    p.iso = True
    return _Tok("end")


_COMMON_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[Tt](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?([Zz]|[+-]\d{2}:\d{2})?)?",
    re.ASCII,
)


def _common_iso(m: re.Match[str]) -> float:
    """The usual Segment timestamp shapes, without tokenising (same answers as the full parser)."""
    year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return math.nan
    hour = int(m.group(4) or 0)
    minute = int(m.group(5) or 0)
    second = int(m.group(6) or 0)
    frac = m.group(7)
    ms = int(frac[:3].ljust(3, "0")) if frac else 0
    if minute > 59 or second > 59 or hour > 24 or (hour == 24 and (minute or second or ms)):
        return math.nan
    offset = 0
    zone = m.group(8)
    if zone and zone not in ("Z", "z"):
        zh, zm = int(zone[1:3]), int(zone[4:6])
        if zh > 23 or zm > 59:
            return math.nan
        offset = (zh * 60 + zm) * (-1 if zone[0] == "-" else 1)
    days = days_from_civil(year, month, 1) + day - 1
    value = ((days * 24 + hour) * 60 + minute - offset) * 60_000 + second * 1000 + ms
    return float(value) if abs(value) <= 8.64e15 else math.nan


_UTC_MILLIS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{3})?Z", re.ASCII).fullmatch
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def date_parse(text: str) -> float:
    """`Date.parse(text)` in epoch milliseconds, NaN where V8 says Invalid Date. The usual Segment
    timestamp shapes are answered without tokenising; `date_parse_exact` always tokenises and gives
    the same answers."""
    if JS_DATE_PARSE in _FAST_PATHS_OFF:
        return date_parse_exact(text)
    if _UTC_MILLIS(text):
        # Segment's own timestamp shape. Where datetime accepts it (a real date and time) the two
        # agree; the edge cases it rejects (hour 24, day 31 of a short month, year 0) go on below.
        try:
            return float((datetime.fromisoformat(text) - _EPOCH) // _ONE_MS)
        except ValueError:
            pass
    m = _COMMON_ISO.fullmatch(text)
    if m:
        millis = _common_iso(m)
        # Out of range for the ISO form is not the end: V8's legacy grammar may still read it
        # ("0001-01-00" is 2000-01-01).
        if not math.isnan(millis):
            return millis
    return date_parse_exact(text)


def parse_iso_time(text: str) -> datetime:
    """A time as the commands take it (`--from`, `--since`, `--now`): the ISO-8601 form of
    ECMAScript, e.g. 2026-11-23, 2026-11-23T10:00:00Z, 2026-11-23 10:00:00.250+01:00; UTC when no
    zone is given. Raises ValueError for anything else, or a date or time that does not exist."""
    t = text.strip()
    if len(t) > 10 and t[10] == " ":
        t = t[:10] + "T" + t[11:]
    m = _COMMON_ISO.fullmatch(t)
    millis = _common_iso(m) if m else math.nan
    if math.isnan(millis):
        raise ValueError(f"not an ISO-8601 time: {text!r}")
    assert m is not None
    try:
        # Date.parse rolls 02-30 over into March; a command refuses it.
        datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise ValueError(f"not an ISO-8601 time: {text!r} (no such date)") from None
    return _EPOCH + timedelta(milliseconds=millis)


def date_parse_exact(text: str) -> float:
    """`Date.parse(text)` by V8's two passes over the tokens, with no shortcut."""
    sc = _Scanner(_tokenize(text))
    p = _DateParts()
    tok = _parse_es5(sc, p)
    if tok is None:
        return math.nan
    has_number = bool(p.day)
    while tok.kind != "end":
        if tok.kind == "num":
            has_number = True
            n = tok.value
            if sc.skip_sym(":"):
                if sc.skip_sym(":"):
                    if p.time:
                        return math.nan
                    p.add_time(n)
                    p.add_time(0)
                else:
                    if not p.add_time(n):
                        return math.nan
                    if sc.peek().is_sym("."):
                        sc.next()
            elif sc.skip_sym(".") and p.time_expecting(n):
                p.add_time(n)
                if sc.peek().kind != "num":
                    return math.nan
                p.add_time_final(_read_ms(sc.next()))
            elif p.tz_expecting(n):
                p.tz_minute = n
            elif p.time_expecting(n):
                p.add_time_final(n)
                peek = sc.peek()
                if not (
                    peek.kind in ("end", "ws") or (peek.kind == "word" and peek.word == "z") or peek.is_sign()
                ):
                    return math.nan
            else:
                if not p.add_day(n):
                    return math.nan
                sc.skip_sym("-")
        elif tok.kind == "word":
            kw = tok.keyword()
            if kw is not None and kw[0] == "ampm" and p.time:
                p.hour_offset = kw[1]
            elif kw is not None and kw[0] == "month":
                p.named_month = kw[1]
                sc.skip_sym("-")
            elif kw is not None and kw[0] == "zone" and has_number:
                p.tz_set(kw[1])
            else:
                if has_number:
                    return math.nan
                if sc.peek().kind == "num":
                    return math.nan
        elif tok.is_sign() and (p.tz_is_utc() or p.time):
            p.sign = 1 if tok.value == "+" else -1
            n, length = 0, 0
            if sc.peek().kind == "num":
                nxt = sc.next()
                n, length = nxt.value, nxt.length
            has_number = True
            if sc.peek().is_sym(":"):
                p.tz_hour, p.tz_minute = n, None
            elif length in (1, 2):
                p.tz_hour, p.tz_minute = n, 0
            elif length in (3, 4):
                p.tz_hour, p.tz_minute = n // 100, n % 100
            else:
                return math.nan
        elif (tok.is_sign() or tok.is_sym(")")) and has_number:
            return math.nan
        tok = sc.next()
    return p.millis()
