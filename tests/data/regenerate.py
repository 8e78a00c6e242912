"""Copies the partner-specification cases the tests use from ../shared/spec into tests/data.

    .venv/bin/python tests/data/regenerate.py [--spec DIR] [--check]

Writes `segment-cases.json` (the JSON cases of segment-cases.md, by section letter), a verbatim copy
of `segment-differential.jsonl`, and `SOURCES.json` (SHA-256 of each source and each copy). With
`--check` nothing is written; the exit status is 1 when the copies differ from what the spec gives.
The test suite reads only these copies; tests/test_spec_copies.py checks them against SOURCES.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SPEC = HERE.parent.parent.parent / "shared" / "spec"
CASES_SOURCE = "segment-cases.md"
DIFFERENTIAL_SOURCE = "segment-differential.jsonl"
CASES_COPY = "segment-cases.json"
DIFFERENTIAL_COPY = "segment-differential.jsonl"
MANIFEST = "SOURCES.json"

_SECTION = re.compile(r"^(?=## [A-Z][0-9]?\. )", re.M)
_JSON_BLOCK = re.compile(r"^```json\n(.*?)^```", re.M | re.S)


def sections_of(markdown: str) -> dict[str, list[object]]:
    """The JSON blocks of a cases document by section ("A", "F1", ...): a block holding a list adds
    cases to its section, a block holding an object goes under "<section>:fields"."""
    sections: dict[str, list[object]] = {}
    for block in _SECTION.split(markdown)[1:]:
        letter = block[3 : block.index(".")]
        for body in _JSON_BLOCK.findall(block):
            data = json.loads(body)
            if isinstance(data, list):
                sections.setdefault(letter, []).extend(data)
            else:
                sections.setdefault(letter + ":fields", []).append(data)
    return sections


def cases_json(sections: dict[str, list[object]]) -> str:
    """One case per line, so that a change in the spec shows as a readable diff."""
    parts = []
    for name, items in sections.items():
        rows = ",\n".join("  " + json.dumps(item, ensure_ascii=False, sort_keys=False) for item in items)
        parts.append(f"{json.dumps(name)}: [\n{rows}\n]")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _current(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def build(spec: Path) -> dict[str, bytes]:
    """File name in tests/data -> the bytes it must hold."""
    cases_md = (spec / CASES_SOURCE).read_bytes()
    differential = (spec / DIFFERENTIAL_SOURCE).read_bytes()
    cases = cases_json(sections_of(cases_md.decode("utf-8"))).encode("utf-8")
    manifest = {
        "sources": {CASES_SOURCE: _sha256(cases_md), DIFFERENTIAL_SOURCE: _sha256(differential)},
        "copies": {CASES_COPY: _sha256(cases), DIFFERENTIAL_COPY: _sha256(differential)},
    }
    return {
        CASES_COPY: cases,
        DIFFERENTIAL_COPY: differential,
        MANIFEST: (json.dumps(manifest, indent=2) + "\n").encode("utf-8"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="spec folder (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when a copy is stale")
    args = parser.parse_args(argv)
    files = build(args.spec)
    stale = [name for name, data in files.items() if _current(HERE / name) != data]
    if args.check:
        for name in stale:
            print(f"tests/data/{name} differs from what {args.spec} gives; run tests/data/regenerate.py")
        return 1 if stale else 0
    for name in stale:
        (HERE / name).write_bytes(files[name])
        print(f"wrote tests/data/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
