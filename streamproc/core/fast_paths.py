"""Every fast path of streamproc: a shortcut for the usual input beside the exact rules it must agree
with, the figure that keeps it, and the one switch that turns them all off.

Set `STREAMPROC_EXACT_ONLY=1` in a process's environment to take the exact way everywhere (same
requests, payloads, errors and selections; slower): to rule out a shortcut when an answer looks
wrong, or to compare. It is read once, when streamproc is imported. Each shortcut is checked
against its exact twin by tests (tests/core/test_fast_paths.py, tests/destinations/
test_build_fast_paths.py, the differential cases run both ways); `python -m bench.route
--fast-paths` measures what each one saves. docs/fast-paths.md lists them with their figures.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["ENVIRONMENT_VARIABLE", "EXACT_ONLY", "FAST_PATHS", "FastPath", "taken", "without"]

ENVIRONMENT_VARIABLE = "STREAMPROC_EXACT_ONLY"


@dataclass(frozen=True)
class FastPath:
    """One shortcut: its name, where it is, its exact twin, and why it is kept."""

    name: str
    fast: str
    exact: str
    figure: str
    """What turning it off costs on `python -m bench.route` (CPU per event over a corpus routed to
    every preset of every partner), or the measurement named."""


MAPPING_CODEGEN = "mapping.codegen"
MAP_AND_VALIDATE = "router.map_and_validate"
TRIGGER_INDEX = "router.trigger_index"
PAYLOAD_SHORTCUTS = "payload.type_shortcuts"
BUILD_SHORTCUTS = "build.shortcuts"
JS_DATE_PARSE = "js.date_parse"
JS_JSON = "js.json_bytes"
JS_FORM_ENCODE = "js.form_encode"
JS_URL_QUERY = "js.url_query_param"
SLOT_CONSTRUCTORS = "construct.slots"

FAST_PATHS: tuple[FastPath, ...] = (
    FastPath(
        MAPPING_CODEGEN,
        "core.mapping.compile: generated Python for raw-object mappings",
        "the same mapping resolved by one closure per node (compile(m, codegen=False))",
        "+42% where the payload is mapped, then validated (a mapping or schema the one-function"
        " path cannot take); none measurable (-2% to +3%) where that path takes every payload, as"
        " it does for every preset",
    ),
    FastPath(
        MAP_AND_VALIDATE,
        "core.mapping.compile_validated: one generated function that maps and validates the usual payload",
        "map, then PayloadSchema.validate (Router(config, map_and_validate_in_one=False))",
        "+9% (8-9% in four runs)",
    ),
    FastPath(
        TRIGGER_INDEX,
        'router: triggers that are literal equalities (event = "X") looked up by field and value',
        "every trigger evaluated on every event",
        "+27% (23-29%)",
    ),
    FastPath(
        PAYLOAD_SHORTCUTS,
        "core.payload.PayloadSchema: a value of a class that needs no work is taken as it is",
        "every value through the full checks (PayloadSchema(fields, fast=False))",
        "+50% (50-53%)",
    ),
    FastPath(
        BUILD_SHORTCUTS,
        "destinations: StackAdapt's and TikTok's `build` (a form template, ASCII phones hashed at once)",
        "each action's `build_exact` (CompiledAction(destination, action, fast=False))",
        "+228% (210-234%)",
    ),
    FastPath(
        JS_DATE_PARSE,
        "core.js.date_parse: Segment's timestamp shapes read without V8's tokeniser",
        "core.js.date_parse_exact",
        "+37% (36-38%)",
    ),
    FastPath(
        JS_JSON,
        "core.js.json_bytes: orjson's output, searched for what JSON.stringify writes differently",
        "core.js.json_bytes_exact (JSON.stringify's walk in Python)",
        "+155% (148-163%)",
    ),
    FastPath(
        JS_FORM_ENCODE,
        "core.js.form_encode, FormTemplate.encode: ASCII pairs escaped in one pass",
        "core.js.form_encode_exact, FormTemplate.encode_exact (one name or value at a time)",
        "+23% (21-24%)",
    ),
    FastPath(
        JS_URL_QUERY,
        "core.js.url_query_param: a plain URL without the key answered at once, plain keys undecoded",
        "core.js.url_query_param_exact (every key and value decoded)",
        "+5% (4-6%; -1% to +9% within a run: TikTok reads one URL per delivery)",
    ),
    FastPath(
        SLOT_CONSTRUCTORS,
        "destinations.base.fast_constructor: Request and Delivery stored through their slots",
        "the dataclasses' own __init__",
        "+3% (2.9-3.5%; 250-550 ns per Request or Delivery, measured per call)",
    ),
)

EXACT_ONLY: bool = os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")
"""True when the environment asks for the exact way everywhere (read once, at import)."""

OFF: set[str] = {p.name for p in FAST_PATHS} if EXACT_ONLY else set()
"""The fast paths not taken: all of them under STREAMPROC_EXACT_ONLY=1, else none (a benchmark may
turn some off for a while with `without`)."""


def taken(name: str) -> bool:
    """Whether the fast path `name` is taken by what is built or called now."""
    if name not in _NAMES:
        raise KeyError(f"no fast path {name!r}; one of {', '.join(sorted(_NAMES))}")
    return name not in OFF


@contextlib.contextmanager
def without(*names: str) -> Iterator[None]:
    """Within the block, the named fast paths are not taken: by routers, mappings and actions built
    there, and by the JavaScript helpers called there. For benchmarks that compare one fast path
    off against all on in one process."""
    unknown = set(names) - _NAMES
    if unknown:
        raise KeyError(f"no fast path {sorted(unknown)}; one of {', '.join(sorted(_NAMES))}")
    added = set(names) - OFF
    OFF.update(added)
    try:
        yield
    finally:
        OFF.difference_update(added)


_NAMES = frozenset(p.name for p in FAST_PATHS)
