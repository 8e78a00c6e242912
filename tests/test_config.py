"""Configuration loading: sections, defaults, environment variables, presets, every problem at once."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
import pytest

from streamproc.config import (
    BreakerPolicy,
    DestinationLimits,
    Key,
    Limits,
    LogConfig,
    MetricsConfig,
    RetryPolicy,
    interpolate,
    load_config,
    parse_config,
)
from streamproc.errors import ConfigError, SettingsError

REPO = Path(__file__).resolve().parent.parent


def fake_destination(**overrides: Any) -> Any:
    """A minimal destination type "fake" with one action and two presets, for config and router tests."""
    from streamproc.core.fields import Field
    from streamproc.destinations.base import Action, Destination, Preset, Request, Skip

    def build(payload: Mapping[str, Any], ctx: Any) -> Any:
        if payload.get("skip"):
            return Skip("asked to skip")
        body = json.dumps(dict(payload), sort_keys=True).encode()
        return [Request("POST", f"{ctx.endpoint}/send?key={ctx.settings['key']}", {"x": "1"}, body)]

    def normalize(settings: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(settings)
        if out.get("key") == "bad":
            raise SettingsError("key", "must not be 'bad'")
        return out

    fields = {
        "name": Field(label="Name", required=True, default={"@path": "$.event"}),
        "user": Field(label="User", default={"@path": "$.userId"}),
        "skip": Field(label="Skip", type="boolean"),
    }
    action = Action("send", "Send", "Send it", fields, build)
    defaults = {"name": {"@path": "$.event"}, "user": {"@path": "$.userId"}}
    params: dict[str, Any] = {
        "type": "fake",
        "name": "Fake",
        "endpoint": "https://fake.example",
        "settings": {"key": Field(label="Key", required=True), "region": Field(label="Region")},
        "actions": {"send": action},
        "presets": (
            Preset("Signed Up", 'event = "Signed Up"', "send", defaults),
            Preset("Pages", 'type = "page"', "send", {**defaults, "name": "page"}),
        ),
        "normalize_settings": normalize,
    }
    params.update(overrides)
    return Destination(**params)


def register_fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Register the "fake" destination type (one action, two presets) for this test."""
    from streamproc.destinations import registry

    dest = fake_destination()
    monkeypatch.setitem(registry._MODULES, "fake", "unused")
    monkeypatch.setitem(registry._loaded, "fake", dest)
    return dest


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    return register_fake(monkeypatch)


def problems(data: Any, env: Mapping[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "cfg.yaml", env or {})
    return [str(p) for p in info.value.problems]


def fake_dest(**extra: Any) -> dict[str, Any]:
    return {"id": "f1", "type": "fake", "settings": {"key": "k"}, **extra}


def test_minimal_config_has_safe_defaults(fake: Any) -> None:
    config = parse_config({"destinations": [fake_dest()]}, "cfg.yaml", {})
    assert config.kafka is None
    assert config.limits == Limits()
    assert config.metrics == MetricsConfig()
    assert config.log == LogConfig()
    assert config.input.format == "json"
    (dest,) = config.destinations
    assert dest.endpoint == "https://fake.example"
    assert dest.ordering == "none"
    assert dest.limits == DestinationLimits()
    assert dest.limits.retry == RetryPolicy() and dest.limits.breaker == BreakerPolicy()
    assert dest.subscriptions == ()  # the fake type does not enable presets by default


def test_every_section_is_read(fake: Any) -> None:
    data = {
        "kafka": {
            "bootstrap_servers": ["b1:9092", "b2:9092"],
            "topics": ["events"],
            "group_id": "g",
            "dead_letter_topic": "events.dead",
            "client": {"security.protocol": "SASL_SSL", "socket.keepalive.enable": True, "retries": 3},
        },
        "input": {"format": "avro", "schema_registry_url": "http://registry:8081"},
        "limits": {"max_in_flight_events": 100, "resume_in_flight_events": 10, "commit_interval": 1},
        "metrics": {"port": 9000, "enabled": False},
        "log": {"format": "json", "level": "WARN"},
        "destinations": [
            fake_dest(
                endpoint="http://127.0.0.1:8080/",
                ordering="key",
                limits={"concurrency": 4, "rate": 50, "retry": {"max_attempts": 3}, "breaker": {"window": 5}},
            )
        ],
    }
    config = parse_config(data, "cfg.yaml", {})
    assert config.kafka is not None
    assert config.kafka.bootstrap_servers == "b1:9092,b2:9092"
    assert config.kafka.dead_letter_topic == "events.dead"
    assert dict(config.kafka.client) == {
        "security.protocol": "SASL_SSL",
        "socket.keepalive.enable": "true",
        "retries": "3",
    }
    assert config.input.schema_registry_url == "http://registry:8081"
    assert config.limits.max_in_flight_events == 100 and config.limits.commit_interval == 1.0
    assert config.metrics == MetricsConfig(port=9000, enabled=False)
    assert config.log == LogConfig(format="json", level="warning")
    dest = config.destinations[0]
    assert dest.endpoint == "http://127.0.0.1:8080"
    assert dest.ordering == "key"
    assert dest.limits.concurrency == 4 and dest.limits.rate == 50.0
    assert dest.limits.retry.max_attempts == 3 and dest.limits.retry.budget == 300.0
    assert dest.limits.breaker.window == 5.0


def test_config_values_are_frozen(fake: Any) -> None:
    config = parse_config({"destinations": [fake_dest()]}, "cfg.yaml", {})
    with pytest.raises(AttributeError):
        config.limits.max_in_flight_events = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.destinations[0].settings["key"] = "x"  # type: ignore[index]


def test_dead_letter_topic_defaults_from_the_input_topic() -> None:
    config = parse_config({"kafka": {"bootstrap_servers": "k:9092", "topics": "a,b"}}, "cfg.yaml", {})
    assert config.kafka is not None
    assert config.kafka.topics == ("a", "b")
    assert config.kafka.dead_letter_topic == "a.dlq"


def test_environment_variables_are_interpolated(fake: Any) -> None:
    data = {
        "metrics": {"port": "${PORT}", "enabled": "${METRICS:-true}"},
        "destinations": [fake_dest(settings={"key": "${KEY}", "region": "eu-${REGION:-west}"})],
    }
    config = parse_config(data, "cfg.yaml", {"PORT": "9100", "KEY": "s3cret"})
    assert config.metrics.port == 9100 and config.metrics.enabled is True
    assert dict(config.destinations[0].settings) == {"key": "s3cret", "region": "eu-west"}


def test_interpolation_forms() -> None:
    env = {"A": "1", "EMPTY": ""}
    assert interpolate("x${A}y", env) == ("x1y", [])
    assert interpolate("${EMPTY:-d}", env)[0] == "d"
    assert interpolate("${EMPTY-d}", env)[0] == ""
    assert interpolate("${MISSING-d}", env)[0] == "d"
    assert interpolate("$${A}", env)[0] == "${A}"
    assert interpolate("${MISSING}", env)[1] == ["environment variable MISSING is not set"]
    assert interpolate("${1A}", env)[1]


def test_a_missing_variable_names_the_key(fake: Any) -> None:
    found = problems({"destinations": [fake_dest(settings={"key": "${API_KEY}"})]})
    assert "cfg.yaml: destinations[0].settings.key: environment variable API_KEY is not set" in found


def test_a_missing_variable_does_not_hide_other_settings_problems(fake: Any) -> None:
    found = problems({"destinations": [fake_dest(settings={"region": "${REGION}"})]})
    assert found == [
        "cfg.yaml: destinations[0].settings.key: The root value is missing the required field 'key'.",
        "cfg.yaml: destinations[0].settings.region: environment variable REGION is not set",
    ]


def test_a_number_from_the_environment_must_be_a_number(fake: Any) -> None:
    found = problems({"metrics": {"port": "${PORT}"}}, {"PORT": "http"})
    assert found == ["cfg.yaml: metrics.port: must be an integer, got 'http' from the environment"]


def test_literal_strings_are_not_numbers() -> None:
    assert problems({"metrics": {"port": "9464"}}) == [
        "cfg.yaml: metrics.port: must be an integer, got a string"
    ]


def test_unknown_keys_get_a_did_you_mean_hint(fake: Any) -> None:
    found = problems(
        {
            "limit": {},
            "metrics": {"prot": 1},
            "destinations": [fake_dest(setings={}, subscriptions=[{"preset": "Pages", "triger": "x"}])],
        }
    )
    assert "cfg.yaml: limit: unknown key; did you mean 'limits'?" in found
    assert "cfg.yaml: metrics.prot: unknown key; did you mean 'port'?" in found
    assert "cfg.yaml: destinations[0].setings: unknown key; did you mean 'settings'?" in found
    assert "cfg.yaml: destinations[0].subscriptions[0].triger: unknown key; did you mean 'trigger'?" in found


def test_every_problem_is_reported_at_once(fake: Any) -> None:
    data = {
        "log": {"level": "loud"},
        "limits": {"poll_batch_size": 0},
        "destinations": [
            fake_dest(),
            fake_dest(
                settings={"key": "bad"},
                ordering="sorted",
                subscriptions=[
                    {"name": "a", "trigger": 'event = "A"', "action": "sned"},
                    {"name": "b", "trigger": "event ==== 1", "action": "send"},
                    {
                        "name": "c",
                        "trigger": 'event = "C"',
                        "action": "send",
                        "mapping": {"name": {"@nope": 1}},
                    },
                    {"preset": "Sign Up"},
                ],
            ),
            {"id": "x", "type": "stackadapp"},
        ],
    }
    found = problems(data)
    expected_prefixes = [
        "cfg.yaml: log.level: must be one of debug, info, warning, error, critical; got 'loud'",
        "cfg.yaml: limits.poll_batch_size: must be at least 1, got 0",
        "cfg.yaml: destinations[1].id: duplicate destination id 'f1' (first used at destinations[0])",
        "cfg.yaml: destinations[1].settings.key: must not be 'bad'",
        "cfg.yaml: destinations[1].ordering: must be one of none, key; got 'sorted'",
        "cfg.yaml: destinations[1].subscriptions[0].action: unknown action 'sned' of fake;"
        " did you mean 'send'?",
        "cfg.yaml: destinations[1].subscriptions[1].trigger: ",
        "cfg.yaml: destinations[1].subscriptions[2].mapping: ",
        "cfg.yaml: destinations[1].subscriptions[3].preset: unknown preset 'Sign Up' of fake;"
        " did you mean 'Signed Up'?",
        "cfg.yaml: destinations[2].type: unknown destination type 'stackadapp'; did you mean 'stackadapt'?",
    ]
    for prefix in expected_prefixes:
        assert any(p.startswith(prefix) for p in found), (prefix, found)
    assert len(found) == len(expected_prefixes), found


def test_missing_required_subscription_parts(fake: Any) -> None:
    found = problems({"destinations": [fake_dest(subscriptions=[{"mapping": {}}])]})
    assert any(p.startswith("cfg.yaml: destinations[0].subscriptions[0].name: is required") for p in found)
    assert any(p.startswith("cfg.yaml: destinations[0].subscriptions[0].trigger: is required") for p in found)
    assert any(p.startswith("cfg.yaml: destinations[0].subscriptions[0].action: is required") for p in found)


def test_settings_are_checked_by_the_destination(fake: Any) -> None:
    found = problems({"destinations": [fake_dest(settings={})]})
    assert len(found) == 1 and found[0].startswith("cfg.yaml: destinations[0].settings")
    assert "key" in found[0]


def test_unknown_settings_get_a_hint(fake: Any) -> None:
    found = problems({"destinations": [fake_dest(settings={"key": "k", "regoin": "eu"})]})
    assert found == ["cfg.yaml: destinations[0].settings.regoin: unknown key; did you mean 'region'?"]


def test_a_settings_problem_names_the_setting_even_when_its_message_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamproc.core.fields import Field
    from streamproc.destinations import registry

    # A setting without a label is described by its JSON pointer ("The value at /count ..."), the
    # way Segment words it; the problem still points at the setting itself.
    settings = {"key": Field(label="Key", required=True), "count": Field(label="", type="integer")}
    monkeypatch.setitem(registry._MODULES, "fake", "unused")
    monkeypatch.setitem(registry._loaded, "fake", fake_destination(settings=settings))
    found = problems({"destinations": [fake_dest(settings={"key": "k", "count": "many"})]})
    assert found == [
        "cfg.yaml: destinations[0].settings.count:"
        " The value at /count must be an integer but it was a string."
    ]


def test_the_first_of_several_settings_problems_names_the_setting(fake: Any) -> None:
    found = problems({"destinations": [fake_dest(settings={"region": ["eu", "us"]})]})
    assert found == [
        "cfg.yaml: destinations[0].settings.key: The root value is missing the required field 'key'."
        " Region must be a string but it was an array."
    ]


def test_mapping_is_merged_over_the_action_defaults(fake: Any) -> None:
    sub = {
        "name": "big",
        "trigger": 'event = "Order Completed"',
        "action": "send",
        "mapping": {"name": "order"},
    }
    config = parse_config({"destinations": [fake_dest(subscriptions=[sub])]}, "cfg.yaml", {})
    (s,) = config.destinations[0].subscriptions
    assert dict(s.mapping) == {"name": "order", "user": {"@path": "$.userId"}}
    assert s.enabled and s.preset is None


def test_defaults_false_keeps_the_mapping_alone(fake: Any) -> None:
    sub = {
        "name": "n",
        "trigger": 'event = "A"',
        "action": "send",
        "mapping": {"name": "x"},
        "defaults": False,
    }
    config = parse_config({"destinations": [fake_dest(subscriptions=[sub])]}, "cfg.yaml", {})
    assert dict(config.destinations[0].subscriptions[0].mapping) == {"name": "x"}


def test_presets_true_enables_every_preset(fake: Any) -> None:
    config = parse_config({"destinations": [fake_dest(presets=True)]}, "cfg.yaml", {})
    subs = config.destinations[0].subscriptions
    assert [(s.name, s.preset, s.trigger) for s in subs] == [
        ("Signed Up", "Signed Up", 'event = "Signed Up"'),
        ("Pages", "Pages", 'type = "page"'),
    ]
    assert subs[1].mapping["name"] == "page"


def test_presets_by_name_and_a_preset_override(fake: Any) -> None:
    data = fake_dest(
        presets=["Pages"],
        subscriptions=[
            {"preset": "Signed Up", "mapping": {"user": "fixed"}},
            {"preset": "Pages", "enabled": False},
        ],
    )
    config = parse_config({"destinations": [data]}, "cfg.yaml", {})
    subs = config.destinations[0].subscriptions
    assert [(s.name, s.enabled) for s in subs] == [("Pages", False), ("Signed Up", True)]
    assert dict(subs[1].mapping) == {"name": {"@path": "$.event"}, "user": "fixed"}


def test_a_preset_subscription_can_be_renamed_and_retriggered(fake: Any) -> None:
    sub = {"preset": "Signed Up", "name": "Registrations", "trigger": 'event = "Registered"'}
    config = parse_config({"destinations": [fake_dest(presets=True, subscriptions=[sub])]}, "cfg.yaml", {})
    assert [(s.name, s.trigger) for s in config.destinations[0].subscriptions] == [
        ("Registrations", 'event = "Registered"'),
        ("Pages", 'type = "page"'),
    ]


def test_a_preset_cannot_change_its_action(fake: Any) -> None:
    found = problems({"destinations": [fake_dest(subscriptions=[{"preset": "Pages", "action": "other"}])]})
    assert found == [
        "cfg.yaml: destinations[0].subscriptions[0].action: preset 'Pages' uses action 'send', not 'other'"
    ]


def test_duplicate_subscription_names(fake: Any) -> None:
    subs = [{"name": "Pages", "trigger": 'type = "page"', "action": "send"}]
    found = problems({"destinations": [fake_dest(presets=True, subscriptions=subs)]})
    assert len(found) == 1
    assert found[0].startswith(
        "cfg.yaml: destinations[0].subscriptions[0].name: duplicate subscription name 'Pages'"
    )


def test_kafka_settings_owned_by_the_worker_are_refused() -> None:
    found = problems({"kafka": {"bootstrap_servers": "k:9092", "topics": ["t"], "client": {"group.id": "x"}}})
    assert found == ["cfg.yaml: kafka.client.group.id: is set by streamproc; use kafka.group_id"]


def test_limits_must_be_consistent() -> None:
    found = problems(
        {
            "limits": {"max_in_flight_events": 10, "resume_in_flight_events": 10},
            "destinations": [],
        }
    )
    assert found == ["cfg.yaml: limits.resume_in_flight_events: must be below max_in_flight_events (10)"]
    assert (
        parse_config({"limits": {"max_in_flight_events": 100}}, "c", {}).limits.resume_in_flight_events == 50
    )


def test_avro_needs_a_schema() -> None:
    assert problems({"input": {"format": "avro"}}) == [
        "cfg.yaml: input: format avro needs schema_registry_url (Confluent wire format) or schema_file"
    ]


def test_yaml_booleans_in_string_places_get_a_hint(fake: Any) -> None:
    subs = [{"name": False, "trigger": 'type = "page"', "action": "send"}]
    assert problems({"destinations": [fake_dest(subscriptions=subs)]}) == [
        "cfg.yaml: destinations[0].subscriptions[0].name: must be a string, got a boolean"
        " (YAML reads unquoted yes/no/on/off that way; quote it)"
    ]


def test_not_a_mapping_and_empty() -> None:
    assert problems(["a"]) == ["cfg.yaml: must be a mapping (key: value), got a list"]
    assert problems(None) == ["cfg.yaml: the configuration is empty"]


def test_load_yaml_and_json_files(fake: Any, tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("destinations:\n  - id: f1\n    type: fake\n    settings: {key: '${K}'}\n")
    assert load_config(y, env={"K": "v"}).destinations[0].settings["key"] == "v"
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"destinations": [fake_dest()]}))
    assert load_config(j, env={}).source == str(j)


def test_load_reports_syntax_errors_with_a_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("destinations:\n  - id: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad, env={})
    assert str(info.value).startswith(f"{bad}: line ")
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "missing.yaml", env={})


def test_seg_settings_are_normalised_and_checked(fake: Any) -> None:
    seg = {"id": "seg", "type": "seg", "settings": {"apiKey": "{ABC8FB18-7559-4324-9921-A4B5015B4A1C}"}}
    config = parse_config({"destinations": [seg]}, "cfg.yaml", {})
    assert config.destinations[0].settings["apiKey"] == "abc8fb18-7559-4324-9921-a4b5015b4a1c"
    bad = {"id": "seg", "type": "seg", "settings": {"apiKey": "not-a-guid"}}
    (found,) = problems({"destinations": [bad]})
    assert found.startswith("cfg.yaml: destinations[0].settings.apiKey: ")
    assert "GUID" in found


def test_example_config_loads_with_its_defaults() -> None:
    config = load_config(REPO / "examples" / "config.yaml", env={})
    assert {d.type for d in config.destinations} == {"stackadapt", "tiktok-offline-conversions", "seg"}


def test_example_config_matches_the_json_schema() -> None:
    import yaml

    schema = json.loads((REPO / "schemas" / "config.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    example = yaml.safe_load((REPO / "examples" / "config.yaml").read_text())
    jsonschema.Draft202012Validator(schema).validate(example)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate({**example, "limitz": {}})


def test_committed_json_schema_is_generated_from_the_model() -> None:
    from streamproc.config.schema import SCHEMA_FILES, config_schema, packaged_schema, render

    expected = render()
    for path in SCHEMA_FILES:
        assert path.read_text(encoding="utf-8") == expected, (
            f"{path} is out of date with streamproc/config/models.py; regenerate it with:"
            " .venv/bin/python -m streamproc.config.schema --write"
        )
    assert packaged_schema() == config_schema()


@dataclass(frozen=True)
class _Batch:
    size: Annotated[int, Key("events per request", minimum=1, maximum=500)] = 100
    mode: Annotated[Literal["off", "on"], Key("batching")] = "off"


@dataclass(frozen=True)
class _Section:
    batch: Annotated[_Batch, Key("batching")] = _Batch()


def test_a_key_added_to_a_model_is_loaded_and_in_the_schema() -> None:
    from streamproc.config.checker import Checker, section
    from streamproc.config.schema import _object

    schema = _object(_Section, {})
    size = schema["properties"]["batch"]["properties"]["size"]
    assert size["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 500}
    assert size["default"] == 100 and size["description"] == "events per request"
    assert schema["properties"]["batch"]["properties"]["mode"]["enum"] == ["off", "on"]

    checker = Checker("cfg.yaml")
    assert section(checker, {"batch": {"size": 7, "mode": "ON"}}, _Section, "x") == _Section(_Batch(7, "on"))
    section(checker, {"batch": {"size": 0, "sise": 1}}, _Section, "x")
    assert [str(p) for p in checker.problems] == [
        "cfg.yaml: x.batch.sise: unknown key; did you mean 'size'?",
        "cfg.yaml: x.batch.size: must be at least 1, got 0",
    ]


_SCHEMA_AND_LOADER_REJECT = {
    "unknown top-level key": {"limitz": {}},
    "no topics": {"kafka": {"bootstrap_servers": "b:9092"}},
    "client key streamproc owns": {
        "kafka": {"bootstrap_servers": "b:9092", "topics": ["t"], "client": {"group.id": "x"}}
    },
    "topic name": {"kafka": {"bootstrap_servers": "b:9092", "topics": ["a b"]}},
    "input format": {"input": {"format": "xml"}},
    "registry URL": {"input": {"format": "avro", "schema_registry_url": "registry:8081"}},
    "in-flight bound": {"limits": {"max_in_flight_events": 0}},
    "poll batch bound": {"limits": {"poll_batch_size": 100_001}},
    "commit interval": {"limits": {"commit_interval": 0}},
    "metrics port": {"metrics": {"port": "http"}},
    "log level": {"log": {"level": "loud"}},
    "destination type": {"destinations": [{"id": "s", "type": "stackadapp"}]},
    "destination id": {"destinations": [{"id": "-s", "type": "stackadapt", "settings": {"pixelId": "p"}}]},
    "missing setting": {
        "destinations": [{"id": "t", "type": "tiktok-offline-conversions", "settings": {"accessToken": "a"}}]
    },
    "unknown setting": {
        "destinations": [{"id": "s", "type": "stackadapt", "settings": {"pixelId": "p", "pixelID": "p"}}]
    },
    "seg without website id": {"destinations": [{"id": "s", "type": "seg", "settings": {}}]},
    "breaker ratio": {
        "destinations": [
            {
                "id": "s",
                "type": "seg",
                "settings": {"apiKey": "abc8fb18-7559-4324-9921-a4b5015b4a1c"},
                "limits": {"breaker": {"failure_ratio": 1.5}},
            }
        ]
    },
    "retry key": {
        "destinations": [
            {
                "id": "s",
                "type": "seg",
                "settings": {"apiKey": "abc8fb18-7559-4324-9921-a4b5015b4a1c"},
                "limits": {"retry": {"attempts": 3}},
            }
        ]
    },
    "subscription without action": {
        "destinations": [
            {
                "id": "s",
                "type": "stackadapt",
                "settings": {"pixelId": "p"},
                "subscriptions": [{"name": "a", "trigger": 'type = "track"'}],
            }
        ]
    },
}


@pytest.mark.parametrize("data", _SCHEMA_AND_LOADER_REJECT.values(), ids=_SCHEMA_AND_LOADER_REJECT)
def test_the_json_schema_rejects_what_the_loader_rejects(data: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((REPO / "schemas" / "config.schema.json").read_text())
    with pytest.raises(ConfigError):
        parse_config(data, "cfg.yaml", env={})
    assert not jsonschema.Draft202012Validator(schema).is_valid(data)


# -- batching ------------------------------------------------------------------------------------------


def tiktok_dest(**extra: Any) -> dict[str, Any]:
    return {
        "id": "tt",
        "type": "tiktok-offline-conversions",
        "settings": {"accessToken": "t", "eventSetID": "1"},
        "subscriptions": [
            {"name": "Orders", "trigger": 'event = "Order Completed"', "action": "reportOfflineEvent"},
            {"name": "Carts", "trigger": 'event = "Product Added"', "action": "reportOfflineEvent"},
        ],
        **extra,
    }


def test_batching_is_off_by_default() -> None:
    (dest,) = parse_config({"destinations": [tiktok_dest()]}, "cfg.yaml", {}).destinations
    assert dest.batch is None
    assert [s.batch for s in dest.subscriptions] == [None, None]


def test_destination_batch_applies_to_every_subscription() -> None:
    from streamproc.config import BatchConfig

    data = {"destinations": [tiktok_dest(batch={"max_events": 500, "max_wait_ms": 20})]}
    (dest,) = parse_config(data, "cfg.yaml", {}).destinations
    expected = BatchConfig(max_events=500, max_bytes=BatchConfig().max_bytes, max_wait_ms=20.0)
    assert dest.batch == expected
    assert [s.batch for s in dest.subscriptions] == [expected, expected]
    (on,) = parse_config({"destinations": [tiktok_dest(batch=True)]}, "cfg.yaml", {}).destinations
    assert on.batch == BatchConfig(max_events=1000, max_bytes=4_000_000, max_wait_ms=100.0)


def test_a_subscription_turns_batching_off_or_changes_its_limits() -> None:
    from streamproc.config import BatchConfig

    dest = tiktok_dest(batch={"max_events": 500})
    dest["subscriptions"][0]["batch"] = False
    dest["subscriptions"][1]["batch"] = {"max_bytes": 100_000}
    (checked,) = parse_config({"destinations": [dest]}, "cfg.yaml", {}).destinations
    orders, carts = checked.subscriptions
    assert orders.batch is None
    assert carts.batch == BatchConfig(max_events=500, max_bytes=100_000)
    # Without a destination batch, a subscription may ask for one on its own.
    alone = tiktok_dest()
    alone["subscriptions"][1]["batch"] = True
    (checked,) = parse_config({"destinations": [alone]}, "cfg.yaml", {}).destinations
    assert [s.batch for s in checked.subscriptions] == [None, BatchConfig()]


def test_batch_problems_name_the_file_key_and_limit() -> None:
    dest = tiktok_dest(batch={"max_events": 1001, "max_bytes": 10, "max_wait_ms": -1, "size": 3})
    dest["subscriptions"][0]["batch"] = "yes"
    found = problems({"destinations": [dest]})
    assert "cfg.yaml: destinations[0].batch.max_events: must be at most 1000, got 1001" in found
    assert "cfg.yaml: destinations[0].batch.max_bytes: must be at least 1024, got 10" in found
    assert "cfg.yaml: destinations[0].batch.max_wait_ms: must be greater than 0, got -1" in found
    assert any(p.startswith("cfg.yaml: destinations[0].batch.size: unknown key") for p in found)
    assert (
        "cfg.yaml: destinations[0].subscriptions[0].batch: must be true, false or a mapping of "
        "max_events, max_bytes, max_wait_ms; got a string"
    ) in found


def test_batch_is_refused_where_the_partner_takes_one_event_per_request(fake: Any) -> None:
    seg = {"id": "seg", "type": "seg", "settings": {"apiKey": "abc8fb18-7559-4324-9921-a4b5015b4a1c"}}
    (found,) = problems({"destinations": [{**seg, "batch": {"max_events": 10}}]})
    assert found == (
        "cfg.yaml: destinations[0].batch: seg sends one event per request; it has no batch endpoint"
    )
    sub = {"name": "S", "trigger": 'type = "track"', "action": "send", "batch": True}
    (found,) = problems({"destinations": [fake_dest(subscriptions=[sub])]})
    assert found == "cfg.yaml: destinations[0].subscriptions[0].batch: action 'send' of fake cannot batch"


def test_batch_settings_match_the_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((REPO / "schemas" / "config.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    dest = tiktok_dest(batch={"max_events": 1000, "max_bytes": 2_000_000, "max_wait_ms": 50})
    dest["subscriptions"][0]["batch"] = False
    validator.validate({"destinations": [dest]})
    parse_config({"destinations": [dest]}, "cfg.yaml", {})
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"destinations": [tiktok_dest(batch={"max_events": 1001})]})


def test_retry_topics_and_the_parking_share(fake: Any) -> None:
    cfg = parse_config(
        {
            "kafka": {"bootstrap_servers": "k:9092", "topics": ["events"], "group_id": "workers"},
            "destinations": [
                fake_dest(
                    limits={"retry": {"park_after_attempts": 3, "park_after_seconds": 2.5, "park_delay": 1}}
                )
            ],
        },
        "c",
        {},
    )
    assert cfg.kafka is not None
    assert cfg.kafka.retry_topic("f1") == "workers.retry.f1" and cfg.kafka.create_retry_topics
    retry = cfg.destinations[0].limits.retry
    assert (retry.park_after_attempts, retry.park_after_seconds, retry.park_delay) == (3, 2.5, 1.0)
    assert RetryPolicy().park_after_attempts is None  # parking is off unless a share is set
    found = problems(
        {
            "kafka": {"bootstrap_servers": "k:9092", "topics": ["events"], "retry_topic_prefix": "ev"},
            "destinations": [fake_dest(limits={"retry": {"park_after_attempts": 0, "park_delay": 400}})],
        }
    )
    assert found == [
        "cfg.yaml: kafka.retry_topic_prefix: must not be a prefix of kafka.topics or the dead-letter topic",
        "cfg.yaml: destinations[0].limits.retry.park_delay_max: must be at least park_delay (400)",
        "cfg.yaml: destinations[0].limits.retry.park_after_attempts: must be at least 1, got 0",
    ]
