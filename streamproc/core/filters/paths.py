"""Reads a dot-separated field path out of an event as tsub does (the `dlv` package).

`get(event, "properties.items.0.price")` walks one key at a time; a falsy value on the way (`""`,
0, false, null, a missing field) ends the walk with undefined. A key reaches what JavaScript calls an
own property: an object's member, an array's index or `length`, a string's code unit or `length`.
Properties a JavaScript object inherits (`constructor`, `toString`, `__proto__`, ...) are not
reached (the deliberate difference "inherited-property").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from streamproc.core.js import UNDEFINED, code_units, truthy, utf16_length

__all__ = ["get", "getter", "own"]

_INDEX: Final = re.compile(r"(?:0|[1-9][0-9]*)\Z")
_MAX_INDEX: Final = 2**32 - 2


def _index(key: str) -> int | None:
    if _INDEX.match(key) is None:
        return None
    i = int(key)
    return i if i <= _MAX_INDEX else None


def own(value: Any, key: str) -> Any:
    """`value[key]` for JSON-shaped values, limited to own properties; UNDEFINED when absent."""
    cls = value.__class__
    if cls is dict:
        return value.get(key, UNDEFINED)
    if cls is list:
        if key == "length":
            return len(value)
        i = _index(key)
        return value[i] if i is not None and i < len(value) else UNDEFINED
    if cls is str:
        if key == "length":
            return utf16_length(value)
        i = _index(key)
        if i is None:
            return UNDEFINED
        if value.isascii():
            return value[i] if i < len(value) else UNDEFINED
        units = code_units(value)
        return units[i] if i < len(units) else UNDEFINED
    return UNDEFINED


def _walk(value: Any, keys: list[str]) -> Any:
    for key in keys:
        if value.__class__ is dict:  # the usual case first: a member of an object
            value = value.get(key, UNDEFINED)
            continue
        if not truthy(value):
            return UNDEFINED
        value = own(value, key)
    return value


def get(event: Any, path: str) -> Any:
    """The value at `path` (split at every "."), or UNDEFINED."""
    return _walk(event, path.split("."))


def getter(path: str) -> Callable[[Any], Any]:
    """`get(event, path)` as a function of the event, the path split once."""
    keys = path.split(".")
    if len(keys) == 1:
        key = keys[0]

        def member(event: Any) -> Any:
            if event.__class__ is dict:
                return event.get(key, UNDEFINED)
            return own(event, key) if truthy(event) else UNDEFINED

        return member
    return lambda event: _walk(event, keys)
