"""WHATWG URL rules JavaScript partners rely on: URLSearchParams encoding and decoding, and
`new URL(url).searchParams.get(name)`."""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus, unquote_to_bytes

from streamproc.core.fast_paths import JS_FORM_ENCODE, JS_URL_QUERY
from streamproc.core.fast_paths import OFF as _FAST_PATHS_OFF
from streamproc.core.js.strings import well_formed

# URLSearchParams keeps only ASCII alphanumerics and *-._ unescaped and writes space as "+";
# quote_plus also keeps "~", which URLSearchParams escapes.
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789*-._")
_SAFE_BYTES = bytes(sorted(_SAFE))
_SAFE_AND_SEPARATORS = bytes(sorted(_SAFE | set(b"&=")))
# Each ASCII byte alone and its escape.
_ESCAPES = tuple((bytes((c,)), f"%{c:02X}".encode()) for c in range(128))
_USUAL = b'":,{}/();[]'
_USUAL_ESCAPES = tuple((c, *_ESCAPES[c]) for c in _USUAL)
_USUAL_AND_LAST = _USUAL + b"% "


def form_bytes(data: bytes, safe: bytes = _SAFE_BYTES) -> bytes:
    """URLSearchParams encoding of ASCII bytes: one C-level replace per distinct character that
    needs escaping (few, even in a JSON text) instead of a lookup per character. Bytes in `safe` are
    kept as they are (the default is URLSearchParams' own set)."""
    unsafe = data.translate(None, safe)
    if not unsafe:
        return data
    return _escape(data, unsafe)


def _escape(data: bytes, unsafe: bytes) -> bytes:
    """`data` with each byte of `unsafe` (its bytes that need escaping, in any order) escaped. The
    usual ones (JSON punctuation, user agents, URLs) are looked for one by one, a byte search each;
    the rest are found with a set."""
    # "%" first (later replacements add "%"), space last ("+" must be escaped before spaces become "+").
    if 0x25 in unsafe:
        data = data.replace(b"%", b"%25")
    for c, one, escape in _USUAL_ESCAPES:
        if c in unsafe:
            data = data.replace(one, escape)
    rest = unsafe.translate(None, _USUAL_AND_LAST)
    if rest:
        for c in set(rest):
            one, escape = _ESCAPES[c]
            data = data.replace(one, escape)
    if 0x20 in unsafe:
        data = data.replace(b" ", b"+")
    return data


def form_component(text: str) -> str:
    """One name or value as URLSearchParams writes it (UTF-8, lone surrogates as U+FFFD)."""
    if text.isascii():
        return form_bytes(text.encode("ascii")).decode("ascii")
    return quote_plus(well_formed(text), safe="*").replace("~", "%7E")


def form_encode_exact(pairs: list[tuple[str, str]]) -> str:
    """`new URLSearchParams(pairs).toString()`, one name or value at a time."""
    return "&".join(f"{form_component(k)}={form_component(v)}" for k, v in pairs)


def form_encode(pairs: list[tuple[str, str]]) -> str:
    """`new URLSearchParams(pairs).toString()`: the same text as `form_encode_exact`, with ASCII pairs
    escaped in one pass. When no name or value holds "&" or "=", the pairs are joined with them and
    those two are kept; otherwise NUL stands for "&" and U+0001 for "=", so their escapes "%00" and
    "%01" mark where the separators go (checked to occur nowhere else)."""
    if JS_FORM_ENCODE in _FAST_PATHS_OFF:
        return form_encode_exact(pairs)
    n = len(pairs)
    raw = "&".join(map("=".join, pairs))
    if raw.isascii():
        if raw.count("&") == n - 1 and raw.count("=") == n:
            return form_bytes(raw.encode("ascii"), _SAFE_AND_SEPARATORS).decode("ascii")
        raw = "\x00".join(map("\x01".join, pairs))
        if raw.count("\x00") == n - 1 and raw.count("\x01") == n:
            query = form_bytes(raw.encode("ascii")).replace(b"%00", b"&").replace(b"%01", b"=")
            return query.decode("ascii")
    return form_encode_exact(pairs)


def _unsafe(text: str) -> bool:
    return not text.isascii() or bool(text.encode("ascii").translate(None, _SAFE_BYTES))


class FormTemplate:
    """`new URLSearchParams(pairs).toString()` for pairs whose names are fixed: `encode(values)`
    gives `form_encode(list(zip(names, values)))`, the names and separators written once."""

    __slots__ = ("_format", "_names", "_separators")

    def __init__(self, names: tuple[str, ...]) -> None:
        if not names or not all(name and not _unsafe(name) for name in names):
            raise ValueError(f"names must be URLSearchParams-safe: {names!r}")
        self._names = names
        self._format = "&".join(f"{name}=%s" for name in names)
        self._separators = (len(names) - 1, len(names))

    def encode(self, values: tuple[str, ...]) -> str:
        if JS_FORM_ENCODE in _FAST_PATHS_OFF:
            return self.encode_exact(values)
        raw = self._format % values
        if raw.isascii():
            data = raw.encode("ascii")
            unsafe = data.translate(None, _SAFE_BYTES)
            # The separators are all the "&" and "=" there are: no value holds one.
            if (unsafe.count(b"&"), unsafe.count(b"=")) == self._separators:
                unsafe = unsafe.translate(None, b"&=")
                return (_escape(data, unsafe) if unsafe else data).decode("ascii")
        return form_encode(list(zip(self._names, values, strict=True)))

    def encode_exact(self, values: tuple[str, ...]) -> str:
        """`encode` by the component-wise rules (`form_encode_exact`)."""
        return form_encode_exact(list(zip(self._names, values, strict=True)))


def form_decode(text: str) -> str:
    """One name or value of an application/x-www-form-urlencoded string, as URLSearchParams reads it."""
    return unquote_to_bytes(well_formed(text).replace("+", " ")).decode("utf-8", "replace")


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_SPECIAL = {"http", "https", "ws", "wss", "ftp", "file"}
_FORBIDDEN_HOST = set(" #%/:<>?@[\\]^|\x00")
_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))


# The usual page URL: http(s), a plain host name, maybe a port, printable ASCII only. For these the
# general rules below come down to: the port must fit, the query runs from the first "?" before "#".
_PLAIN_HTTP_URL = re.compile(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(?:[/?#][!-~]*)?", re.ASCII).fullmatch


def _query_of(url: str) -> str | None:
    """`_general_query_of`, with the usual page URL read directly."""
    m = _PLAIN_HTTP_URL(url)
    if m is not None:
        port = m.group(1)
        if port is not None and int(port[1:]) > 65535:
            return None
        fragment = url.find("#")
        if fragment != -1:
            url = url[:fragment]
        q = url.find("?")
        return url[q + 1 :] if q != -1 else None
    return _general_query_of(url)


def _general_query_of(url: str) -> str | None:
    """The query of a URL WHATWG's parser accepts (None when it rejects the URL or has no query)."""
    url = url.strip(_C0_AND_SPACE).replace("\t", "").replace("\n", "").replace("\r", "")
    m = _SCHEME.match(url)
    if not m:
        return None
    scheme = m.group(0)[:-1].lower()
    rest = url[m.end() :]
    if scheme in _SPECIAL and scheme != "file":
        rest = rest.lstrip("/\\")
        end = len(rest)
        for sep in "/\\?#":
            i = rest.find(sep)
            if i != -1:
                end = min(end, i)
        authority = rest[:end]
        host_port = authority.rpartition("@")[2]
        if host_port.startswith("["):
            host, _, port = host_port.partition("]")
            port = port[1:] if port.startswith(":") else port
            if not host[1:]:
                return None
        else:
            host, _, port = host_port.partition(":")
            if not host or not _FORBIDDEN_HOST.isdisjoint(host):
                return None
        if port and (not port.isdigit() or not port.isascii() or int(port) > 65535):
            return None
    fragment = rest.find("#")
    if fragment != -1:
        rest = rest[:fragment]
    q = rest.find("?")
    return rest[q + 1 :] if q != -1 else None


def url_query_param(url: str, name: str) -> str | None:
    """`new URL(url).searchParams.get(name)`; None when the URL does not parse or lacks the name.
    Plain URLs and plain keys are read without decoding; `url_query_param_exact` gives the same."""
    if JS_URL_QUERY in _FAST_PATHS_OFF:
        return url_query_param_exact(url, name)
    if (
        name not in url
        and url.isascii()
        and "%" not in url
        and "+" not in url
        and "\t" not in url
        and "\n" not in url
        and "\r" not in url
    ):
        # Every query key is then a plain substring of the URL, so none can be `name`.
        return None
    query = _query_of(url)
    if query is None:
        return None
    for part in query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        if key == name if (key.isascii() and "%" not in key and "+" not in key) else form_decode(key) == name:
            if value.isascii() and "%" not in value and "+" not in value:
                return value
            return form_decode(value)
    return None


def url_query_param_exact(url: str, name: str) -> str | None:
    """`new URL(url).searchParams.get(name)` by the general rules, every key and value decoded."""
    query = _general_query_of(url)
    if query is None:
        return None
    for part in query.split("&"):
        if part:
            key, _, value = part.partition("=")
            if form_decode(key) == name:
                return form_decode(value)
    return None


# What encodeURIComponent and encodeURI leave as they are.
_COMPONENT_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()"
_URI_SAFE = _COMPONENT_SAFE + ";,/?:@&=+$#"


def _lone_surrogate(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


def encode_uri_component(text: str, *, uri: bool = False) -> str:
    """`encodeURIComponent(text)` (or `encodeURI` with `uri=True`): UTF-8 percent-escapes in upper
    case; a lone surrogate raises ValueError("URI malformed"), JavaScript's URIError."""
    if not text.isascii() and _lone_surrogate(text):
        raise ValueError("URI malformed")
    return quote(text, safe=_URI_SAFE if uri else _COMPONENT_SAFE)


_PERCENT_RUNS = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


def decode_uri_component(text: str) -> str:
    """`decodeURIComponent(text)`: every %XX run must be well-formed UTF-8 (no surrogates, no
    overlong forms) and a "%" must start an escape, else ValueError("URI malformed")."""
    if "%" not in text:
        return text

    def decoded(match: re.Match[str]) -> str:
        try:
            return unquote_to_bytes(match.group(0)).decode("utf-8", "strict")
        except UnicodeDecodeError:
            raise ValueError("URI malformed") from None

    out = _PERCENT_RUNS.sub(decoded, text)
    if "%" in _PERCENT_RUNS.sub("", text):
        raise ValueError("URI malformed")
    return out
