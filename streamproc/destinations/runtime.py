"""Runs one destination action on a mapped payload: validate against its fields, then build requests."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from streamproc.core.jsvalues import json_stringify
from streamproc.core.payload import PayloadSchema
from streamproc.destinations.base import Action, BuildContext, Destination, Request, Skip
from streamproc.errors import PayloadValidationError

__all__ = ["CompiledAction", "js_json", "validate_settings"]


class CompiledAction:
    """An action of a destination with its payload schema compiled once; `run` is per event."""

    __slots__ = ("_build", "_validate", "action", "destination", "schema")

    def __init__(self, destination: Destination, action_key: str) -> None:
        action = destination.actions.get(action_key)
        if action is None:
            known = ", ".join(sorted(destination.actions))
            raise KeyError(f"{destination.type} has no action {action_key!r}; its actions are: {known}")
        self.destination = destination
        self.action: Action = action
        self.schema = PayloadSchema(action.fields)
        self._validate = self.schema.validate
        self._build = action.build

    def validate(self, resolved_payload: Mapping[str, Any]) -> dict[str, Any]:
        """The payload the action's build function receives (empty values removed, types coerced)."""
        return self.schema.validate(resolved_payload)

    def run(self, resolved_payload: Mapping[str, Any], ctx: BuildContext) -> list[Request] | Skip:
        """Validate, then build. Raises PayloadValidationError / IntegrationError like Segment's runtime."""
        return self._build(self._validate(resolved_payload), ctx)


_settings_schemas: dict[str, tuple[Mapping[str, Any], PayloadSchema]] = {}


def validate_settings(destination: Destination, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings checked against the destination's setting fields (Segment's authentication fields),
    then its own `normalize_settings`. Unknown keys are dropped.

    Unlike Segment, an empty string or null for a required setting counts as missing: a worker that
    would send every event with an empty credential is better stopped at start-up."""
    cached = _settings_schemas.get(destination.type)
    if cached is not None and cached[0] is destination.settings:
        schema = cached[1]
    else:
        schema = PayloadSchema(destination.settings)
        _settings_schemas[destination.type] = (destination.settings, schema)
    try:
        checked = schema.validate(dict(settings))
    except PayloadValidationError as exc:
        raise PayloadValidationError(f"{destination.type} settings: {exc.message}") from None
    if destination.normalize_settings is not None:
        checked = destination.normalize_settings(checked)
    return checked


class _NotPlain(Exception):
    """A number orjson would print differently from JavaScript."""


def _js_numbers(value: Any) -> Any:
    cls = value.__class__
    if cls is float:
        if value.is_integer():
            if abs(value) > 9007199254740992.0:
                raise _NotPlain
            return int(value)
        if abs(value) < 1e-4 or abs(value) >= 1e16:
            # orjson and JavaScript choose between decimal and exponent forms at other points
            # (JavaScript writes 0.0000015 where orjson writes 1.5e-6).
            raise _NotPlain
        return value
    if cls is int:
        if abs(value) > 9007199254740992:
            raise _NotPlain
        return value
    if cls is dict:
        return {k: _js_numbers(v) for k, v in value.items()}
    if cls is list:
        return [_js_numbers(v) for v in value]
    return value


# orjson writes strings, ints within 2**53 and finite floats as JavaScript does, except integral
# floats ("1.0", "-0.0", "1e+16") and exponent forms JavaScript writes out ("1e-7" is the same,
# "1.5e-6" is not). Each of those contains ".0" before a delimiter, "e+" (after a digit) or "e-" and
# a digit; a string holding the same text only sends the body down the exact path.
_INTEGRAL_FLOAT = re.compile(rb"\.0[,\]}]").search
_POSITIVE_EXPONENT = re.compile(rb"\de\+").search
_NEGATIVE_EXPONENT = re.compile(rb"e-\d").search


def _js_json_exact(value: Any) -> bytes:
    try:
        return orjson.dumps(_js_numbers(value))
    except (TypeError, _NotPlain):
        text = json_stringify(value) or ""
        return text.encode("utf-8", "surrogatepass")


def js_json(value: Any) -> bytes:
    """`JSON.stringify(value)` as UTF-8 bytes. orjson writes the same text as JavaScript for strings,
    ints within 2**53 and most floats; its output is searched for the float forms JavaScript prints
    differently, so the usual body is never walked in Python. Those, huge ints, undefined members
    and lone surrogates take the exact path."""
    cls = value.__class__
    if cls is not dict and cls is not list:
        return _js_json_exact(value)
    try:
        out = orjson.dumps(value, option=orjson.OPT_STRICT_INTEGER)
    except TypeError:
        return _js_json_exact(value)
    if _INTEGRAL_FLOAT(out) or (b"+" in out and _POSITIVE_EXPONENT(out)) or _NEGATIVE_EXPONENT(out):
        return _js_json_exact(value)
    return out
