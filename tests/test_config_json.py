"""Reading configuration JSON: a key given twice is refused with its key path, as in YAML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamproc.config import load_config
from streamproc.config.strict_json import load_json
from streamproc.errors import ConfigError

_DUPLICATE = "duplicate key; JSON readers keep only the last, so remove or merge one"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_json(text, "c.json")
    return [str(p) for p in info.value.problems]


def test_a_key_given_twice_is_refused_with_its_key_path(tmp_path: Path) -> None:
    # A second `kafka` object would otherwise replace the first without a word.
    path = tmp_path / "config.json"
    path.write_text('{"kafka": {"topics": ["a"]}, "log": {}, "kafka": {"topics": ["b"]}}')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert [str(p) for p in info.value.problems] == [f"{path}: kafka: {_DUPLICATE}"]


def test_every_duplicate_is_reported_in_nested_objects_and_list_items() -> None:
    text = json.dumps({"destinations": [{"id": "a", "type": "seg"}], "limits": {"x": 1}})
    text = text.replace('"type": "seg"', '"type": "seg", "id": "b"').replace('"x": 1', '"x": 1, "x": 2')
    assert problems(text) == [
        f"c.json: destinations[0].id: {_DUPLICATE}",
        f"c.json: limits.x: {_DUPLICATE}",
    ]


def test_equal_keys_in_different_objects_are_not_duplicates() -> None:
    text = '{"a": {"id": 1, "v": [{"id": 2}, {"id": 3}]}, "b": {"id": 1}}'
    assert load_json(text, "c.json") == {"a": {"id": 1, "v": [{"id": 2}, {"id": 3}]}, "b": {"id": 1}}


def test_json_that_does_not_parse_names_the_line() -> None:
    (problem,) = problems('{\n  "a": [1, 2\n}')
    assert problem.startswith("c.json: line 3: not valid JSON: ")
