"""Records what Segment's mapping kit answers for the string-growing operations just below the bound.

    .venv/bin/python tests/data/bounded_cases.py [--oracle DIR]

Each case is a mapping and an event whose long values are written compactly (`"repeat": {"v":
["ab", 700]}` makes `v` the text "ab" 700 times, or a list when the value is a list); the results are
up to a million characters, so `bounded-cases.json` keeps each result's length and SHA-256 (of its
JSON with sorted keys) instead of the result. The suite (tests/core/test_bounds.py) reads the recorded
file and never runs Node.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "bounded-cases.json"
DEFAULT_ORACLE = HERE.parent.parent.parent.parent / "oracles" / "segment-oracle"

DATE = "2020-01-05T00:00:00Z"
CASES: list[dict[str, Any]] = [
    {"mapping": {"x": {"@liquid": '{{ t | date: "%500Y|%-3d|%_9m" }}'}}, "event": {"t": DATE}},
    {"mapping": {"x": {"@liquid": "{{ t | date: f }}"}}, "event": {"t": DATE, "f": "%99999Y"}},
    {"mapping": {"x": {"@liquid": "{{ t | date: f }}"}}, "event": {"t": DATE, "f": "%400000Y%400000m"}},
    {
        "mapping": {"x": {"@replace": {"pattern": "a", "replacement": "$`", "value": {"@path": "$.v"}}}},
        "repeat": {"v": ["a", 1000]},
    },
    {
        "mapping": {"x": {"@replace": {"pattern": "a", "replacement": "<$'>", "value": {"@path": "$.v"}}}},
        "repeat": {"v": ["ab", 700]},
    },
    {
        "mapping": {
            "x": {
                "@replace": {
                    "pattern": "A",
                    "replacement": "$`$&$'",
                    "ignorecase": True,
                    "global": True,
                    "value": {"@path": "$.v"},
                }
            }
        },
        "repeat": {"v": ["xa", 400]},
    },
    {
        "mapping": {
            "x": {"@replace": {"pattern": "a", "replacement": "bbbbbbbbb", "value": {"@path": "$.v"}}}
        },
        "repeat": {"v": ["a", 100000]},
    },
    {
        "mapping": {
            "x": {
                "@liquid": "{% assign y = a %}{% assign y = y | append: y %}{% assign y = y | append: y %}"
                "{% assign y = y | prepend: y %}{{ y }}"
            }
        },
        "repeat": {"a": ["z", 100000]},
    },
    {
        "mapping": {"x": {"@liquid": '{{ a | replace: "a", b }}'}},
        "repeat": {"a": ["a", 900], "b": ["b", 1000]},
    },
    {"mapping": {"x": {"@liquid": '{{ a | replace: "", "-" }}'}}, "repeat": {"a": ["abc", 1000]}},
    {
        "mapping": {"x": {"@liquid": '{{ a | replace_first: "a", b }}'}},
        "repeat": {"a": ["a", 9], "b": ["b", 999]},
    },
    {"mapping": {"x": {"@liquid": "{{ a | join: b }}"}}, "repeat": {"a": [["q"], 900], "b": [",", 1000]}},
    {
        "mapping": {"x": {"@liquid": "{{ a | truncate: 5, b }}"}},
        "event": {"a": "hello world"},
        "repeat": {"b": [".", 500000]},
    },
    {
        "mapping": {"x": {"@liquid": "{{ a | truncatewords: 1, b }}"}},
        "event": {"a": "hello world"},
        "repeat": {"b": [".", 5000]},
    },
    {"mapping": {"x": {"@liquid": "{{ a | url_encode }}"}}, "repeat": {"a": ["é/", 100000]}},
    {"mapping": {"x": {"@liquid": "{{ a | json: 4 }}"}}, "repeat": {"a": [[{"m": [2, 3]}], 1000]}},
    {"mapping": {"x": {"@liquid": "{{ a }}{{ a }}{{ a }}"}}, "repeat": {"a": ["q", 300000]}},
    {"mapping": {"x": {"@template": "{{a}}{{a}}{{a}}"}}, "repeat": {"a": ["q", 300000]}},
    {"mapping": {"x": {"@template": "{{{a}}}-{{a}}"}}, "repeat": {"a": ["q", 400000]}},
]


def event_of(case: dict[str, Any]) -> dict[str, Any]:
    """The case's event with its repeated values written out."""
    event = dict(case.get("event", {}))
    for key, (value, times) in case.get("repeat", {}).items():
        event[key] = value * times
    return event


def digest(output: Any) -> dict[str, Any]:
    text = json.dumps(output, sort_keys=True, ensure_ascii=False)
    return {"length": len(text), "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", type=Path, default=DEFAULT_ORACLE, help="default: %(default)s")
    args = parser.parse_args(argv)
    lines = [json.dumps({"kind": "mapping", "mapping": c["mapping"], "event": event_of(c)}) for c in CASES]
    answers = subprocess.run(
        ["node", "run.mjs"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        cwd=args.oracle,
        check=True,
    ).stdout.splitlines()
    recorded = []
    for case, line in zip(CASES, answers, strict=True):
        answer = json.loads(line)
        expected = {"error": answer["error"]} if "error" in answer else digest(answer["output"])
        recorded.append({**case, "expected": expected})
    OUT.write_text(json.dumps(recorded, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(HERE.parent.parent)}: {len(recorded)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
