"""Masks secrets and raw PII in whatever streamproc shows a person: tool output and log lines.

One rule everywhere: a masked value becomes `<kind:hash>`, where kind is `secret`, `email`, `phone`
or `ip` and hash is the first 12 hex digits of a keyed BLAKE2b of the value. Equal values give equal
markers, so two outputs can be compared (the same token in every TikTok request, the same visitor in
two dead letters) without the value being readable or guessable from a list of candidates. The key
is STREAMPROC_MASK_KEY when set (then markers match across runs and machines that share it), else
random per process (markers match within one run: its output and its logs).

What is a secret: configured credentials (destination settings the partner marks secret, SASL
passwords) wherever their text appears, values under secret-like names (Access-Token, Authorization,
apiKey, password, ...), the password part of a URL (`https://user:pass@host`), bearer tokens, JWTs
and `token=`-style query parameters. What is PII: emails, phone numbers and IP addresses anywhere in
text (streamproc.pii), and any value under an email, phone or IP key, bare digits included.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus

import orjson

from streamproc.output import dumps
from streamproc.pii import kind_of_key, sub_emails, sub_ips, sub_phones

__all__ = ["Masker", "add_arguments", "config_secrets", "for_config", "is_secret_key"]

# Compared against names lower-cased with "_", "-" and "." removed.
_SECRET_KEY_PARTS = (
    "token",
    "secret",
    "password",
    "passwd",
    "authorization",
    "apikey",
    "accesskey",
    "writekey",
    "privatekey",
    "credential",
    "cookie",
    "sasl",
    "signature",
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+([A-Za-z0-9._~+/=\-]{8,})")
_QUERY_SECRET = re.compile(
    r"(?i)\b((?:access_?token|token|api_?key|apikey|secret|password|sig|signature)=)([^&\s\"']+)"
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}")
# scheme://user:password@ or scheme://token@ (a registry URL, a webhook with credentials)
# Without STREAMPROC_MASK_KEY, every masker of one process (its logs, its output) uses this key.
_PROCESS_KEY = os.urandom(16)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^/\s?#@]+)@")


def is_secret_key(key: str) -> bool:
    """A name whose value is a credential (Access-Token, apiKey, sasl.password, ...)."""
    k = key.lower().replace("_", "").replace("-", "").replace(".", "")
    return any(part in k for part in _SECRET_KEY_PARTS)


class Masker:
    """Masks secrets and raw PII in text, JSON-like values, URLs and partner requests.

    `show_secrets` and `show_pii` leave that kind as it is (a person asked to see it); logs never
    set them."""

    def __init__(
        self,
        secrets: Iterable[str] = (),
        *,
        show_secrets: bool = False,
        show_pii: bool = False,
        hash_key: bytes | None = None,
    ) -> None:
        env_key = os.environ.get("STREAMPROC_MASK_KEY")
        # A keyed hash: without the key, a masked email cannot be found by hashing candidates.
        self._key = hash_key or (env_key.encode() if env_key else _PROCESS_KEY)
        self.show_secrets = show_secrets
        self.show_pii = show_pii
        self._secrets: frozenset[str] = frozenset()
        self._secret_re: re.Pattern[str] | None = None
        self._lock = threading.Lock()
        self.add_secrets(secrets)

    def add_secrets(self, values: Iterable[str]) -> None:
        """Mask these exact strings wherever they appear, as written and URL-encoded."""
        with self._lock:
            new = set()
            for value in values:
                if isinstance(value, str) and len(value) >= 4:
                    new.update({value, quote(value, safe=""), quote_plus(value, safe="")})
            self._secrets = self._secrets | new
            if self._secrets:
                alternatives = sorted(self._secrets, key=len, reverse=True)
                self._secret_re = re.compile("|".join(re.escape(s) for s in alternatives))

    def mask(self, kind: str, value: str) -> str:
        """The marker of one value: `<kind:hash>`. Emails, phones and IPs are compared without case
        and surrounding spaces; secrets exactly."""
        text = value if kind == "secret" else value.strip().lower()
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), key=self._key, digest_size=6)
        return f"<{kind}:{digest.hexdigest()}>"

    # -- text -------------------------------------------------------------------------------------

    def text(self, text: str) -> str:
        """Free text with secrets and PII masked (loopback and unspecified addresses are kept: a
        broker or bind address is not about a person)."""
        if not self.show_secrets:
            text = self._mask_secrets_in(text)
        if not self.show_pii:
            text = sub_emails(text, self.mask)
            text = sub_ips(text, self.mask, keep_local=True)
            text = sub_phones(text, self.mask)
        return text

    def _mask_secrets_in(self, text: str) -> str:
        if self._secret_re is not None:
            text = self._secret_re.sub(lambda m: self.mask("secret", m.group(0)), text)
        if "://" in text:
            text = _USERINFO.sub(lambda m: m.group(1) + self.mask("secret", m.group(2)) + "@", text)
        text = _BEARER.sub(lambda m: f"{m.group(1)} {self.mask('secret', m.group(2))}", text)
        text = _QUERY_SECRET.sub(lambda m: m.group(1) + self.mask("secret", m.group(2)), text)
        return _JWT.sub(lambda m: self.mask("secret", m.group(0)), text)

    # -- values -----------------------------------------------------------------------------------

    def under(self, key: Any, value: Any) -> Any | None:
        """The masked value when `key` alone says what it is (a secret or PII name); else None."""
        if not isinstance(key, str) or value is None or value == "" or isinstance(value, bool):
            return None
        if is_secret_key(key):
            return None if self.show_secrets else self.mask("secret", _as_text(value))
        kind = kind_of_key(key)
        if kind is not None and not self.show_pii and isinstance(value, str | int | float):
            return self.mask(kind, _as_text(value))
        return None

    def value(self, value: Any, *, key: str | None = None, max_depth: int | None = None) -> Any:
        """A JSON-like value (found under `key`) with secrets and PII masked, by key and by content;
        the text items of a list under a PII key count as that kind. Deeper than `max_depth`, a value
        becomes "[too deep]"; with no limit any depth is walked (without recursion)."""
        return _Walk(self, max_depth).run(value, key)

    # -- requests ---------------------------------------------------------------------------------

    def url(self, url: str) -> str:
        """A URL with its credentials, configured secrets and PII masked; each query value is
        masked by its name and its content (a JSON value as JSON)."""
        base, sep, query = url.partition("?")
        base = self.text(base)
        if not sep:
            return base
        fragment = ""
        if "#" in query:
            query, _, rest = query.partition("#")
            fragment = "#" + self.text(rest)
        pieces = []
        for piece in query.split("&"):
            name, eq, raw = piece.partition("=")
            if not eq:
                pieces.append(self.text(piece))
                continue
            decoded = unquote_plus(raw, errors="replace")
            shown = self._query_value(unquote_plus(name), decoded)
            pieces.append(piece if shown == decoded else f"{name}={quote_plus(shown, safe='<>:/@,')}")
        return base + "?" + "&".join(pieces) + fragment

    def _query_value(self, name: str, value: str) -> str:
        masked = self.under(name, value)
        if masked is not None:
            return str(masked)
        if value[:1] in ("{", "["):
            try:
                parsed = orjson.loads(value)
            except orjson.JSONDecodeError:
                pass
            else:
                shown = self.value(parsed)
                if shown != parsed:
                    return orjson.dumps(shown).decode()
                return value
        return self.text(value)

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        out = {}
        for name, value in headers.items():
            masked = self.under(name, value)
            out[name] = str(masked) if masked is not None else self.text(value)
        return out

    def request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """A request as `Request.to_json` gives it (method, url, headers, body) masked."""
        return {
            "method": request["method"],
            "url": self.url(request["url"]),
            "headers": self.headers(request["headers"]),
            "body": self.value(request["body"]),
        }


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return dumps(value).decode("utf-8", "replace")


class _Walk:
    """Masker.value without recursion: containers are rebuilt from an explicit stack."""

    def __init__(self, masker: Masker, max_depth: int | None) -> None:
        self.masker = masker
        self.max_depth = max_depth

    def run(self, value: Any, key: Any) -> Any:
        root: list[Any] = [None]
        # (the value, the key it is under, the list or dict it goes into, where in it, depth)
        stack: list[tuple[Any, Any, Any, Any, int]] = [(value, key, root, 0, 0)]
        while stack:
            item, key, into, slot, depth = stack.pop()
            into[slot] = self.one(item, key, depth, stack)
        return root[0]

    def one(self, item: Any, key: Any, depth: int, stack: list[tuple[Any, Any, Any, Any, int]]) -> Any:
        m = self.masker
        masked = m.under(key, item)
        if masked is not None:
            return masked
        if isinstance(item, str):
            return m.text(item)
        if item is None or isinstance(item, bool | int | float):
            return item
        if self.max_depth is not None and depth >= self.max_depth:
            return "[too deep]"
        if isinstance(item, dict):
            out: dict[Any, Any] = dict.fromkeys(item)
            for k, v in item.items():
                stack.append((v, k, out, k, depth + 1))
            return out
        if isinstance(item, list | tuple | set | frozenset):
            # Items of a list under a PII key keep that key, so each is masked as that kind.
            items: list[Any] = [None] * len(item)
            for i, v in enumerate(item):
                stack.append((v, key if isinstance(v, str) else None, items, i, depth + 1))
            return items
        if isinstance(item, bytes | bytearray | memoryview):
            return m.text(bytes(item).decode("utf-8", "replace"))
        return m.text(str(item))


def config_secrets(config: Any) -> list[str]:
    """The secret values of a loaded Config: destination settings the destination marks secret (or
    types `password`) or that are named like a secret, and secret-like librdkafka settings of
    kafka.client, kafka.consumer and kafka.producer (sasl.password)."""
    found: list[str] = []
    kafka = getattr(config, "kafka", None)
    for section in ("client", "consumer", "producer"):
        for key, value in (getattr(kafka, section, None) or {}).items():
            if isinstance(value, str) and is_secret_key(key):
                found.append(value)
    for dest in getattr(config, "destinations", ()):
        fields: Mapping[str, Any] = {}
        try:
            from streamproc.destinations.registry import get

            fields = get(dest.type).settings
        except Exception:  # an unknown type is reported by the config check, not here
            pass
        for key, value in dest.settings.items():
            field = fields.get(key)
            marked = field is not None and (field.secret or field.type == "password")
            if isinstance(value, str) and (marked or is_secret_key(key)):
                found.append(value)
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--show-secrets and --show-pii, for a command that prints requests or events."""
    parser.add_argument(
        "--show-secrets",
        action="store_true",
        help="show credentials (access tokens, pixel and website ids, ...) instead of <secret:hash>",
    )
    parser.add_argument(
        "--show-pii",
        action="store_true",
        help="show emails, phone numbers and IP addresses instead of <email:hash>, <phone:hash>, <ip:hash>",
    )


def for_config(config: Any, args: argparse.Namespace) -> Masker:
    """The masker of a command's output: the configuration's secrets, and the command's switches."""
    return Masker(
        config_secrets(config),
        show_secrets=bool(getattr(args, "show_secrets", False)),
        show_pii=bool(getattr(args, "show_pii", False)),
    )
