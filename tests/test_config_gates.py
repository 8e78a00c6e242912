"""The gates' keys of a destination instance: integrations, integration_names, consent_categories,
filters; what the loader and `streamproc check` report about them, and the JSON Schema alike."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from streamproc.commands import check
from streamproc.config import FilterConfig, parse_config
from streamproc.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "schemas" / "config.schema.json").read_text())
SEG = {"apiKey": "abc8fb18-7559-4324-9921-a4b5015b4a1c"}


def seg(**extra: Any) -> dict[str, Any]:
    return {"id": "seg", "type": "seg", "settings": SEG, **extra}


def problems(dest: dict[str, Any], *, schema_too: bool = True) -> list[str]:
    """The loader's problems; the JSON Schema refuses the same (FQL aside, which it cannot read)."""
    with pytest.raises(ConfigError) as info:
        parse_config({"destinations": [dest]}, "cfg.yaml", {})
    if schema_too:
        assert not jsonschema.Draft202012Validator(SCHEMA).is_valid({"destinations": [dest]})
    return [str(p) for p in info.value.problems]


def test_the_gates_keys_are_read() -> None:
    data = {
        "destinations": [
            seg(
                integrations="ignore",
                integration_names=["Seg EU", "Seg EU"],
                consent_categories=["C0004", "Advertising", "ad_storage"],
                filters=[
                    {"if": "event = 'Test'", "drop": True},
                    {"if": "all", "sample": {"percent": 0.1, "path": "userId"}},
                    {"if": "all", "sample": {"percent": 0}},
                    {"if": "type = 'identify'", "drop_properties": ["traits.email", "context.ip"]},
                    {"if": "all", "allow_properties": ["properties.sku"]},
                ],
            )
        ]
    }
    jsonschema.Draft202012Validator(SCHEMA).validate(data)
    (dest,) = parse_config(data, "cfg.yaml", {}).destinations
    assert dest.integrations == "ignore"
    assert dest.integration_names == ("Seg EU",)
    assert dest.consent_categories == ("C0004", "Advertising", "ad_storage")
    assert dest.filters == (
        FilterConfig("event = 'Test'", "drop"),
        FilterConfig("all", "sample", percent=0.1, path="userId"),
        FilterConfig("all", "sample", percent=0.0),
        FilterConfig("type = 'identify'", "drop_properties", properties=("traits.email", "context.ip")),
        FilterConfig("all", "allow_properties", properties=("properties.sku",)),
    )


def test_by_default_the_integrations_object_applies_and_nothing_is_filtered() -> None:
    (dest,) = parse_config({"destinations": [seg()]}, "cfg.yaml", {}).destinations
    assert (dest.integrations, dest.integration_names, dest.consent_categories, dest.filters) == (
        "apply",
        (),
        (),
        (),
    )


def test_a_filter_whose_fql_does_not_parse_is_reported_with_its_key_path() -> None:
    filters = [{"if": "all", "drop": True}, {"if": "event = 'A' and", "drop": True}]
    found = problems(seg(filters=filters), schema_too=False)
    (problem,) = found
    assert problem.startswith("cfg.yaml: destinations[0].filters[1].if: FQL error at position 16: ")


@pytest.mark.parametrize(
    ("filters", "where", "words"),
    [
        ([{"drop": True}], "filters[0].if", "is required"),
        ([{"if": "all"}], "filters[0]", "needs exactly one of drop, sample"),
        ([{"if": "all", "drop": True, "sample": {"percent": 1}}], "filters[0]", "got drop, sample"),
        ([{"if": "all", "drop": False}], "filters[0].drop", "must be true"),
        ([{"if": "all", "sample": {"percent": 10}}], "filters[0].sample.percent", "at most 1"),
        ([{"if": "all", "sample": {"path": "userId"}}], "filters[0].sample", "needs percent"),
        ([{"if": "all", "sample": {"percent": 0.5, "path": "a..b"}}], "filters[0].sample.path", "field path"),
        ([{"if": "all", "drop_properties": []}], "filters[0].drop_properties", "at least one"),
        (
            [{"if": "all", "allow_properties": ["properties."]}],
            "filters[0].allow_properties[0]",
            "field path",
        ),
        ([{"if": "all", "drop": True, "iff": 1}], "filters[0].iff", "unknown key"),
        ({"if": "all"}, "filters", "must be a list"),
    ],
)
def test_malformed_filters_are_refused(filters: Any, where: str, words: str) -> None:
    (problem,) = problems(seg(filters=filters))
    assert problem.startswith(f"cfg.yaml: destinations[0].{where}: "), problem
    assert words in problem


def test_an_unknown_consent_category_format_is_refused() -> None:
    (problem,) = problems(seg(consent_categories=["C0004", "Data Sharing"]))
    assert problem.startswith(
        "cfg.yaml: destinations[0].consent_categories[1]: 'Data Sharing' is not a consent"
    )
    (problem,) = problems(seg(consent_categories="C0004"))
    assert "must be a list" in problem


def test_the_integrations_key_takes_apply_or_ignore() -> None:
    (problem,) = problems(seg(integrations="off"))
    assert problem.startswith("cfg.yaml: destinations[0].integrations: must be one of apply, ignore")


def test_more_than_fifty_subscriptions_warn_and_check_still_passes(tmp_path: Path) -> None:
    subs = [{"name": f"s{i}", "trigger": f'event = "E{i}"', "action": "track"} for i in range(51)]
    data = {"destinations": [seg(presets=False, subscriptions=subs)]}
    config = parse_config(data, "cfg.yaml", {})
    (warning,) = config.warnings
    assert str(warning).startswith("cfg.yaml: destinations[0].subscriptions: warning: 51 subscriptions")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    out = io.StringIO()
    assert check.run(argparse.Namespace(config=str(path)), out) == 0
    assert "warning: 51 subscriptions" in out.getvalue() and ": OK" in out.getvalue()
    fifty = {"destinations": [seg(presets=False, subscriptions=subs[:50])]}
    assert parse_config(fifty, "cfg.yaml", {}).warnings == ()


def test_check_shows_each_instances_gates(tmp_path: Path) -> None:
    data = {"destinations": [seg(consent_categories=["C0004"], filters=[{"if": "all", "drop": True}])]}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    out = io.StringIO()
    assert check.run(argparse.Namespace(config=str(path)), out) == 0
    assert "  gates: consent C0004; 1 filter" in out.getvalue()


def test_the_documented_gate_examples_load() -> None:
    """The YAML examples of docs/configuration.md's gates sections are valid configuration."""
    text = (REPO / "docs" / "configuration.md").read_text()
    section = text.split("### `destinations[].consent_categories`", 1)[1].split("\n## Subscriptions", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```yaml\n")[1:]]
    assert len(blocks) == 2
    instances = yaml.safe_load(blocks[0])["destinations"]
    settings = {"seg": SEG, "tiktok-offline-conversions": {"accessToken": "t", "eventSetID": "1"}}
    for dest in instances:
        dest["settings"] = settings[dest["type"]]
    instances.append(seg(id="filtered", **yaml.safe_load(blocks[1])))
    config = parse_config({"destinations": instances}, "docs", {})
    assert [len(d.filters) for d in config.destinations] == [0, 0, 4]
