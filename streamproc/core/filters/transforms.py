"""What a destination filter does to an event whose condition holds, as tsub's transformers do it.

- `drop_properties(event, {"properties": ["email"], "": ["userId"]})` deletes the listed members
  of the object at each path (`""` is the event itself; an array there: each object in it).
- `allow_properties(event, {"properties": ["sku", "price"]})` keeps only the listed members there.
- `sample_keeps(event, percent, path, random)` says whether a sample filter keeps the event:
  with a `path`, by a number in [0, 1) derived from the MD5 digest of the field's JSON text (the
  same field value is always kept or always dropped); without one, at random.

Both property transforms change `event` in place; callers give them their own copy.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from streamproc.core.filters.evaluate import FilterEvaluationError
from streamproc.core.filters.paths import get
from streamproc.core.js import js_keys, json_stringify

__all__ = ["allow_properties", "consistent_fraction", "drop_properties", "sample_keeps"]

_INDEX_KEYS: Final = 2**32 - 2


def _targets(event: Any, key: str) -> list[Any]:
    """The objects a property transform acts on at `key`: the one there, or each one in an array."""
    found = event if key == "" else get(event, key)
    items = found if found.__class__ is list else [found]
    return [it for it in items if it.__class__ is dict or it.__class__ is list]


def _index(key: str) -> int | None:
    if key.isdigit() and (key == "0" or key[0] != "0") and key.isascii() and int(key) <= _INDEX_KEYS:
        return int(key)
    return None


def _delete(target: dict[str, Any] | list[Any], key: str) -> None:
    """`delete target[key]`; an array keeps its length and shows the gap as null."""
    if isinstance(target, dict):
        target.pop(key, None)
        return
    if key == "length":
        raise FilterEvaluationError("Cannot delete property 'length' of [object Array]")
    i = _index(key)
    if i is not None and i < len(target):
        target[i] = None


def _rules(rules: Mapping[str, Sequence[str]]) -> list[str]:
    """The paths in the order JavaScript's Object.entries gives them (index-like keys first)."""
    return js_keys(dict(rules))


def drop_properties(event: Any, rules: Mapping[str, Sequence[str]]) -> None:
    """Delete `rules[path]`'s members from the object(s) at each path."""
    for key in _rules(rules):
        names = rules[key]
        for target in _targets(event, key):
            for name in names:
                _delete(target, name)


def allow_properties(event: Any, rules: Mapping[str, Sequence[str]]) -> None:
    """Keep only `rules[path]`'s members in the object(s) at each path."""
    for key in _rules(rules):
        keep = set(rules[key])
        for target in _targets(event, key):
            if target.__class__ is dict:
                for name in [k for k in target if k not in keep]:
                    del target[name]
            else:
                for i, item in enumerate(target):
                    if item is not None and str(i) not in keep:
                        target[i] = None


def consistent_fraction(value: Any) -> float:
    """A number in [0, 1) from the MD5 digest of `JSON.stringify(value)`'s UTF-8 bytes (a missing
    value hashes as the text "undefined"), uniform over distinct values.

    The digest's first 8 bytes are a 64-bit fraction; its leading zero bits are shifted out and
    refilled from the next 8 bytes (so small numbers keep their precision), and the lowest bit is
    flipped, as Segment's sampler describes it. tsub-js 2.0.1 feeds this the digest's hex text and
    gets ~0 (the deliberate difference "sample-path")."""
    text = json_stringify(value)
    digest = hashlib.md5(("undefined" if text is None else text).encode("utf-8", "surrogatepass")).digest()
    significand = int.from_bytes(digest[:8], "big")
    exponent = -64
    zeros = 64 - significand.bit_length()
    if zeros:
        exponent -= zeros
        refill = int.from_bytes(digest[8:], "big") >> (64 - zeros)
        significand = ((significand << zeros) | refill) & (2**64 - 1)
    significand ^= 1
    return math.ldexp(float(significand), exponent)


def sample_keeps(event: Any, percent: float, path: str | None, random: Callable[[], float]) -> bool:
    """Whether a sample filter of `percent` (a fraction) keeps the event (tsub's sampleEvent)."""
    if percent <= 0:
        return False
    if percent >= 1:
        return True
    if not path:
        return random() <= percent
    return consistent_fraction(get(event, path)) < percent
