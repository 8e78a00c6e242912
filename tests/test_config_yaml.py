"""Reading configuration YAML: duplicate keys and alias expansion are refused before anything is built."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.config import load_config
from streamproc.config.strict_yaml import MAX_ALIAS_EXPANSION, load_yaml
from streamproc.errors import ConfigError


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_yaml(text, "c.yaml")
    return [str(p) for p in info.value.problems]


def test_aliases_and_merge_keys_within_the_bound_load_as_usual() -> None:
    text = (
        "limits: &limits {concurrency: 4, rate: 10}\n"
        "a: {<<: *limits, rate: 20}\n"  # a merge key overriding one value is not a duplicate
        "b: *limits\n"
        "c: [*limits, *limits]\n"
    )
    data = load_yaml(text, "c.yaml")
    assert data["a"] == {"concurrency": 4, "rate": 20}
    assert data["b"] == data["c"][1] == {"concurrency": 4, "rate": 10}


def test_an_alias_bomb_fails_at_once_with_the_bound() -> None:
    # Seven levels of ten: ten million values from eight short lines.
    lines = ['l0: &l0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 8):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]")
    (problem,) = problems("\n".join(lines))
    assert problem.startswith("c.yaml: YAML aliases expand to ")
    assert f"at most {MAX_ALIAS_EXPANSION} are allowed" in problem


def test_the_configuration_loader_refuses_an_alias_bomb(tmp_path: Path) -> None:
    # Six levels of ten under an unknown key: a million values, refused before they are walked.
    lines = ['x0: &l0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 6):
        lines.append(f"x{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]")
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(["destinations: []", *lines]))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert (
        problem.message.startswith("YAML aliases expand to ")
        and "at most 10000 are allowed" in problem.message
    )


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    assert problems("a: &a [1, *a]\n") == [
        "c.yaml: a[1]: an alias refers to a node that contains it (line 1)"
    ]


def test_keys_equal_as_yaml_reads_them_are_duplicates() -> None:
    # `on` and `true` are the same boolean key to YAML 1.1; "1" and 1 are different keys.
    assert problems("x:\n  on: 1\n  true: 2\n  '1': 3\n  2: 4\n  '2': 5\n") == [
        "c.yaml: x.True: duplicate key (lines 2 and 3); YAML keeps only the last, so remove or merge one"
    ]


def test_duplicates_in_list_items_and_anchored_blocks_are_found() -> None:
    text = "destinations:\n  - id: a\n    type: seg\n    id: b\n"
    assert problems(text) == [
        "c.yaml: destinations[0].id: duplicate key (lines 2 and 4); YAML keeps only the last, so remove or"
        " merge one"
    ]


def test_yaml_that_does_not_parse_names_line_and_column() -> None:
    (problem,) = problems("a: [1, 2\nb: 3\n")
    assert problem.startswith("c.yaml: line 2, column 2: not valid YAML: ")


def test_an_empty_document_is_none() -> None:
    assert load_yaml("# nothing\n", "c.yaml") is None
