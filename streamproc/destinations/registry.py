"""Finds a destination definition by its type name ("stackadapt", "tiktok-offline-conversions", "seg")."""

from __future__ import annotations

import importlib

from streamproc.destinations.base import Destination

__all__ = ["all_types", "get"]

# type -> module exposing DESTINATION; adding a partner is one line here plus its module.
_MODULES: dict[str, str] = {
    "stackadapt": "streamproc.destinations.stackadapt",
    "tiktok-offline-conversions": "streamproc.destinations.tiktok_offline",
    "seg": "streamproc.destinations.seg",
}

_loaded: dict[str, Destination] = {}


def all_types() -> tuple[str, ...]:
    """Every destination type streamproc knows, sorted."""
    return tuple(sorted(_MODULES))


def get(type: str) -> Destination:
    """The destination definition of `type`; KeyError (with the known types) when there is none."""
    destination = _loaded.get(type)
    if destination is not None:
        return destination
    module_name = _MODULES.get(type)
    if module_name is None:
        raise KeyError(f"unknown destination type {type!r}; known types: {', '.join(all_types())}")
    destination = importlib.import_module(module_name).DESTINATION
    if not isinstance(destination, Destination) or destination.type != type:
        raise KeyError(f"{module_name}.DESTINATION does not define destination type {type!r}")
    _loaded[type] = destination
    return destination
