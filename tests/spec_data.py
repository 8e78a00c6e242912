"""Loads the worked cases and differential cases of the partner specification as Python data."""

from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from streamproc.core.jsvalues import UNDEFINED

REPO = Path(__file__).resolve().parent.parent
SPEC_DIR = Path(os.environ.get("STREAMPROC_SPEC_DIR", REPO.parent / "shared" / "spec"))


def _undefined_hook(obj: dict[str, Any]) -> Any:
    if obj == {"$undefined": True}:
        return UNDEFINED
    return obj


def _require(name: str) -> Path:
    path = SPEC_DIR / name
    if not path.exists():
        pytest.skip(f"specification file {path} not found (set STREAMPROC_SPEC_DIR)")
    return path


@cache
def case_sections() -> dict[str, list[dict[str, Any]]]:
    """Cases of segment-cases.md by section letter ("A", "B", ..., "F1", "F2", "G", "H", "I").
    `{"$undefined": true}` becomes UNDEFINED."""
    text = _require("segment-cases.md").read_text(encoding="utf-8")
    sections: dict[str, list[dict[str, Any]]] = {}
    for block in re.split(r"^(?=## [A-Z][0-9]?\. )", text, flags=re.M)[1:]:
        letter = block[3 : block.index(".")]
        for body in re.findall(r"^```json\n(.*?)^```", block, re.M | re.S):
            data = json.loads(body, object_hook=_undefined_hook)
            if isinstance(data, list):
                sections.setdefault(letter, []).extend(data)
            else:
                sections.setdefault(letter + ":fields", []).append(data)
    return sections


def cases(section: str) -> list[dict[str, Any]]:
    return case_sections().get(section, [])


@cache
def differential(kind: str) -> list[dict[str, Any]]:
    """Differential cases of one kind ("fql", "mapping", "action"): dicts with `input` and `expected`."""
    rows = []
    with _require("segment-differential.jsonl").open(encoding="utf-8") as fh:
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
