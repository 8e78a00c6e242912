"""Runs one destination action on a mapped payload: validate against its fields, then build requests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamproc.core import fast_paths
from streamproc.core.payload import PayloadSchema
from streamproc.destinations.base import Action, BuildContext, BuildFn, Destination, Request, Skip

__all__ = ["CompiledAction", "validate_settings"]


class CompiledAction:
    """An action of a destination with its payload schema compiled once; `run` is per event.
    `fast=False` validates and builds without the shortcuts for the usual input (same outcome), as
    under STREAMPROC_EXACT_ONLY=1 (core.fast_paths)."""

    __slots__ = ("_build", "_validate", "action", "destination", "schema")

    def __init__(self, destination: Destination, action_key: str, *, fast: bool = True) -> None:
        action = destination.actions.get(action_key)
        if action is None:
            known = ", ".join(sorted(destination.actions))
            raise KeyError(f"{destination.type} has no action {action_key!r}; its actions are: {known}")
        self.destination = destination
        self.action: Action = action
        self.schema = PayloadSchema(action.fields, fast=fast)
        self._validate = self.schema.validate
        shortcuts = fast and fast_paths.taken(fast_paths.BUILD_SHORTCUTS)
        self._build = action.build if shortcuts or action.build_exact is None else action.build_exact

    @property
    def build(self) -> BuildFn:
        """The action's build function as `run` calls it (with or without its shortcuts)."""
        return self._build

    def validate(self, resolved_payload: Mapping[str, Any]) -> dict[str, Any]:
        """The payload the action's build function receives (empty values removed, types coerced)."""
        return self.schema.validate(resolved_payload)

    def run(self, resolved_payload: Mapping[str, Any], ctx: BuildContext) -> list[Request] | Skip:
        """Validate, then build. Raises PayloadValidationError like Segment's runtime."""
        return self._build(self._validate(resolved_payload), ctx)


_settings_schemas: dict[str, tuple[Mapping[str, Any], PayloadSchema]] = {}


def validate_settings(destination: Destination, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings checked against the destination's setting fields (Segment's authentication fields),
    then its own `normalize_settings`. Unknown keys are dropped.

    Unlike Segment, an empty string or null for a required setting counts as missing: a worker that
    would send every event with an empty credential is better stopped at start-up.

    Raises PayloadValidationError with Segment's message, its `field` naming the setting the first
    problem is about, or the destination's SettingsError."""
    cached = _settings_schemas.get(destination.type)
    if cached is not None and cached[0] is destination.settings:
        schema = cached[1]
    else:
        schema = PayloadSchema(destination.settings)
        _settings_schemas[destination.type] = (destination.settings, schema)
    checked = schema.validate(dict(settings))
    if destination.normalize_settings is not None:
        checked = destination.normalize_settings(checked)
    return checked
