"""Defines the configuration's frozen models and, per field, the key of the file that fills it (`Key`).

Each model field is annotated with a `Key` rule: what the key means and its bounds. The checks
(streamproc.config.checker) read plain keys by these rules, and the JSON Schema
(streamproc.config.schema) states the same rules for editors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

from streamproc.destinations import registry
from streamproc.errors import ConfigProblem

__all__ = [
    "CONSENT_CATEGORY",
    "FIELD_PATH",
    "ID_PATTERN",
    "KAFKA_OWNED",
    "MAX_IN_FLIGHT_BYTES",
    "MAX_SUBSCRIPTIONS",
    "TOPIC_PATTERN",
    "BatchConfig",
    "BreakerPolicy",
    "Config",
    "DestinationConfig",
    "DestinationLimits",
    "FilterConfig",
    "FilterKind",
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
    "key_spec",
    "key_specs",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})

# The worker owns these librdkafka settings: offsets are stored only once deliveries are complete.
KAFKA_OWNED = {
    "bootstrap.servers": "kafka.bootstrap_servers",
    "group.id": "kafka.group_id",
    "group.instance.id": "kafka.group_instance_id",
    "enable.auto.commit": "streamproc's own commit loop",
    "enable.auto.offset.store": "streamproc's own offset tracking",
}
_SETTINGS_SCHEMA = {
    "type": "object",
    "additionalProperties": {"type": ["string", "number", "boolean"]},
    "propertyNames": {"not": {"enum": list(KAFKA_OWNED)}},
}
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
TOPIC_PATTERN = r"[A-Za-z0-9._-]{1,249}"


@dataclass(frozen=True)
class Key:
    """What one key of the file means and the bounds the loader holds it to.

    Attached to a model field as `Annotated[type, Key(...)]`; the loader of a plain section reads
    the key with these bounds and the JSON Schema (streamproc.config.schema) states the same.
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
                        "items": {"type": "string", "pattern": f"^({TOPIC_PATTERN}|.*\\$\\{{.*)$"},
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
            "ssl.*, client.id, ...); " + ", ".join(KAFKA_OWNED) + " are set by streamproc",
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
            schema={"type": "string", "pattern": f"^({TOPIC_PATTERN}|.*\\$\\{{.*)$"},
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
CONSENT_CATEGORY = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}"
FIELD_PATH = r"[^.]+(\.[^.]+)*"
MAX_SUBSCRIPTIONS = 50  # Segment's limit of subscriptions (mappings) per destination instance


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
    paths = {"type": "array", "items": {"type": "string", "pattern": f"^{FIELD_PATH}$"}, "minItems": 1}
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
                            "pattern": f"^{FIELD_PATH}$",
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
            schema={"type": "string", "pattern": f"^{ID_PATTERN}$"},
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
            schema={"type": "array", "items": {"type": "string", "pattern": f"^{CONSENT_CATEGORY}$"}},
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


def key_spec(model: type, name: str) -> KeySpec:
    """The key `name` of `model`."""
    return next(s for s in key_specs(model) if s.name == name)
