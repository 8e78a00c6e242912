"""Gives the destination checks the heavier modules they call (FQL, mapping kit, settings check)."""

from __future__ import annotations

__all__ = ["Collaborators"]


class Collaborators:
    """FQL, the mapping kit and the settings check, imported once per load (they are heavier modules)."""

    def __init__(self) -> None:
        from streamproc import filters, fql, mapping
        from streamproc.destinations import registry, runtime

        self.parse_trigger = fql.parse
        self.parse_filter = filters.parse_condition
        self.compile_mapping = mapping.compile
        self.mapping_problems = mapping.problems
        self.validate_settings = runtime.validate_settings
        self.registry = registry
