"""Reading a consumed message's headers without trusting them: names that are not UTF-8, values that
are not text, and `streamproc.*` names that someone else wrote.

confluent-kafka decodes every header name as strict UTF-8 and offers no way to get the raw bytes.
On a name that does not decode, `Message.headers()` raises SystemError the first time, and from
then on returns the list with an empty (NULL) slot where that name would be: touching that slot
crashes the interpreter. `read_headers` looks at each slot through the C API before touching it
and returns the headers it can read plus how many it could not, so a dead letter carries the rest
and says that some were left out (`streamproc.original.headers_unreadable`).

Header values are bytes and are never decoded on the way through; the tools decode them with
replacement (`text`). A name under `streamproc.` on a consumed message was written by whoever
produced it, not by streamproc: copied into a dead letter or a retry record it becomes
`original.streamproc.…`, so it can never pose as the record's own bookkeeping.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from typing import Any

__all__ = ["FOREIGN_PREFIX", "OWN_PREFIX", "Header", "read_headers", "renamed", "text"]

Header = tuple[str, bytes | None]

OWN_PREFIX = "streamproc."
FOREIGN_PREFIX = "original."

# Borrowed references, no error raised for an empty slot: safe to call on the half-built list.
_list_item = ctypes.pythonapi.PyList_GetItem
_list_item.restype = ctypes.c_void_p
_list_item.argtypes = [ctypes.py_object, ctypes.c_ssize_t]
_tuple_item = ctypes.pythonapi.PyTuple_GetItem
_tuple_item.restype = ctypes.c_void_p
_tuple_item.argtypes = [ctypes.py_object, ctypes.c_ssize_t]


def read_headers(msg: Any) -> tuple[list[Header], int]:
    """The headers of `msg` that can be read, and how many could not (names that are not UTF-8).

    Every slot is looked at before it is touched, however `headers()` answers: only its first call
    raises, so a caller that met (and swallowed) that error leaves the empty slots for the next."""
    try:
        raw = msg.headers()
    except (SystemError, UnicodeDecodeError):
        try:
            raw = msg.headers()
        except Exception:  # a client that keeps raising: none of them can be read
            return [], 1
    if raw is None:
        return [], 0
    if not isinstance(raw, list):
        return [], 1
    readable: list[Header] = []
    unreadable = 0
    for i in range(len(raw)):
        if not _list_item(raw, i):
            unreadable += 1
            continue
        item = raw[i]
        if type(item) is not tuple or len(item) != 2 or not _tuple_item(item, 0) or not _tuple_item(item, 1):
            unreadable += 1
            continue
        key, value = item
        if isinstance(key, str) and (value is None or isinstance(value, bytes)):
            readable.append((key, value))
        else:
            unreadable += 1
    return readable, unreadable


def renamed(headers: Iterable[Header]) -> list[Header]:
    """Headers to copy into a record of streamproc's own: `streamproc.*` names get `original.` first."""
    return [(FOREIGN_PREFIX + k if k.startswith(OWN_PREFIX) else k, v) for k, v in headers]


def text(value: bytes | None) -> str:
    """A header value as text, whatever its bytes (invalid UTF-8 becomes U+FFFD)."""
    return value.decode("utf-8", "replace") if value is not None else ""
