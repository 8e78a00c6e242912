"""Loads and checks the configuration file (YAML or JSON, `${VAR}` from the environment) into frozen data."""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar

import yaml

from streamproc.destinations.base import Destination
from streamproc.errors import ConfigError, ConfigProblem, PayloadValidationError

__all__ = [
    "BatchConfig",
    "BreakerPolicy",
    "Config",
    "DestinationConfig",
    "DestinationLimits",
    "InputConfig",
    "KafkaConfig",
    "Limits",
    "LogConfig",
    "MetricsConfig",
    "RetryPolicy",
    "SubscriptionConfig",
    "interpolate",
    "load_config",
    "parse_config",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class KafkaConfig:
    """Where events come from and where dead letters go."""

    bootstrap_servers: str
    topics: tuple[str, ...]
    group_id: str = "streamproc"
    dead_letter_topic: str = "streamproc.dlq"
    client: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """Passed through to librdkafka (security.protocol, sasl.*, ssl.*, ...)."""


@dataclass(frozen=True)
class InputConfig:
    """How input messages are encoded."""

    format: Literal["json", "avro"] = "json"
    schema_registry_url: str | None = None
    schema_file: str | None = None


@dataclass(frozen=True)
class Limits:
    """Worker-wide bounds: memory (in-flight events), batching of polls, commit cadence, shutdown."""

    max_in_flight_events: int = 10000
    resume_in_flight_events: int = 5000
    poll_batch_size: int = 500
    commit_interval: float = 5.0
    shutdown_timeout: float = 30.0
    revoke_timeout: float = 15.0


@dataclass(frozen=True)
class RetryPolicy:
    """How long one delivery keeps trying: attempts, a time budget, and exponential backoff bounds."""

    max_attempts: int = 8
    budget: float = 300.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


@dataclass(frozen=True)
class BreakerPolicy:
    """When a destination's circuit opens (failure ratio over a window) and for how long."""

    failure_ratio: float = 0.5
    min_requests: int = 20
    window: float = 30.0
    open_for: float = 10.0


@dataclass(frozen=True)
class DestinationLimits:
    """Per-destination bulkhead: concurrent requests, requests per second, timeout, retry, breaker."""

    concurrency: int = 64
    rate: float | None = None
    timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)


@dataclass(frozen=True)
class BatchConfig:
    """Opt-in batching of single-event requests: a batch goes out at `max_events`, at `max_bytes` of
    combined body, or `max_wait_ms` after it opened, whichever comes first."""

    max_events: int = 1000
    max_bytes: int = 4_000_000
    max_wait_ms: float = 100.0


@dataclass(frozen=True)
class SubscriptionConfig:
    """A trigger, an action and the final mapping (merged over the action's defaults unless asked not to)."""

    name: str
    trigger: str
    action: str
    mapping: Mapping[str, Any]
    enabled: bool = True
    preset: str | None = None
    batch: BatchConfig | None = None
    """Set when this subscription's deliveries are batched (the destination's `batch` or its own)."""


@dataclass(frozen=True)
class DestinationConfig:
    """One configured destination instance with its checked settings and subscriptions."""

    id: str
    type: str
    settings: Mapping[str, Any]
    endpoint: str
    ordering: Literal["none", "key"] = "none"
    limits: DestinationLimits = field(default_factory=DestinationLimits)
    subscriptions: tuple[SubscriptionConfig, ...] = ()
    batch: BatchConfig | None = None
    """The destination's `batch` setting, the default of its subscriptions whose action can batch."""


@dataclass(frozen=True)
class MetricsConfig:
    """Where the Prometheus /metrics (and health) endpoint listens."""

    host: str = "0.0.0.0"
    port: int = 9464
    enabled: bool = True


@dataclass(frozen=True)
class LogConfig:
    """Log rendering: JSON for production, console for people, auto picks by whether stderr is a TTY."""

    format: Literal["auto", "json", "console"] = "auto"
    level: str = "info"


@dataclass(frozen=True)
class Config:
    """The whole checked configuration."""

    source: str
    kafka: KafkaConfig | None
    input: InputConfig
    limits: Limits
    metrics: MetricsConfig
    log: LogConfig
    destinations: tuple[DestinationConfig, ...]


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
    minimum: float = 0.0, *, exclusive: bool = True, maximum: float | None = None
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
        if (number <= minimum) if exclusive else (number < minimum):
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


def _choice(*options: str, lower: bool = False) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be one of {', '.join(options)}; got {_kind(value)}")
        text = value.lower() if lower else value
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

_TOP_KEYS = ("kafka", "input", "limits", "metrics", "log", "destinations")
_KAFKA_KEYS = ("bootstrap_servers", "topics", "group_id", "dead_letter_topic", "client")
# The worker owns these librdkafka settings: offsets are stored only once deliveries are complete.
_KAFKA_OWNED = {
    "bootstrap.servers": "kafka.bootstrap_servers",
    "group.id": "kafka.group_id",
    "enable.auto.commit": "streamproc's own commit loop",
    "enable.auto.offset.store": "streamproc's own offset tracking",
}


def _kafka(c: _Checker, value: Any) -> KafkaConfig | None:
    data = c.mapping(value, "kafka")
    if data is None:
        return None
    c.keys(data, _KAFKA_KEYS, "kafka")
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
            if not isinstance(topic, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", topic):
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
    client: dict[str, str] = {}
    raw_client = c.mapping(data.get("client"), "kafka.client")
    for key, val in (raw_client or {}).items():
        path = f"kafka.client.{key}"
        if key in _KAFKA_OWNED:
            c.add(path, f"is set by streamproc; use {_KAFKA_OWNED[key]}")
        elif isinstance(val, bool):
            client[key] = "true" if val else "false"
        elif isinstance(val, str | int | float):
            client[key] = str(val)
        else:
            c.add(path, f"must be a string, number or boolean, got {_kind(val)}")
    return KafkaConfig(
        bootstrap_servers=servers,
        topics=tuple(topics),
        group_id=group_id,
        dead_letter_topic=dlq,
        client=MappingProxyType(client),
    )


def _input(c: _Checker, value: Any) -> InputConfig:
    data = c.mapping(value, "input")
    if data is None:
        return InputConfig()
    c.keys(data, ("format", "schema_registry_url", "schema_file"), "input")
    fmt = _get(c, data, "format", "input", _choice("json", "avro", lower=True), "json")
    registry = _get(c, data, "schema_registry_url", "input", _url, None)
    schema_file = _get(c, data, "schema_file", "input", _str(), None)
    if fmt == "avro" and registry is None and schema_file is None:
        c.add("input", "format avro needs schema_registry_url (Confluent wire format) or schema_file")
    return InputConfig(format=fmt, schema_registry_url=registry, schema_file=schema_file)  # type: ignore[arg-type]


def _limits(c: _Checker, value: Any) -> Limits:
    data = c.mapping(value, "limits")
    if data is None:
        return Limits()
    d = Limits()
    c.keys(data, Limits.__dataclass_fields__, "limits")
    limits = Limits(
        max_in_flight_events=_get(c, data, "max_in_flight_events", "limits", _int(1), d.max_in_flight_events),
        resume_in_flight_events=_get(
            c, data, "resume_in_flight_events", "limits", _int(0), d.resume_in_flight_events
        ),
        poll_batch_size=_get(c, data, "poll_batch_size", "limits", _int(1, 100_000), d.poll_batch_size),
        commit_interval=_get(c, data, "commit_interval", "limits", _float(), d.commit_interval),
        shutdown_timeout=_get(c, data, "shutdown_timeout", "limits", _float(), d.shutdown_timeout),
        revoke_timeout=_get(c, data, "revoke_timeout", "limits", _float(), d.revoke_timeout),
    )
    if limits.resume_in_flight_events >= limits.max_in_flight_events:
        if "resume_in_flight_events" in data:
            c.add(
                "limits.resume_in_flight_events",
                f"must be below max_in_flight_events ({limits.max_in_flight_events})",
            )
        else:
            limits = Limits(
                **{**limits.__dict__, "resume_in_flight_events": limits.max_in_flight_events // 2}
            )
    return limits


def _metrics(c: _Checker, value: Any) -> MetricsConfig:
    data = c.mapping(value, "metrics")
    if data is None:
        return MetricsConfig()
    c.keys(data, ("host", "port", "enabled"), "metrics")
    d = MetricsConfig()
    return MetricsConfig(
        host=_get(c, data, "host", "metrics", _str(), d.host),
        port=_get(c, data, "port", "metrics", _int(0, 65535), d.port),
        enabled=_get(c, data, "enabled", "metrics", _bool, d.enabled),
    )


_LEVELS = ("debug", "info", "warning", "error", "critical")


def _log(c: _Checker, value: Any) -> LogConfig:
    data = c.mapping(value, "log")
    if data is None:
        return LogConfig()
    c.keys(data, ("format", "level"), "log")
    level_raw = data.get("level")
    if isinstance(level_raw, str) and level_raw.lower() == "warn":
        data = {**data, "level": "warning"}
    return LogConfig(
        format=_get(c, data, "format", "log", _choice("auto", "json", "console", lower=True), "auto"),  # type: ignore[arg-type]
        level=_get(c, data, "level", "log", _choice(*_LEVELS, lower=True), "info"),
    )


def _retry(c: _Checker, value: Any, path: str) -> RetryPolicy:
    data = c.mapping(value, path)
    if data is None:
        return RetryPolicy()
    c.keys(data, RetryPolicy.__dataclass_fields__, path)
    d = RetryPolicy()
    policy = RetryPolicy(
        max_attempts=_get(c, data, "max_attempts", path, _int(1), d.max_attempts),
        budget=_get(c, data, "budget", path, _float(), d.budget),
        backoff_initial=_get(c, data, "backoff_initial", path, _float(), d.backoff_initial),
        backoff_max=_get(c, data, "backoff_max", path, _float(), d.backoff_max),
    )
    if policy.backoff_max < policy.backoff_initial:
        c.add(
            _join(path, "backoff_max"), f"must be at least backoff_initial ({_num(policy.backoff_initial)})"
        )
    return policy


def _breaker(c: _Checker, value: Any, path: str) -> BreakerPolicy:
    data = c.mapping(value, path)
    if data is None:
        return BreakerPolicy()
    c.keys(data, BreakerPolicy.__dataclass_fields__, path)
    d = BreakerPolicy()
    return BreakerPolicy(
        failure_ratio=_get(c, data, "failure_ratio", path, _float(0.0, maximum=1.0), d.failure_ratio),
        min_requests=_get(c, data, "min_requests", path, _int(1), d.min_requests),
        window=_get(c, data, "window", path, _float(), d.window),
        open_for=_get(c, data, "open_for", path, _float(), d.open_for),
    )


def _destination_limits(c: _Checker, value: Any, path: str) -> DestinationLimits:
    data = c.mapping(value, path)
    if data is None:
        return DestinationLimits()
    c.keys(data, DestinationLimits.__dataclass_fields__, path)
    d = DestinationLimits()
    return DestinationLimits(
        concurrency=_get(c, data, "concurrency", path, _int(1, 10_000), d.concurrency),
        rate=_get(c, data, "rate", path, _float(), d.rate),
        timeout=_get(c, data, "timeout", path, _float(), d.timeout),
        retry=_retry(c, data.get("retry"), _join(path, "retry")),
        breaker=_breaker(c, data.get("breaker"), _join(path, "breaker")),
    )


# ---------------------------------------------------------------------------------------------
# Destinations and subscriptions

_DESTINATION_KEYS = (
    "id",
    "type",
    "settings",
    "endpoint",
    "ordering",
    "limits",
    "presets",
    "subscriptions",
    "batch",
)
_SUBSCRIPTION_KEYS = ("name", "trigger", "action", "mapping", "defaults", "enabled", "preset", "batch")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class _Collaborators:
    """FQL, the mapping kit and the settings check, imported once per load (they are heavier modules)."""

    def __init__(self) -> None:
        from streamproc import fql, mapping
        from streamproc.destinations import registry, runtime

        self.parse_trigger = fql.parse
        self.compile_mapping = mapping.compile
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
    c.keys(data, _DESTINATION_KEYS, path)
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
    ordering = _get(c, data, "ordering", path, _choice("none", "key", lower=True), "none")
    limits = _destination_limits(c, data.get("limits"), _join(path, "limits"))

    subscriptions: list[SubscriptionConfig] = []
    batch: BatchConfig | None = None
    if destination is not None:
        subscriptions = _subscriptions(c, data, path, destination, k)
        batch, subscriptions = _batching(c, data, path, destination, subscriptions)
    return DestinationConfig(
        id=dest_id,
        type=destination.type if destination is not None else str(dest_type),
        settings=MappingProxyType(settings),
        endpoint=endpoint,
        ordering=ordering,  # type: ignore[arg-type]
        limits=limits,
        subscriptions=tuple(subscriptions),
        batch=batch,
    )


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
        _check_mapping(c, preset.mapping, preset_path, k)
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


def _check_mapping(c: _Checker, mapping: Mapping[str, Any], path: str, k: _Collaborators) -> None:
    from streamproc.errors import MappingError

    try:
        k.compile_mapping(mapping)
    except MappingError as exc:
        c.add(path, str(exc))


def _subscription(
    c: _Checker, value: Any, path: str, destination: Destination, k: _Collaborators
) -> SubscriptionConfig | None:
    data = c.mapping(value, path, allow_none=False)
    if data is None:
        return None
    c.keys(data, _SUBSCRIPTION_KEYS, path)
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
        _check_mapping(c, final_mapping, _join(path, "mapping"), k)
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
    c.keys(root, _TOP_KEYS, "")

    kafka = _kafka(c, root["kafka"]) if root.get("kafka") is not None else None
    input_config = _input(c, root.get("input"))
    limits = _limits(c, root.get("limits"))
    metrics = _metrics(c, root.get("metrics"))
    log = _log(c, root.get("log"))

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
    )


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read a YAML (or JSON) configuration file and check it; raises ConfigError listing every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(ConfigProblem(source, "", f"cannot read the file: {exc.strerror or exc}")) from None
    try:
        data = json.loads(text) if source.endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(ConfigProblem(source, f"line {exc.lineno}", f"not valid JSON: {exc.msg}")) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(ConfigProblem(source, where, f"not valid YAML: {reason}")) from None
    return parse_config(data, source, os.environ if env is None else env)
