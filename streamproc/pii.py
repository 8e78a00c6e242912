"""Finds raw PII (emails, IP addresses, phone numbers) in free text and replaces each occurrence.

Shared by log scrubbing (keyed hashes) and dead-letter response bodies (fixed markers): callers
decide what an occurrence becomes, this module decides what counts as one.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

__all__ = ["Replace", "kind_of_key", "sub_emails", "sub_ips", "sub_phones", "sub_pii"]

# Called with the kind ("email", "ip", "phone") and the matched text; returns the replacement.
Replace = Callable[[str, str], str]

# Letters of any script count (josé@exämple.com), and `%40` counts as the at sign (an address in a
# URL query, `%2B` its plus). A match starts only where a run of address characters starts (or
# right after a percent escape, so `%22jane%40x.org` keeps its `%22`): trying every position inside
# a long run would make the search quadratic in the run's length.
_EMAIL = re.compile(
    r"(?:(?<![\w.+\-%])|(?<=%[0-9A-Fa-f]{2})(?<!%2[Bb]))(?:[\w.+\-]|%2[Bb])+(?:@|%40)[\w\-]+(?:\.[\w\-]+)+"
)
# Candidates only: whatever `ipaddress` rejects (clock times like 13:56:05, 999.1.1.1) stays.
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")
# International form (+ then digits with separators) or the North American 3-3-4 grouping. ISO
# dates and times never match: they do not start with + and are not grouped 3-3-4.
_PHONE_FORMS = r"\+\d[\d\s().\-]{6,18}\d|\(?\d{3}\)?[\s.\-]\d{3}[\s.\-]\d{4}"
_PHONE = re.compile(rf"(?<![\w+])(?:{_PHONE_FORMS})(?!\w)")
# Also bare runs of 9-15 digits, for text that echoes user fields rather than offsets and ids.
_PHONE_OR_DIGITS = re.compile(rf"(?<![\w+])(?:{_PHONE_FORMS}|\d{{9,15}})(?!\w)")


def sub_emails(text: str, replace: Replace) -> str:
    if "@" not in text and "%40" not in text:
        return text
    return _EMAIL.sub(lambda m: replace("email", m.group(0)), text)


def sub_ips(text: str, replace: Replace, *, keep_local: bool = False) -> str:
    """Replace valid IPv4/IPv6 addresses; with `keep_local`, loopback and unspecified ones stay."""

    def one(m: re.Match[str]) -> str:
        found = m.group(0)
        try:
            ip = ipaddress.ip_address(found)
        except ValueError:
            return found
        if keep_local and (ip.is_loopback or ip.is_unspecified):
            return found
        return replace("ip", found)

    text = _IPV4.sub(one, text)
    if text.count(":") >= 2:
        text = _IPV6.sub(one, text)
    return text


def sub_phones(text: str, replace: Replace, *, digit_runs: bool = False) -> str:
    """Replace phone numbers; with `digit_runs`, bare runs of 9-15 digits count as phone numbers."""
    pattern = _PHONE_OR_DIGITS if digit_runs else _PHONE
    return pattern.sub(lambda m: replace("phone", m.group(0)), text)


def sub_pii(text: str, replace: Replace, *, keep_local: bool = False, digit_runs: bool = False) -> str:
    """Emails, then IP addresses, then phone numbers."""
    text = sub_emails(text, replace)
    text = sub_ips(text, replace, keep_local=keep_local)
    return sub_phones(text, replace, digit_runs=digit_runs)


# Keys whose value is personal data whatever it looks like (a phone given as bare digits, an address
# without dots), compared lower-cased without "_", "-" and ".": a key containing one of these words,
# or equal to one of the short ones (which are parts of ordinary words: "zip", "hotel").
_KEY_WORDS = (
    ("email", "email"),
    ("phone", "phone"),
    ("mobile", "phone"),
    ("msisdn", "phone"),
    ("ipaddress", "ip"),
    ("ipv4", "ip"),
    ("ipv6", "ip"),
    ("clientip", "ip"),
    ("remoteip", "ip"),
)
_KEY_NAMES = {"mail": "email", "tel": "phone", "telephone": "phone", "cell": "phone", "cellphone": "phone"}
_KEY_NAMES |= {"sms": "phone", "whatsapp": "phone", "ip": "ip", "ipfwd": "ip", "forwardedfor": "ip"}
_KEY_NAMES |= {"xforwardedfor": "ip", "realip": "ip", "xrealip": "ip"}


def kind_of_key(key: str) -> str | None:
    """ "email", "phone" or "ip" when a value under this key is personal data of that kind."""
    k = key.lower().replace("_", "").replace("-", "").replace(".", "")
    named = _KEY_NAMES.get(k)
    if named is not None:
        return named
    for word, kind in _KEY_WORDS:
        if word in k:
            return kind
    return None
