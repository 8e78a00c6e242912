"""JSON as streamproc prints it: orjson, and for what orjson refuses a plain writer that takes anything.

orjson stops at 254 levels of nesting, at lone surrogates and at integers past 64 bits, all of which
an event the worker accepts can carry into a request body or a dead letter. A command must still
print its line, so those values are written by `_write` instead: any depth (no recursion), text with
JSON escapes for what UTF-8 cannot carry, and str() for anything that is not JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

__all__ = ["dumps", "json_line"]


def dumps(value: Any, *, pretty: bool = False) -> bytes:
    """The JSON text of `value`; never raises."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 if pretty else 0)
    except (orjson.JSONEncodeError, TypeError):
        return _write(value).encode("utf-8")


def json_line(value: Any, *, pretty: bool = False) -> bytes:
    """`dumps` and a newline: one line of a command's output."""
    return dumps(value, pretty=pretty) + b"\n"


def _write(value: Any) -> str:
    out: list[str] = []
    # Items still to write, last first: values, separators (str) and the ends of containers.
    todo: list[Any] = [(value,)]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        (v,) = item
        if isinstance(v, dict):
            parts: list[Any] = ["}"]
            for i, (key, val) in enumerate(reversed(v.items())):
                parts.append((val,))
                parts.append(_text(key if isinstance(key, str) else str(key)) + ":")
                if i < len(v) - 1:
                    parts.append(",")
            out.append("{")
            todo.extend(parts)
        elif isinstance(v, list | tuple):
            parts = ["]"]
            for i, val in enumerate(reversed(v)):
                parts.append((val,))
                if i < len(v) - 1:
                    parts.append(",")
            out.append("[")
            todo.extend(parts)
        else:
            out.append(_scalar(v))
    return "".join(out)


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else "null"
    if isinstance(v, bytes | bytearray):
        return _text(bytes(v).decode("utf-8", "replace"))
    return _text(v if isinstance(v, str) else str(v))


def _text(s: str) -> str:
    # ensure_ascii: a lone surrogate is written as its \\u escape instead of failing to encode.
    return json.dumps(s, ensure_ascii=True)
