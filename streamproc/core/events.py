"""Decodes raw Segment events and reads the keys the router needs from them (message id, ordering key)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from streamproc.core.js import number_to_string
from streamproc.errors import DecodeError

__all__ = ["decode_json", "kind_in_words", "message_id", "ordering_key"]

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


def decode_json(raw: bytes | bytearray | memoryview | str) -> dict[str, Any]:
    """Parse one JSON event; anything that is not a JSON object raises DecodeError."""
    try:
        event = _loads(raw)
    except _JSONDecodeError as exc:
        raise DecodeError(f"not valid JSON: {exc}") from None
    if type(event) is not dict:
        raise DecodeError(f"a Segment event must be a JSON object, got {kind_in_words(event)}")
    return event


def kind_in_words(value: object, *, a_list: str = "an array", a_mapping: str | None = None) -> str:
    """What a decoded JSON or YAML value is, in words for an error message ('a string', 'null',
    ...); a list and a mapping are worded as the reader knows them (JSON: an array; a config file:
    a list, a mapping). Without `a_mapping`, a mapping is named by its type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return a_list
    if isinstance(value, dict) and a_mapping is not None:
        return a_mapping
    return type(value).__name__


def message_id(event: Mapping[str, Any]) -> str | None:
    """The event's messageId as a string (numbers are accepted), or None when it has none."""
    value = event.get("messageId")
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return number_to_string(value)
    return None


def ordering_key(event: Mapping[str, Any]) -> str | None:
    """The per-user ordering key: userId, else anonymousId; None when the event has neither."""
    for name in ("userId", "anonymousId"):
        value = event.get(name)
        if isinstance(value, str):
            if value:
                return value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            return number_to_string(value)
    return None
