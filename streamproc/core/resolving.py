"""What the mapping kit and its liquid renderer share: the bound on the strings one event's mapping
may build, and the resolver of a directive that fails whenever it runs.

Both live here, below `mapping` and `liquid`, so that the liquid renderer does not import the
mapping kit that loads it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streamproc.errors import MappingError

__all__ = ["MAX_STRING_LENGTH", "raising"]

MAX_STRING_LENGTH = 1_000_000
"""The longest string one event's mapping may build: an @replace or @template result, a liquid
filter's result or a template's output. Past it the mapping fails (and the event is dead-lettered)
before the string is built, so per-event work stays linear in the event whatever the mapping or the
event asks for (the $` of @replace, a date width of 300000000, an append doubled by a run of
assigns). Segment has no such bound (liquidjs counts up to 1e8 bytes in some filters only); below
it every result is Segment's, and no partner takes a field anywhere near this long."""


def raising(message: str) -> Callable[..., Any]:
    """A resolver that fails with `message` whenever it runs (Segment raises these when the directive
    is resolved, not when the mapping is validated); `problem` lets a configuration check name it."""

    def fail(*_args: Any) -> Any:
        raise MappingError(message)

    fail.problem = message  # type: ignore[attr-defined]
    return fail
