"""Loads and checks the configuration file (YAML or JSON, `${VAR}` from the environment) into frozen data."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from streamproc.config_yaml import load_yaml
from streamproc.core.fields import Field
from streamproc.destinations import registry
from streamproc.destinations.base import Action, Destination
from streamproc.errors import ConfigError, ConfigProblem, PayloadValidationError

__all__ = [
    "BatchConfig",
    "BreakerPolicy",
    "Config",
    "DestinationConfig",
    "DestinationLimits",
    "FilterConfig",
    "HttpConfig",
    "InputConfig",
    "KafkaConfig",
    "Key",
    "KeySpec",
    "Limits",
    "LogConfig",
    "MetricsConfig",
    "RetryPolicy",
    "SubscriptionConfig",
    "interpolate",
    "key_specs",
    "load_config",
    "parse_config",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})

# The worker owns these librdkafka settings: offsets are stored only once deliveries are complete.
_KAFKA_OWNED = {
    "bootstrap.servers": "kafka.bootstrap_servers",
    "group.id": "kafka.group_id",
    "group.instance.id": "kafka.group_instance_id",
    "enable.auto.commit": "streamproc's own commit loop",
    "enable.auto.offset.store": "streamproc's own offset tracking",
}
_SETTINGS_SCHEMA = {
    "type": "object",
    "additionalProperties": {"type": ["string", "number", "boolean"]},
    "propertyNames": {"not": {"enum": list(_KAFKA_OWNED)}},
}
_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_TOPIC_PATTERN = r"[A-Za-z0-9._-]{1,249}"


@dataclass(frozen=True)
class Key:
    """What one key of the file means and the bounds the loader holds it to.

    Attached to a model field as `Annotated[type, Key(...)]`; the loader of a plain section reads
    the key with these bounds and the JSON Schema (streamproc.config_schema) states the same.
    """

    description: str = ""
    required: bool = False
    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None
    url: bool = False
    """An http:// or https:// URL (a trailing slash is dropped)."""
    aliases: Mapping[str, str] = field(default_factory=dict)
    """Other spellings of a choice and the value each stands for."""
    default_text: str | None = None
    """The documented default where the model's default is only a placeholder."""
    schema: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None
    """The key's JSON Schema where the file accepts more forms than the model's type (a list or a
    string), or a function giving it when the schema is made."""
    internal: bool = False
    """Not a key of the file (filled in by the loader)."""


def _destination_types() -> Mapping[str, Any]:
    return {"enum": list(registry.all_types())}


@dataclass(frozen=True)
class KafkaConfig:
    """Where events come from and where dead letters go."""

    bootstrap_servers: Annotated[
        str,
        Key(
            "host:port[,host:port...] or a list of them",
            required=True,
            schema={
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
                ]
            },
        ),
    ]
    topics: Annotated[
        tuple[str, ...],
        Key(
            "input topics (a list, or one comma-separated string)",
            required=True,
            schema={
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "array",
                        # A topic given as ${VAR} is checked once the variable is expanded.
                        "items": {"type": "string", "pattern": f"^({_TOPIC_PATTERN}|.*\\$\\{{.*)$"},
                        "minItems": 1,
                    },
                ]
            },
        ),
    ]
    group_id: Annotated[str, Key("consumer group of the workers")] = "streamproc"
    dead_letter_topic: Annotated[
        str,
        Key(
            "where failed deliveries are written; must not be an input topic",
            default_text="<first topic>.dlq",
        ),
    ] = "streamproc.dlq"
    client: Annotated[
        Mapping[str, str],
        Key(
            "librdkafka settings of every client, consumers and producers (security.protocol, sasl.*, "
            "ssl.*, client.id, ...); " + ", ".join(_KAFKA_OWNED) + " are set by streamproc",
            schema=_SETTINGS_SCHEMA,
        ),
    ] = field(default_factory=lambda: _EMPTY)
    consumer: Annotated[
        Mapping[str, str],
        Key(
            "librdkafka settings of the consumers only (session.timeout.ms, fetch.*, ...), over `client`",
            schema=_SETTINGS_SCHEMA,
        ),
    ] = field(default_factory=lambda: _EMPTY)
    producer: Annotated[
        Mapping[str, str],
        Key(
            "librdkafka settings of the dead-letter and retry producers only (linger.ms, ...), over `client`",
            schema=_SETTINGS_SCHEMA,
        ),
    ] = field(default_factory=lambda: _EMPTY)
    retry_topic_prefix: Annotated[
        str,
        Key(
            "parked deliveries of destination D go to topic <prefix>D; must not be a prefix of an "
            "input or the dead-letter topic",
            default_text="<group_id>.retry.",
            schema={"type": "string", "pattern": f"^({_TOPIC_PATTERN}|.*\\$\\{{.*)$"},
        ),
    ] = ""
    create_retry_topics: Annotated[
        bool,
        Key("create missing retry topics at start, with as many partitions as the largest input topic"),
    ] = True
    group_instance_id: Annotated[
        str | None,
        Key(
            "static group membership: a name unique to this worker and kept across its restarts "
            "(e.g. ${POD_NAME}); a restart within session.timeout.ms then moves no partition, but a "
            "worker that stops for good holds its partitions until that timeout ends",
            default_text="none (dynamic membership)",
        ),
    ] = None
    offset_metadata_max_bytes: Annotated[
        int,
        Key(
            "longest metadata a commit carries (the offsets and deliveries finished past the "
            "committed offset); the broker's offset.metadata.max.bytes, 0 for none",
            minimum=0,
        ),
    ] = 4096

    def retry_topic(self, destination: str) -> str:
        """The retry topic of one destination instance."""
        return f"{self.retry_topic_prefix or self.group_id + '.retry.'}{destination}"


@dataclass(frozen=True)
class InputConfig:
    """How input messages are encoded."""

    format: Annotated[
        Literal["json", "avro"], Key("json: one Segment event per message; avro: see the schema keys")
    ] = "json"
    schema_registry_url: Annotated[
        str | None, Key("Avro in the Confluent wire format, schemas fetched from this registry", url=True)
    ] = None
    schema_file: Annotated[str | None, Key("plain Avro with this local schema (.avsc)")] = None
    schema_registry_timeout: Annotated[
        float, Key("seconds one schema-registry request may take", exclusive_minimum=0, maximum=300)
    ] = 10.0
    schema_registry_wait: Annotated[
        float,
        Key(
            "seconds a message waits for a schema while the registry cannot be reached (retried with "
            "backoff); then the worker stops naming the message, without committing past it",
            exclusive_minimum=0,
        ),
    ] = 300.0


MAX_IN_FLIGHT_BYTES = 64 << 20
"""The default bytes bound: each byte held takes about two of memory (the decoded event and the
request built from it come on top), so with the process itself and librdkafka's prefetch a worker
stays near 224 MiB, under the Helm chart's 512 Mi limit (figures in docs/configuration.md)."""


@dataclass(frozen=True)
class Limits:
    """Worker-wide bounds: memory (in-flight events and bytes), batching of polls, commit cadence,
    shutdown."""

    max_in_flight_events: Annotated[
        int,
        Key(
            "above this many events not yet committable (unfinished, or finished behind an unfinished one)"
            " the worker pauses its partitions",
            minimum=1,
        ),
    ] = 5000
    resume_in_flight_events: Annotated[
        int,
        Key("the worker resumes below this many such events; below max_in_flight_events", minimum=0),
    ] = 2500
    max_in_flight_bytes: Annotated[
        int,
        Key(
            "above this many bytes (key + value) of those events the worker pauses its partitions too; "
            "librdkafka prefetches at most an eighth of it on top (see docs/configuration.md for the "
            "memory it takes)",
            minimum=1 << 20,
        ),
    ] = MAX_IN_FLIGHT_BYTES
    resume_in_flight_bytes: Annotated[
        int,
        Key("the worker resumes below this many such bytes; below max_in_flight_bytes", minimum=0),
    ] = MAX_IN_FLIGHT_BYTES // 2
    poll_batch_size: Annotated[int, Key("messages taken from Kafka per poll", minimum=1, maximum=100_000)] = (
        500
    )
    commit_interval: Annotated[float, Key("seconds between offset commits", exclusive_minimum=0)] = 5.0
    shutdown_timeout: Annotated[
        float,
        Key(
            "seconds a stopping worker takes at most to finish its deliveries, live and parked together "
            "(it keeps serving the group meanwhile); what still waits for a retry then is given up, "
            "for the partitions' next owners",
            exclusive_minimum=0,
        ),
    ] = 30.0
    revoke_timeout: Annotated[
        float,
        Key(
            "seconds a revoked partition waits for its requests already sent; its deliveries that wait "
            "(a retry backoff, a slot, a rate token) are given up at once and sent by its next owner",
            exclusive_minimum=0,
        ),
    ] = 15.0


@dataclass(frozen=True)
class RetryPolicy:
    """How long one delivery keeps trying: attempts, a time budget, and exponential backoff bounds."""

    max_attempts: Annotated[int, Key("attempts per request, the first included", minimum=1)] = 8
    budget: Annotated[float, Key("seconds a delivery may keep retrying", exclusive_minimum=0)] = 300.0
    backoff_initial: Annotated[
        float,
        Key(
            "first backoff ceiling in seconds (exponential, full jitter, at least Retry-After)",
            exclusive_minimum=0,
        ),
    ] = 0.5
    backoff_max: Annotated[
        float, Key("largest backoff ceiling in seconds; at least backoff_initial", exclusive_minimum=0)
    ] = 30.0
    park_after_attempts: Annotated[
        int | None,
        Key(
            "attempts (per run) after which a failing delivery leaves memory for its destination's "
            "retry topic and its event's offset is finished; with neither park_after_* set nothing parks",
            minimum=1,
        ),
    ] = None
    park_after_seconds: Annotated[
        float | None,
        Key("seconds (per run) after which a failing delivery is parked likewise", exclusive_minimum=0),
    ] = None
    park_delay: Annotated[
        float,
        Key(
            "seconds a parked delivery waits before its next attempt, doubling with each park",
            exclusive_minimum=0,
        ),
    ] = 5.0
    park_delay_max: Annotated[
        float, Key("largest wait of a parked delivery in seconds; at least park_delay", exclusive_minimum=0)
    ] = 300.0


@dataclass(frozen=True)
class BreakerPolicy:
    """When a destination's circuit opens (failure ratio over a window) and for how long."""

    failure_ratio: Annotated[
        float,
        Key("failing share of requests in the window that opens the circuit", exclusive_minimum=0, maximum=1),
    ] = 0.5
    min_requests: Annotated[int, Key("requests in the window before the ratio counts", minimum=1)] = 20
    window: Annotated[float, Key("seconds of history", exclusive_minimum=0)] = 30.0
    open_for: Annotated[float, Key("seconds the circuit stays open before a probe", exclusive_minimum=0)] = (
        10.0
    )


@dataclass(frozen=True)
class DestinationLimits:
    """Per-destination bulkhead: concurrent requests, requests per second, timeout, retry, breaker."""

    concurrency: Annotated[
        int, Key("requests in flight at once (the most, when adaptive)", minimum=1, maximum=10_000)
    ] = 64
    adaptive: Annotated[
        bool, Key("learn the concurrency between 1 and `concurrency` (AIMD) instead of holding it fixed")
    ] = False
    rate: Annotated[
        float | None, Key("requests per second (token bucket); null: unlimited", exclusive_minimum=0)
    ] = None
    timeout: Annotated[float, Key("seconds per request", exclusive_minimum=0)] = 10.0
    retry: Annotated[RetryPolicy, Key("how long one delivery keeps trying")] = field(
        default_factory=RetryPolicy
    )
    breaker: Annotated[BreakerPolicy, Key("when this destination's circuit opens")] = field(
        default_factory=BreakerPolicy
    )


@dataclass(frozen=True)
class BatchConfig:
    """Opt-in batching of single-event requests: a batch goes out at `max_events`, at `max_bytes` of
    combined body, or `max_wait_ms` after it opened, whichever comes first."""

    max_events: Annotated[
        int, Key("events per request, at most the partner's limit (TikTok: 1000)", minimum=1, maximum=1000)
    ] = 1000
    max_bytes: Annotated[
        int, Key("bytes of the combined request body", minimum=1024, maximum=100_000_000)
    ] = 4_000_000
    max_wait_ms: Annotated[
        float,
        Key(
            "milliseconds a batch waits for more events after it opened", exclusive_minimum=0, maximum=60_000
        ),
    ] = 100.0


@dataclass(frozen=True)
class SubscriptionConfig:
    """A trigger, an action and the final mapping (merged over the action's defaults unless asked not to)."""

    name: Annotated[str, Key("unique within the destination (default: the preset's name)")]
    trigger: Annotated[str, Key('FQL, e.g. event = "Order Completed" and properties.revenue > 100')]
    action: Annotated[str, Key("one of the destination's actions; a preset's action cannot be changed")]
    mapping: Annotated[
        Mapping[str, Any],
        Key("mapping-kit values per field, merged over the action's default mappings (or the preset's)"),
    ]
    enabled: Annotated[bool, Key("a disabled subscription is checked but routes nothing")] = True
    preset: Annotated[str | None, Key("start from this preset (its trigger, action and mapping)")] = None
    batch: Annotated[
        BatchConfig | None,
        Key(
            "this subscription's batching: false turns the destination's off, a mapping changes its limits",
            schema={"$ref": "#/$defs/batch"},
        ),
    ] = None


FilterKind = Literal["sample", "drop", "drop_properties", "allow_properties"]
_CONSENT_CATEGORY = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}"
_FIELD_PATH = r"[^.]+(\.[^.]+)*"
_MAX_SUBSCRIPTIONS = 50  # Segment's limit of subscriptions (mappings) per destination instance


@dataclass(frozen=True)
class FilterConfig:
    """One destination filter: a condition in Segment's filter FQL (`if`) and what it does when the
    condition holds (`kind`): drop the event, sample it, or drop or allow properties."""

    condition: str
    kind: FilterKind
    percent: float = 1.0
    """sample: the share kept, a fraction 0..1 as Segment's API takes it (0.1 keeps 10 %)."""
    path: str | None = None
    """sample: the field whose value decides (always the same answer for the same value)."""
    properties: tuple[str, ...] = ()
    """drop_properties / allow_properties: field paths such as properties.email or userId."""


def _filters_schema() -> Mapping[str, Any]:
    paths = {"type": "array", "items": {"type": "string", "pattern": f"^{_FIELD_PATH}$"}, "minItems": 1}
    actions = ("drop", "sample", "drop_properties", "allow_properties")
    return {
        "type": "array",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["if"],
            "properties": {
                "if": {
                    "type": "string",
                    "minLength": 1,
                    "description": "a condition in Segment's filter FQL (single or double quotes, in, "
                    "contains, match, lowercase, length, typeof, semver), or all",
                },
                "drop": {"const": True, "description": "withhold the event"},
                "sample": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["percent"],
                    "properties": {
                        "percent": {
                            "type": "number",
                            "minimum": 0,
                            "maximum": 1,
                            "description": "the share kept, a fraction as in Segment's API (0.1 = 10 %)",
                        },
                        "path": {
                            "type": "string",
                            "pattern": f"^{_FIELD_PATH}$",
                            "description": "sample by this field's value (the same value is always kept "
                            "or always withheld); without it, each event is drawn at random",
                        },
                    },
                },
                "drop_properties": {**paths, "description": "field paths to remove"},
                "allow_properties": {**paths, "description": "field paths to keep (within their objects)"},
            },
            "oneOf": [{"required": [a]} for a in actions],
        },
    }


@dataclass(frozen=True)
class DestinationConfig:
    """One configured destination instance with its checked settings and subscriptions."""

    id: Annotated[
        str,
        Key(
            "unique instance id (metric label, dead-letter header, delivery id)",
            required=True,
            schema={"type": "string", "pattern": f"^{_ID_PATTERN}$"},
        ),
    ]
    type: Annotated[str, Key("the partner", required=True, schema=_destination_types)]
    settings: Annotated[
        Mapping[str, Any], Key("the destination type's settings, checked against its settings fields")
    ]
    endpoint: Annotated[str, Key("base URL", url=True, default_text="the partner's real base URL")]
    ordering: Annotated[
        Literal["none", "key"],
        Key("key: one delivery at a time per userId (else anonymousId), in offset order"),
    ] = "none"
    limits: Annotated[DestinationLimits, Key("this destination's bulkhead")] = field(
        default_factory=DestinationLimits
    )
    subscriptions: Annotated[tuple[SubscriptionConfig, ...], Key("triggers, actions and mappings")] = ()
    batch: Annotated[
        BatchConfig | None,
        Key(
            "opt-in batching of single-event requests (TikTok only): true (the defaults), false, or "
            "limits; a batch goes out at whichever limit comes first",
            schema={"$ref": "#/$defs/batch"},
        ),
    ] = None
    integrations: Annotated[
        Literal["apply", "ignore"],
        Key(
            "apply: an event's integrations object may withhold it from this instance, as Segment "
            "decides it; ignore: for topics already filtered upstream"
        ),
    ] = "apply"
    integration_names: Annotated[
        tuple[str, ...],
        Key(
            "more names of this instance in an event's integrations object, besides the destination "
            "type's Segment catalog names",
            schema={"type": "array", "items": {"type": "string", "minLength": 1}},
        ),
    ] = ()
    consent_categories: Annotated[
        tuple[str, ...],
        Key(
            "consent category ids (keys of context.consent.categoryPreferences, e.g. C0004): an event "
            "carrying preferences reaches this instance only when every one of them is true",
            schema={"type": "array", "items": {"type": "string", "pattern": f"^{_CONSENT_CATEGORY}$"}},
        ),
    ] = ()
    filters: Annotated[
        tuple[FilterConfig, ...],
        Key(
            "destination filters, applied in Segment's order (sample, drop, drop_properties, "
            "allow_properties) before the triggers",
            schema=_filters_schema,
        ),
    ] = ()


@dataclass(frozen=True)
class MetricsConfig:
    """Where the Prometheus /metrics (and health) endpoint listens."""

    host: Annotated[str, Key("listen address of /metrics, /healthz and /readyz")] = "0.0.0.0"
    port: Annotated[int, Key("listen port", minimum=0, maximum=65535)] = 9464
    enabled: Annotated[bool, Key("serve the endpoint")] = True


@dataclass(frozen=True)
class HttpConfig:
    """How partner requests are sent: which HTTP client (both behave the same; pyreqwest costs less CPU)."""

    client: Annotated[
        Literal["aiohttp", "pyreqwest"],
        Key("the HTTP client every bulkhead sends with: pyreqwest (less CPU per request) or aiohttp"),
    ] = "pyreqwest"


@dataclass(frozen=True)
class LogConfig:
    """Log rendering: JSON for production, console for people, auto picks by whether stderr is a TTY."""

    format: Annotated[
        Literal["auto", "json", "console"], Key("auto: console on a terminal, JSON otherwise")
    ] = "auto"
    level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"],
        Key("the lowest level logged (the loader takes any case)", aliases={"warn": "warning"}),
    ] = "info"


@dataclass(frozen=True)
class Config:
    """The whole checked configuration."""

    source: Annotated[str, Key(internal=True)]
    kafka: Annotated[
        KafkaConfig | None, Key("where events come from, where dead letters go (for run, replay, dlq)")
    ]
    input: Annotated[InputConfig, Key("how input messages are encoded")]
    limits: Annotated[Limits, Key("worker-wide bounds")]
    metrics: Annotated[MetricsConfig, Key("the Prometheus endpoint")]
    log: Annotated[LogConfig, Key("log format and level")]
    destinations: Annotated[
        tuple[DestinationConfig, ...], Key("destination instances and their subscriptions")
    ]
    http: Annotated[HttpConfig, Key("how partner requests are sent")] = field(default_factory=HttpConfig)
    warnings: Annotated[tuple[ConfigProblem, ...], Key(internal=True)] = ()
    """What the file allows but should not rely on (e.g. more subscriptions than Segment allows)."""


# Keys of the file that shape the result without being kept in it.
_FILE_ONLY: dict[type, tuple[tuple[str, Any, Key, Any], ...]] = {
    DestinationConfig: (
        (
            "presets",
            bool,
            Key(
                "true: every preset; false: none; or a list of preset names",
                default_text="the destination type's own (Seg: true)",
                schema={
                    "anyOf": [
                        {"type": "boolean"},
                        {"type": "array", "items": {"type": "string"}},
                        {"$ref": "#/$defs/envString"},
                    ]
                },
            ),
            None,
        ),
    ),
    SubscriptionConfig: (("defaults", bool, Key("false: the mapping alone, without the defaults"), True),),
}


@dataclass(frozen=True)
class KeySpec:
    """One key of the file: its name, Python type, rule and default (MISSING when it has none)."""

    name: str
    type: Any
    rule: Key
    default: Any


def key_specs(model: type) -> tuple[KeySpec, ...]:
    """The keys of the file that fill `model` (one of the config dataclasses), in the model's order."""
    cached = _specs.get(model)
    if cached is not None:
        return cached
    hints = get_type_hints(model, include_extras=True)
    specs = []
    for f in dataclasses.fields(model):
        hint = hints[f.name]
        rule = Key()
        if get_origin(hint) is Annotated:
            hint, *extras = get_args(hint)
            rule = next((e for e in extras if isinstance(e, Key)), rule)
        if rule.internal:
            continue
        default = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        specs.append(KeySpec(f.name, hint, rule, default))
    for name, hint, rule, default in _FILE_ONLY.get(model, ()):
        specs.append(KeySpec(name, hint, rule, default))
    _specs[model] = result = tuple(specs)
    return result


_specs: dict[type, tuple[KeySpec, ...]] = {}


def _spec(model: type, name: str) -> KeySpec:
    return next(s for s in key_specs(model) if s.name == name)


# ---------------------------------------------------------------------------------------------
# Environment interpolation

_VAR = re.compile(r"\$(\$)?\{([^}]*)\}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _FromEnv(str):
    """A string that came (wholly) out of `${VAR}`; number and boolean keys may then parse it."""

    __slots__ = ()


def _plain(value: Any) -> Any:
    """The same data with every string a plain `str` (what partner code and validators expect)."""
    if isinstance(value, str):
        return str(value) if type(value) is not str else value
    if isinstance(value, dict):
        return {key: _plain(val) for key, val in value.items()}
    if isinstance(value, list):
        return [_plain(val) for val in value]
    return value


def interpolate(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand `${VAR}`, `${VAR:-default}` (unset or empty) and `${VAR-default}` (unset); `$${` is a
    literal `${`. Returns the text and the problems found (missing variables, bad syntax)."""
    problems: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return match.group(0)[1:]
        inner = match.group(2)
        name, default, when_empty = inner, None, False
        for sep in (":-", "-"):
            pos = inner.find(sep)
            if pos > 0:
                name, default, when_empty = inner[:pos], inner[pos + len(sep) :], sep == ":-"
                break
        if not _VAR_NAME.fullmatch(name):
            problems.append(
                f"${{{inner}}} is not a valid variable reference (use ${{NAME}} or ${{NAME:-default}})"
            )
            return ""
        value = env.get(name)
        if value is None or (when_empty and value == ""):
            if default is None:
                problems.append(f"environment variable {name} is not set")
                # Keep the reference as the value: the file is refused anyway, and other checks of
                # this value then do not report it a second time as empty.
                return match.group(0)
            return default
        return value

    if "$" not in text:
        return text, problems
    out = _VAR.sub(replace, text)
    whole = _VAR.fullmatch(text)
    if whole is not None and not whole.group(1):
        return _FromEnv(out), problems
    return out, problems


# ---------------------------------------------------------------------------------------------
# Problem collection and value checks


class _Checker:
    """Collects every problem of one file, so a user fixes them all in one go."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[ConfigProblem] = []
        self.warnings: list[ConfigProblem] = []
        self.order: dict[str, int] = {"": -1}
        """Key path -> its position in the file, so problems are reported top to bottom."""

    def sorted_problems(self) -> list[ConfigProblem]:
        def position(problem: ConfigProblem) -> int:
            path = problem.path
            while path not in self.order:
                shorter = _LAST_SEGMENT.sub("", path)
                if shorter == path:
                    return -1
                path = shorter
            return self.order[path]

        return sorted(self.problems, key=position)

    def add(self, path: str, message: str) -> None:
        self.problems.append(ConfigProblem(self.source, path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(ConfigProblem(self.source, path, f"warning: {message}"))

    def mapping(self, value: Any, path: str, *, allow_none: bool = True) -> dict[str, Any] | None:
        if value is None and allow_none:
            return {}
        if not isinstance(value, dict):
            self.add(path, f"must be a mapping (key: value), got {_kind(value)}")
            return None
        for key in value:
            if not isinstance(key, str):
                self.add(f"{path}.{key}" if path else str(key), "keys must be strings")
        return value

    def keys(self, data: Mapping[str, Any], allowed: Iterable[str], path: str) -> None:
        allowed = tuple(allowed)
        for key in data:
            if isinstance(key, str) and key not in allowed:
                self.add(_join(path, key), f"unknown key{_did_you_mean(key, allowed)}")


_T = TypeVar("_T")
_S = TypeVar("_S")
_LAST_SEGMENT = re.compile(r"(\.[^.\[\]()]*|\[\d+\]|\([^)]*\))$")


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    options = list(options)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        lowered = {o.lower(): o for o in options}
        close = [lowered[word.lower()]] if word.lower() in lowered else []
    if close:
        return f"; did you mean {close[0]!r}?"
    if options and len(options) <= 12:
        return f"; expected one of: {', '.join(options)}"
    return ""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _get(
    c: _Checker,
    data: Mapping[str, Any],
    key: str,
    path: str,
    convert: Callable[[Any], _T],
    default: _T,
) -> _T:
    if key not in data or data[key] is None:
        return default
    try:
        return convert(data[key])
    except ValueError as exc:
        c.add(_join(path, key), str(exc))
        return default


def _int(minimum: int | None = None, maximum: int | None = None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, _FromEnv):
            try:
                value = int(value.strip())
            except ValueError:
                raise ValueError(f"must be an integer, got {str(value)!r} from the environment") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, got {_kind(value)}")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum}, got {value}")
        return value

    return convert


def _float(
    minimum: float | None = 0.0, *, exclusive: bool = True, maximum: float | None = None
) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, _FromEnv):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError(f"must be a number, got {str(value)!r} from the environment") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number, got {_kind(value)}")
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        if minimum is not None and ((number <= minimum) if exclusive else (number < minimum)):
            raise ValueError(
                f"must be {'greater than' if exclusive else 'at least'} {_num(minimum)}, got {value}"
            )
        if maximum is not None and number > maximum:
            raise ValueError(f"must be at most {_num(maximum)}, got {value}")
        return number

    return convert


def _num(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _bool(value: Any) -> bool:
    if isinstance(value, _FromEnv):
        lowered = value.strip().lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise ValueError(f"must be true or false, got {str(value)!r} from the environment")
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {_kind(value)}")
    return value


def _str(*, empty: bool = False) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if isinstance(value, bool):
            raise ValueError(
                "must be a string, got a boolean (YAML reads unquoted yes/no/on/off that way; quote it)"
            )
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {_kind(value)}")
        if not empty and not value.strip():
            raise ValueError("must not be empty")
        return str(value)

    return convert


def _choice(*options: str, lower: bool = False, aliases: Mapping[str, str] = _EMPTY) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be one of {', '.join(options)}; got {_kind(value)}")
        text = value.lower() if lower else value
        text = aliases.get(text, text)
        if text not in options:
            raise ValueError(
                f"must be one of {', '.join(options)}; got {value!r}{_did_you_mean(text, options)}"
            )
        return text

    return convert


_URL = re.compile(r"https?://[^\s/?#]+[^\s]*")


def _url(value: Any) -> str:
    if not isinstance(value, str) or not _URL.fullmatch(value.strip()):
        raise ValueError(
            "must be an http:// or https:// URL" + ("" if isinstance(value, str) else f", got {_kind(value)}")
        )
    return value.strip().rstrip("/")


# ---------------------------------------------------------------------------------------------
# Sections


def _kafka(c: _Checker, value: Any) -> KafkaConfig | None:
    data = c.mapping(value, "kafka")
    if data is None:
        return None
    c.keys(data, [s.name for s in key_specs(KafkaConfig)], "kafka")
    servers: Any = data.get("bootstrap_servers")
    if isinstance(servers, list) and servers and all(isinstance(s, str) and s for s in servers):
        servers = ",".join(servers)
    if not isinstance(servers, str) or not servers.strip():
        c.add("kafka.bootstrap_servers", "is required: host:port[,host:port...]")
        servers = ""
    topics_raw: Any = data.get("topics")
    if isinstance(topics_raw, str):
        topics_raw = [t.strip() for t in topics_raw.split(",")]
    topics: list[str] = []
    if not isinstance(topics_raw, list) or not topics_raw:
        c.add("kafka.topics", "is required: a list of topic names")
    else:
        for i, topic in enumerate(topics_raw):
            if not isinstance(topic, str) or not re.fullmatch(_TOPIC_PATTERN, topic):
                c.add(f"kafka.topics[{i}]", "must be a Kafka topic name (letters, digits, '.', '_', '-')")
            else:
                topics.append(topic)
    group_id = _get(c, data, "group_id", "kafka", _str(), "streamproc")
    default_dlq = f"{topics[0]}.dlq" if topics else "streamproc.dlq"
    dlq = _get(c, data, "dead_letter_topic", "kafka", _str(), default_dlq)
    if dlq in topics:
        c.add(
            "kafka.dead_letter_topic",
            "must not be one of kafka.topics (dead letters would be consumed again)",
        )
    prefix = _get(c, data, "retry_topic_prefix", "kafka", _str(), f"{group_id}.retry.")
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,180}", prefix):
        c.add("kafka.retry_topic_prefix", "must start a Kafka topic name (letters, digits, '.', '_', '-')")
    elif any(t.startswith(prefix) for t in (*topics, dlq)):
        c.add("kafka.retry_topic_prefix", "must not be a prefix of kafka.topics or the dead-letter topic")
    create_retry = _get(c, data, "create_retry_topics", "kafka", _bool, True)
    instance = _get(c, data, "group_instance_id", "kafka", _str(), None)
    metadata_max = _get(c, data, "offset_metadata_max_bytes", "kafka", _int(0), 4096)
    return KafkaConfig(
        bootstrap_servers=servers,
        topics=tuple(topics),
        group_id=group_id,
        dead_letter_topic=dlq,
        client=_librdkafka_settings(c, data, "client"),
        consumer=_librdkafka_settings(c, data, "consumer"),
        producer=_librdkafka_settings(c, data, "producer"),
        retry_topic_prefix=prefix,
        create_retry_topics=create_retry,
        group_instance_id=instance,
        offset_metadata_max_bytes=metadata_max,
    )


def _librdkafka_settings(c: _Checker, data: Mapping[str, Any], name: str) -> Mapping[str, str]:
    """One of the kafka sections passed to librdkafka, every value as the string librdkafka reads."""
    settings: dict[str, str] = {}
    for key, val in (c.mapping(data.get(name), f"kafka.{name}") or {}).items():
        path = f"kafka.{name}.{key}"
        if key in _KAFKA_OWNED:
            c.add(path, f"is set by streamproc; use {_KAFKA_OWNED[key]}")
        elif isinstance(val, bool):
            settings[key] = "true" if val else "false"
        elif isinstance(val, str | int | float):
            settings[key] = str(val)
        else:
            c.add(path, f"must be a string, number or boolean, got {_kind(val)}")
    return MappingProxyType(settings)


def _converter(spec: KeySpec) -> Callable[[Any], Any]:
    """The check of one plain key, from its type and rule."""
    kind, rule = spec.type, spec.rule
    if get_origin(kind) in (Union, UnionType):
        kind = next(arg for arg in get_args(kind) if arg is not type(None))
    if kind is bool:
        return _bool
    if kind is int:
        return _int(
            None if rule.minimum is None else int(rule.minimum),
            None if rule.maximum is None else int(rule.maximum),
        )
    if kind is float:
        if rule.exclusive_minimum is not None:
            return _float(rule.exclusive_minimum, exclusive=True, maximum=rule.maximum)
        return _float(rule.minimum, exclusive=False, maximum=rule.maximum)
    if get_origin(kind) is Literal:
        return _choice(*get_args(kind), lower=True, aliases=rule.aliases)
    if kind is str:
        return _url if rule.url else _str()
    raise TypeError(f"no check for key {spec.name!r} of type {kind!r}")


def _section(c: _Checker, value: Any, model: type[_S], path: str) -> _S:
    """Read a section whose keys are all plain values or nested sections: every key from its spec."""
    data = c.mapping(value, path)
    if data is None:
        return model()
    specs = key_specs(model)
    c.keys(data, [s.name for s in specs], path)
    values: dict[str, Any] = {}
    for spec in specs:
        if isinstance(spec.type, type) and dataclasses.is_dataclass(spec.type):
            values[spec.name] = _section(c, data.get(spec.name), spec.type, _join(path, spec.name))
        else:
            values[spec.name] = _get(c, data, spec.name, path, _converter(spec), spec.default)
    return model(**values)


def _input(c: _Checker, value: Any) -> InputConfig:
    config = _section(c, value, InputConfig, "input")
    if config.format == "avro" and config.schema_registry_url is None and config.schema_file is None:
        c.add("input", "format avro needs schema_registry_url (Confluent wire format) or schema_file")
    return config


def _limits(c: _Checker, value: Any) -> Limits:
    limits = _section(c, value, Limits, "limits")
    if limits.resume_in_flight_bytes >= limits.max_in_flight_bytes:
        if isinstance(value, dict) and "resume_in_flight_bytes" in value:
            c.add(
                "limits.resume_in_flight_bytes",
                f"must be below max_in_flight_bytes ({limits.max_in_flight_bytes})",
            )
        else:
            limits = dataclasses.replace(limits, resume_in_flight_bytes=limits.max_in_flight_bytes // 2)
    if limits.resume_in_flight_events >= limits.max_in_flight_events:
        if isinstance(value, dict) and "resume_in_flight_events" in value:
            c.add(
                "limits.resume_in_flight_events",
                f"must be below max_in_flight_events ({limits.max_in_flight_events})",
            )
        else:
            limits = dataclasses.replace(limits, resume_in_flight_events=limits.max_in_flight_events // 2)
    return limits


def _destination_limits(c: _Checker, value: Any, path: str) -> DestinationLimits:
    limits = _section(c, value, DestinationLimits, path)
    retry = limits.retry
    if retry.backoff_max < retry.backoff_initial:
        c.add(
            _join(path, "retry.backoff_max"),
            f"must be at least backoff_initial ({_num(retry.backoff_initial)})",
        )
    if retry.park_delay_max < retry.park_delay:
        c.add(_join(path, "retry.park_delay_max"), f"must be at least park_delay ({_num(retry.park_delay)})")
    parks = retry.park_after_attempts is not None or retry.park_after_seconds is not None
    if parks and retry.park_delay >= retry.budget:
        c.add(
            _join(path, "retry.park_delay"),
            f"must be below budget ({_num(retry.budget)}): a parked delivery would never be tried again",
        )
    return limits


# ---------------------------------------------------------------------------------------------
# Destinations and subscriptions

_ID = re.compile(_ID_PATTERN)


class _Collaborators:
    """FQL, the mapping kit and the settings check, imported once per load (they are heavier modules)."""

    def __init__(self) -> None:
        from streamproc import filters, fql, mapping
        from streamproc.destinations import registry, runtime

        self.parse_trigger = fql.parse
        self.parse_filter = filters.parse_condition
        self.compile_mapping = mapping.compile
        self.mapping_problems = mapping.problems
        self.validate_settings = runtime.validate_settings
        self.registry = registry


def _settings_problem(
    path: str, message: str, destination: Destination, settings: Mapping[str, Any]
) -> tuple[str, str]:
    """The key path and message of a settings problem (without the runtime's "<type> settings: ")."""
    prefix = f"{destination.type} settings: "
    if message.startswith(prefix):
        message = message[len(prefix) :]
    where = _settings_problem_path(path, message, destination, settings)
    key = where[len(path) + 1 :]
    if key and message.startswith(f"{key}: "):
        message = message[len(key) + 2 :]
    return where, message


def _settings_problem_path(
    path: str, message: str, destination: Destination, settings: Mapping[str, Any]
) -> str:
    """Point at `settings.<key>` when the message names a key (or its label) first."""
    names = {k: k for k in settings} | {k: k for k in destination.settings}
    names |= {f.label: k for k, f in destination.settings.items()}
    for name in sorted(names, key=len, reverse=True):
        if message.startswith(name) and message[len(name) : len(name) + 1] in (":", " ", "'", ""):
            return _join(path, names[name])
        if message.startswith(f"'{name}'") or message.startswith(
            f"The root value is missing the required field '{name}'"
        ):
            return _join(path, names[name])
    return path


def _destination(
    c: _Checker, value: Any, path: str, k: _Collaborators, seen_ids: dict[str, str]
) -> DestinationConfig | None:
    data = c.mapping(value, path, allow_none=False)
    if data is None:
        return None
    c.keys(data, [s.name for s in key_specs(DestinationConfig)], path)
    dest_id = data.get("id")
    if not isinstance(dest_id, str) or not _ID.fullmatch(dest_id):
        c.add(_join(path, "id"), "is required: a unique id of letters, digits, '.', '_', '-' (at most 64)")
        dest_id = f"<{path}>"
    elif dest_id in seen_ids:
        c.add(_join(path, "id"), f"duplicate destination id {dest_id!r} (first used at {seen_ids[dest_id]})")
    else:
        seen_ids[dest_id] = path
    dest_type = data.get("type")
    destination: Destination | None = None
    if not isinstance(dest_type, str) or not dest_type:
        c.add(_join(path, "type"), f"is required: one of {', '.join(k.registry.all_types())}")
    else:
        try:
            destination = k.registry.get(dest_type)
        except KeyError:
            c.add(
                _join(path, "type"),
                f"unknown destination type {dest_type!r}{_did_you_mean(dest_type, k.registry.all_types())}",
            )
        except ImportError as exc:
            c.add(_join(path, "type"), f"destination type {dest_type!r} cannot be loaded: {exc}")

    settings: dict[str, Any] = {}
    raw_settings = c.mapping(data.get("settings"), _join(path, "settings"))
    settings_path = _join(path, "settings")
    # A setting whose variable is missing is already reported; do not report it again as empty.
    unresolved = {p.path for p in c.problems if p.path.startswith(settings_path + ".")}
    if destination is not None and raw_settings is not None:
        # The settings check drops unknown keys, as Segment does; a typo here would go unnoticed.
        c.keys(raw_settings, destination.settings, settings_path)
        try:
            settings = dict(k.validate_settings(destination, _plain(raw_settings)))
        except (ValueError, PayloadValidationError) as exc:
            where, message = _settings_problem(settings_path, str(exc), destination, raw_settings)
            if where not in unresolved:
                c.add(where, message)

    default_endpoint = destination.endpoint if destination is not None else ""
    settings_endpoint = settings.get("endpoint")
    if isinstance(settings_endpoint, str) and settings_endpoint:
        default_endpoint = settings_endpoint.rstrip("/")
    endpoint = _get(c, data, "endpoint", path, _url, default_endpoint)
    ordering = _get(c, data, "ordering", path, _converter(_spec(DestinationConfig, "ordering")), "none")
    limits = _destination_limits(c, data.get("limits"), _join(path, "limits"))

    subscriptions: list[SubscriptionConfig] = []
    batch: BatchConfig | None = None
    if destination is not None:
        subscriptions = _subscriptions(c, data, path, destination, k)
        batch, subscriptions = _batching(c, data, path, destination, subscriptions)
        if len(subscriptions) > _MAX_SUBSCRIPTIONS:
            c.warn(
                _join(path, "subscriptions"),
                f"{len(subscriptions)} subscriptions (presets included); Segment allows at most "
                f"{_MAX_SUBSCRIPTIONS} per destination instance, so this one has no Segment equivalent",
            )
    integrations = _get(
        c, data, "integrations", path, _converter(_spec(DestinationConfig, "integrations")), "apply"
    )
    names = _strings(c, data.get("integration_names"), _join(path, "integration_names"), None)
    categories = _strings(
        c,
        data.get("consent_categories"),
        _join(path, "consent_categories"),
        (
            _CONSENT_CATEGORY,
            "is not a consent category id: letters, digits, '_', '-', '.', ':' as your consent tool "
            "sends them in context.consent.categoryPreferences (e.g. C0004 or Advertising)",
        ),
    )
    filters = _filters(c, data.get("filters"), _join(path, "filters"), k)
    return DestinationConfig(
        id=dest_id,
        type=destination.type if destination is not None else str(dest_type),
        settings=MappingProxyType(settings),
        endpoint=endpoint,
        ordering=ordering,  # type: ignore[arg-type]
        limits=limits,
        subscriptions=tuple(subscriptions),
        batch=batch,
        integrations=integrations,  # type: ignore[arg-type]
        integration_names=names,
        consent_categories=categories,
        filters=filters,
    )


def _strings(c: _Checker, value: Any, path: str, pattern: tuple[str, str] | None) -> tuple[str, ...]:
    """A list of distinct non-empty strings (each matching `pattern`'s regex, else its message)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        c.add(path, f"must be a list of strings, got {_kind(value)}")
        return ()
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            c.add(f"{path}[{i}]", f"must be a non-empty string, got {_kind(item)}")
        elif pattern is not None and not re.fullmatch(pattern[0], item):
            c.add(f"{path}[{i}]", f"{item!r} {pattern[1]}")
        elif item not in out:
            out.append(str(item))
    return tuple(out)


def _filters(c: _Checker, value: Any, path: str, k: _Collaborators) -> tuple[FilterConfig, ...]:
    """`filters:` a list of `{if: <FQL>, <action>}` with one action of drop, sample, drop_properties
    or allow_properties."""
    if value is None:
        return ()
    if not isinstance(value, list):
        c.add(path, f"must be a list of filters ({{if: <FQL>, drop: true}}, ...), got {_kind(value)}")
        return ()
    from streamproc.errors import FQLError

    actions = ("drop", "sample", "drop_properties", "allow_properties")
    out: list[FilterConfig] = []
    for i, raw in enumerate(value):
        fpath = f"{path}[{i}]"
        data = c.mapping(raw, fpath, allow_none=False)
        if data is None:
            continue
        c.keys(data, ("if", *actions), fpath)
        before = len(c.problems)
        condition = data.get("if")
        if not isinstance(condition, str) or not condition.strip():
            c.add(_join(fpath, "if"), "is required: a condition in Segment's filter FQL, or all")
        else:
            try:
                k.parse_filter(condition)
            except FQLError as exc:
                c.add(_join(fpath, "if"), str(exc))
        given = [a for a in actions if a in data]
        if len(given) != 1:
            c.add(
                fpath,
                f"needs exactly one of {', '.join(actions)}" + (f"; got {', '.join(given)}" if given else ""),
            )
            continue
        kind = given[0]
        apath = _join(fpath, kind)
        action = data[kind]
        config = FilterConfig(condition=condition if isinstance(condition, str) else "", kind=kind)  # type: ignore[arg-type]
        if kind == "drop":
            if action is not True:
                c.add(apath, "must be true (remove the filter to keep the events)")
        elif kind == "sample":
            sample = c.mapping(action, apath, allow_none=False)
            if sample is not None:
                c.keys(sample, ("percent", "path"), apath)
                if "percent" not in sample:
                    c.add(apath, "needs percent: the share kept, a fraction 0..1 (0.1 keeps 10 %)")
                percent = _get(c, sample, "percent", apath, _float(0.0, exclusive=False, maximum=1.0), 1.0)
                sample_path = _get(c, sample, "path", apath, _str(), None)
                if sample_path is not None and not re.fullmatch(_FIELD_PATH, sample_path):
                    c.add(
                        _join(apath, "path"),
                        f"{sample_path!r} is not a field path such as userId or properties.plan",
                    )
                config = dataclasses.replace(config, percent=percent, path=sample_path)
        else:
            fields = _strings(
                c, action, apath, (_FIELD_PATH, "is not a field path such as properties.email or userId")
            )
            if not fields and isinstance(action, list) and len(c.problems) == before:
                c.add(apath, "must name at least one field path")
            config = dataclasses.replace(config, properties=fields)
        if len(c.problems) == before:
            out.append(config)
    return tuple(out)


def _subscriptions(
    c: _Checker, data: Mapping[str, Any], path: str, destination: Destination, k: _Collaborators
) -> list[SubscriptionConfig]:
    preset_names = [p.name for p in destination.presets]
    presets_value = data.get("presets", destination.presets_enabled_by_default)
    enabled_presets: list[str] = []
    if isinstance(presets_value, _FromEnv):
        try:
            presets_value = _bool(presets_value)
        except ValueError as exc:
            c.add(_join(path, "presets"), str(exc))
            presets_value = False
    if presets_value is True:
        enabled_presets = list(preset_names)
    elif presets_value in (False, None):
        enabled_presets = []
    elif isinstance(presets_value, list):
        for i, name in enumerate(presets_value):
            if isinstance(name, str) and name in preset_names:
                enabled_presets.append(name)
            else:
                c.add(
                    f"{_join(path, 'presets')}[{i}]",
                    f"unknown preset {name!r} of {destination.type}{_did_you_mean(str(name), preset_names)}",
                )
    else:
        c.add(_join(path, "presets"), "must be true, false or a list of preset names")

    explicit: list[tuple[str, SubscriptionConfig]] = []
    raw_subs = data.get("subscriptions")
    if raw_subs is not None and not isinstance(raw_subs, list):
        c.add(_join(path, "subscriptions"), f"must be a list, got {_kind(raw_subs)}")
        raw_subs = []
    for i, raw in enumerate(raw_subs or []):
        sub_path = f"{_join(path, 'subscriptions')}[{i}]"
        sub = _subscription(c, raw, sub_path, destination, k)
        if sub is not None:
            explicit.append((sub_path, sub))

    # A subscription naming a preset replaces that preset's automatic subscription in place.
    used: set[int] = set()
    result: list[tuple[str, SubscriptionConfig]] = []
    for name in enabled_presets:
        override = next(((p, s) for p, s in explicit if s.preset == name), None)
        if override is not None:
            result.append(override)
            used.add(id(override[1]))
            continue
        preset = destination.preset(name)
        assert preset is not None
        preset_path = f"{_join(path, 'presets')}({name})"
        _check_trigger(c, preset.subscribe, preset_path, k)
        _check_mapping(c, preset.mapping, preset_path, k, destination.actions[preset.action])
        sub = SubscriptionConfig(
            name=preset.name,
            trigger=preset.subscribe,
            action=preset.action,
            mapping=MappingProxyType(dict(preset.mapping)),
            preset=preset.name,
        )
        result.append((preset_path, sub))
    result.extend((p, s) for p, s in explicit if id(s) not in used)

    names: dict[str, str] = {}
    for sub_path, sub in result:
        if sub.name in names:
            c.add(
                _join(sub_path, "name"),
                f"duplicate subscription name {sub.name!r} in this destination (also {names[sub.name]});"
                " names identify deliveries and dead letters",
            )
        else:
            names[sub.name] = sub_path
    return [s for _, s in result]


def _batch(
    c: _Checker, value: Any, path: str, base: BatchConfig | None, max_events: int
) -> BatchConfig | None:
    """`batch: true | false | {max_events, max_bytes, max_wait_ms}`; None when off or not valid (the
    problem recorded). Keys not given come from `base` (the destination's batch), else the defaults."""
    if isinstance(value, _FromEnv):
        try:
            value = _bool(value)
        except ValueError as exc:
            c.add(path, str(exc))
            return None
    if value is False or value is None:
        return None
    d = base or BatchConfig()
    if value is True:
        return d
    if not isinstance(value, dict):
        keys = "max_events, max_bytes, max_wait_ms"
        c.add(path, f"must be true, false or a mapping of {keys}; got {_kind(value)}")
        return None
    data = value
    c.keys(data, BatchConfig.__dataclass_fields__, path)
    before = len(c.problems)
    config = BatchConfig(
        max_events=_get(c, data, "max_events", path, _int(1, max_events), d.max_events),
        max_bytes=_get(c, data, "max_bytes", path, _int(1024, 100_000_000), d.max_bytes),
        max_wait_ms=_get(c, data, "max_wait_ms", path, _float(0.0, maximum=60_000), d.max_wait_ms),
    )
    return None if len(c.problems) > before else config


def _batching(
    c: _Checker,
    data: Mapping[str, Any],
    path: str,
    destination: Destination,
    subscriptions: list[SubscriptionConfig],
) -> tuple[BatchConfig | None, list[SubscriptionConfig]]:
    """The destination's `batch` and each subscription's, checked against what its action can batch."""
    import dataclasses

    limits = {key: a.batching.max_events for key, a in destination.actions.items() if a.batching is not None}
    cap = max(limits.values(), default=0)
    dest_path = _join(path, "batch")
    dest_batch: BatchConfig | None = None
    if data.get("batch") not in (None, False):
        if not limits:
            c.add(dest_path, f"{destination.type} sends one event per request; it has no batch endpoint")
        else:
            dest_batch = _batch(c, data.get("batch"), dest_path, None, cap)
    # The subscriptions the user wrote, by the name they end up with, for their own `batch` key.
    own: dict[str, tuple[str, Any]] = {}
    raw_subs = data.get("subscriptions")
    for i, raw in enumerate(raw_subs if isinstance(raw_subs, list) else []):
        if isinstance(raw, dict) and "batch" in raw:
            name = raw.get("name") or raw.get("preset")
            if isinstance(name, str):
                own[name] = (f"{_join(path, 'subscriptions')}[{i}].batch", raw["batch"])
    result = []
    for sub in subscriptions:
        sub_cap = limits.get(sub.action)
        batch: BatchConfig | None = dest_batch if sub_cap is not None else None
        if sub.name in own:
            sub_path, value = own[sub.name]
            if sub_cap is None:
                if value not in (None, False):
                    c.add(sub_path, f"action {sub.action!r} of {destination.type} cannot batch")
                batch = None
            else:
                batch = _batch(c, value, sub_path, dest_batch, sub_cap)
        result.append(dataclasses.replace(sub, batch=batch) if batch is not None else sub)
    return dest_batch, result


def _check_trigger(c: _Checker, trigger: str, path: str, k: _Collaborators) -> None:
    from streamproc.errors import FQLError

    try:
        k.parse_trigger(trigger)
    except FQLError as exc:
        c.add(path, str(exc))


def _check_mapping(
    c: _Checker, mapping: Mapping[str, Any], path: str, k: _Collaborators, action: Action | None
) -> None:
    """The mapping compiles, names only the action's fields, and has no directive that fails
    whenever it runs (a disabled liquid tag or filter, a template that does not parse, ...)."""
    from streamproc.errors import MappingError

    try:
        k.compile_mapping(mapping)
    except MappingError as exc:
        c.add(path, str(exc))
        return
    if action is not None:
        _check_field_names(c, mapping, path, action.key, action.fields)
    for where, message in k.mapping_problems(mapping):
        c.add(_join(path, where) if where else path, message)


def _check_field_names(
    c: _Checker, mapping: Any, path: str, action: str, fields: Mapping[str, Field]
) -> None:
    """A key that is not a field is dropped from the payload without a word, so a misspelt field is
    simply missing; objects with their own fields (and the items of @arrayPath) are checked too."""
    from streamproc.core.mapping import ROOT_DIRECTIVE_KEY

    if not isinstance(mapping, dict) or any(key.startswith("@") for key in mapping):
        return
    for key, value in mapping.items():
        field = fields.get(key)
        if field is None:
            if key != ROOT_DIRECTIVE_KEY:
                c.add(_join(path, key), f"not a field of action {action!r}{_did_you_mean(key, fields)}")
            continue
        if field.properties is None or field.additional_properties:
            continue
        if isinstance(value, dict) and "@arrayPath" in value:
            option = value["@arrayPath"]
            if isinstance(option, list) and len(option) > 1:
                where = _join(path, key) + ".@arrayPath[1]"
                _check_field_names(c, option[1], where, action, field.properties)
        else:
            _check_field_names(c, value, _join(path, key), action, field.properties)


def _subscription(
    c: _Checker, value: Any, path: str, destination: Destination, k: _Collaborators
) -> SubscriptionConfig | None:
    data = c.mapping(value, path, allow_none=False)
    if data is None:
        return None
    c.keys(data, [s.name for s in key_specs(SubscriptionConfig)], path)
    use_defaults = _get(c, data, "defaults", path, _bool, True)
    enabled = _get(c, data, "enabled", path, _bool, True)
    name = _get(c, data, "name", path, _str(), None)
    trigger = _get(c, data, "trigger", path, _str(), None)
    action = _get(c, data, "action", path, _str(), None)
    user_mapping = _plain(c.mapping(data.get("mapping"), _join(path, "mapping")))
    ok = user_mapping is not None

    preset_name = _get(c, data, "preset", path, _str(), None)
    base_mapping: Mapping[str, Any] = {}
    if preset_name is not None:
        preset = destination.preset(preset_name)
        if preset is None:
            names = [p.name for p in destination.presets]
            c.add(
                _join(path, "preset"),
                f"unknown preset {preset_name!r} of {destination.type}{_did_you_mean(preset_name, names)}",
            )
            return None
        if action is not None and action != preset.action:
            c.add(
                _join(path, "action"), f"preset {preset.name!r} uses action {preset.action!r}, not {action!r}"
            )
            ok = False
        action, name = preset.action, name or preset.name
        trigger = trigger or preset.subscribe
        base_mapping = preset.mapping
    else:
        if name is None and data.get("name") is None:
            c.add(_join(path, "name"), "is required (or name a preset with `preset:`)")
            ok = False
        if trigger is None and data.get("trigger") is None:
            c.add(_join(path, "trigger"), 'is required: an FQL trigger such as event = "Order Completed"')
            ok = False
        if action is None and data.get("action") is None:
            c.add(_join(path, "action"), f"is required: one of {', '.join(destination.actions)}")
            ok = False
        elif action is not None and action not in destination.actions:
            c.add(
                _join(path, "action"),
                f"unknown action {action!r} of {destination.type}"
                f"{_did_you_mean(action, destination.actions)}",
            )
            ok = False
        elif action is not None:
            base_mapping = destination.default_mapping(action)

    if trigger is not None:
        _check_trigger(c, trigger, _join(path, "trigger"), k)
    final_mapping: dict[str, Any] = {}
    if user_mapping is not None:
        final_mapping = {**base_mapping, **user_mapping} if use_defaults else dict(user_mapping)
        known = destination.actions.get(action) if action is not None else None
        _check_mapping(c, final_mapping, _join(path, "mapping"), k, known)
    if not ok or name is None or trigger is None or action is None or action not in destination.actions:
        return None
    return SubscriptionConfig(
        name=name,
        trigger=trigger,
        action=action,
        mapping=MappingProxyType(final_mapping),
        enabled=enabled,
        preset=preset_name,
    )


# ---------------------------------------------------------------------------------------------
# Entry points


def _interpolate_tree(c: _Checker, value: Any, path: str, env: Mapping[str, str]) -> Any:
    c.order.setdefault(path, len(c.order))
    if isinstance(value, str):
        text, problems = interpolate(value, env)
        for problem in problems:
            c.add(path, problem)
        return text
    if isinstance(value, dict):
        return {key: _interpolate_tree(c, val, _join(path, str(key)), env) for key, val in value.items()}
    if isinstance(value, list):
        return [_interpolate_tree(c, val, f"{path}[{i}]", env) for i, val in enumerate(value)]
    return value


def parse_config(data: Any, source: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    """Check already-parsed configuration data; raises ConfigError listing every problem."""
    if env is None:
        env = os.environ
    c = _Checker(source)
    if data is None:
        raise ConfigError(ConfigProblem(source, "", "the configuration is empty"))
    root = c.mapping(data, "", allow_none=False)
    if root is None:
        raise ConfigError(c.problems)
    root = _interpolate_tree(c, root, "", env)
    c.keys(root, [s.name for s in key_specs(Config)], "")

    kafka = _kafka(c, root["kafka"]) if root.get("kafka") is not None else None
    input_config = _input(c, root.get("input"))
    limits = _limits(c, root.get("limits"))
    metrics = _section(c, root.get("metrics"), MetricsConfig, "metrics")
    log = _section(c, root.get("log"), LogConfig, "log")
    http = _section(c, root.get("http"), HttpConfig, "http")

    destinations: list[DestinationConfig] = []
    raw_destinations = root.get("destinations")
    if raw_destinations is None:
        raw_destinations = []
    if not isinstance(raw_destinations, list):
        c.add("destinations", f"must be a list, got {_kind(raw_destinations)}")
        raw_destinations = []
    if raw_destinations:
        collaborators = _Collaborators()
        seen: dict[str, str] = {}
        for i, raw in enumerate(raw_destinations):
            dest = _destination(c, raw, f"destinations[{i}]", collaborators, seen)
            if dest is not None:
                destinations.append(dest)
    if c.problems:
        raise ConfigError(c.sorted_problems())
    return Config(
        source=source,
        kafka=kafka,
        input=input_config,
        limits=limits,
        metrics=metrics,
        log=log,
        destinations=tuple(destinations),
        http=http,
        warnings=tuple(c.warnings),
    )


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read a YAML (or JSON) configuration file and check it; raises ConfigError listing every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(ConfigProblem(source, "", f"cannot read the file: {exc.strerror or exc}")) from None
    try:
        data = json.loads(text) if source.endswith(".json") else load_yaml(text, source)
    except json.JSONDecodeError as exc:
        raise ConfigError(ConfigProblem(source, f"line {exc.lineno}", f"not valid JSON: {exc.msg}")) from None
    return parse_config(data, source, os.environ if env is None else env)
