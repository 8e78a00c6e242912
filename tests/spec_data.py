"""Loads the worked cases and differential cases of the partner specification as Python data.

The cases are copies in tests/data, made from ../shared/spec by tests/data/regenerate.py."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from streamproc.core.js import UNDEFINED

DATA = Path(__file__).resolve().parent / "data"


def _undefined_hook(obj: dict[str, Any]) -> Any:
    if obj == {"$undefined": True}:
        return UNDEFINED
    return obj


@cache
def case_sections() -> dict[str, list[dict[str, Any]]]:
    """Cases of segment-cases.md by section letter ("A", "B", ..., "F1", "F2", "G", "H", "I"); the
    object blocks of a section are under "<letter>:fields". `{"$undefined": true}` becomes UNDEFINED."""
    text = (DATA / "segment-cases.json").read_text(encoding="utf-8")
    sections: dict[str, list[dict[str, Any]]] = json.loads(text, object_hook=_undefined_hook)
    return sections


def cases(section: str) -> list[dict[str, Any]]:
    return case_sections()[section]


@cache
def differential(kind: str) -> list[dict[str, Any]]:
    """Differential cases of one kind ("fql", "mapping", "action"): dicts with `input` and `expected`."""
    rows = []
    with (DATA / "segment-differential.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line, object_hook=_undefined_hook)
                if row["input"]["kind"] == kind:
                    rows.append(row)
    return rows


def normalise(value: Any) -> Any:
    """JSON-equal form: undefined object members dropped, undefined array slots as null."""
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items() if v is not UNDEFINED}
    if isinstance(value, list):
        return [None if v is UNDEFINED else normalise(v) for v in value]
    return value
