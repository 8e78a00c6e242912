"""The spec cases in tests/data are unedited copies of ../shared/spec, made by tests/data/regenerate.py.

When the specification changes, run `.venv/bin/python tests/data/regenerate.py` (it rewrites the
copies and SOURCES.json); `--check` says whether the copies are current. The suite itself never reads
../shared/spec.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType

DATA = Path(__file__).resolve().parent / "data"


def _regenerate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("regenerate", DATA / "regenerate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_copies_are_what_regenerate_wrote() -> None:
    manifest = json.loads((DATA / "SOURCES.json").read_text())
    for name, digest in manifest["copies"].items():
        actual = hashlib.sha256((DATA / name).read_bytes()).hexdigest()
        assert actual == digest, f"tests/data/{name} was edited by hand; run tests/data/regenerate.py"
    name = "segment-differential.jsonl"
    assert manifest["copies"][name] == manifest["sources"][name], "the differential cases are copied verbatim"


def test_cases_copy_holds_every_section_of_the_spec_document() -> None:
    regenerate = _regenerate()
    markdown = "\n".join(
        [
            "# Cases",
            "## Legend",
            "```json",
            '[{"id": "not-a-case"}]',
            "```",
            "## A. First",
            "text",
            "```json",
            '[{"id": "A-1"}, {"id": "A-2", "x": {"$undefined": true}}]',
            "```",
            "```json",
            '[{"id": "A-3"}]',
            "```",
            "## F2. Second",
            "```json",
            '{"field": {"type": "string"}}',
            "```",
            "```json",
            '[{"id": "F2-1"}]',
            "```",
            "",
        ]
    )
    sections = regenerate.sections_of(markdown)
    assert sections == {
        "A": [{"id": "A-1"}, {"id": "A-2", "x": {"$undefined": True}}, {"id": "A-3"}],
        "F2:fields": [{"field": {"type": "string"}}],
        "F2": [{"id": "F2-1"}],
    }
    assert json.loads(regenerate.cases_json(sections)) == sections


def test_differential_copy_has_every_case_kind() -> None:
    kinds: dict[str, int] = {}
    with (DATA / "segment-differential.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            kind = json.loads(line)["input"]["kind"]
            kinds[kind] = kinds.get(kind, 0) + 1
    assert kinds == {"fql": 600, "mapping": 400, "action": 400}
