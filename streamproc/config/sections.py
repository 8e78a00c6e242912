"""Checks the sections kafka, input and limits, and a destination's limits (keys bounding each other too)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from streamproc.config.checker import (
    Checker,
    as_bool,
    as_int,
    as_str,
    join_path,
    kind_of,
    read_key,
    section,
    show_number,
)
from streamproc.config.models import (
    KAFKA_OWNED,
    TOPIC_PATTERN,
    DestinationLimits,
    InputConfig,
    KafkaConfig,
    Limits,
    key_specs,
)

__all__ = ["check_destination_limits", "check_input", "check_kafka", "check_limits"]


def check_kafka(c: Checker, value: Any) -> KafkaConfig | None:
    """`kafka:` (None when it is not a mapping); the dead-letter topic and the retry prefix default
    from the topics and the group."""
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
            if not isinstance(topic, str) or not re.fullmatch(TOPIC_PATTERN, topic):
                c.add(f"kafka.topics[{i}]", "must be a Kafka topic name (letters, digits, '.', '_', '-')")
            else:
                topics.append(topic)
    group_id = read_key(c, data, "group_id", "kafka", as_str(), "streamproc")
    default_dlq = f"{topics[0]}.dlq" if topics else "streamproc.dlq"
    dlq = read_key(c, data, "dead_letter_topic", "kafka", as_str(), default_dlq)
    if dlq in topics:
        c.add(
            "kafka.dead_letter_topic",
            "must not be one of kafka.topics (dead letters would be consumed again)",
        )
    prefix = read_key(c, data, "retry_topic_prefix", "kafka", as_str(), f"{group_id}.retry.")
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,180}", prefix):
        c.add("kafka.retry_topic_prefix", "must start a Kafka topic name (letters, digits, '.', '_', '-')")
    elif any(t.startswith(prefix) for t in (*topics, dlq)):
        c.add("kafka.retry_topic_prefix", "must not be a prefix of kafka.topics or the dead-letter topic")
    create_retry = read_key(c, data, "create_retry_topics", "kafka", as_bool, True)
    instance = read_key(c, data, "group_instance_id", "kafka", as_str(), None)
    metadata_max = read_key(c, data, "offset_metadata_max_bytes", "kafka", as_int(0), 4096)
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


def _librdkafka_settings(c: Checker, data: Mapping[str, Any], name: str) -> Mapping[str, str]:
    """One of the kafka sections passed to librdkafka, every value as the string librdkafka reads."""
    settings: dict[str, str] = {}
    for key, val in (c.mapping(data.get(name), f"kafka.{name}") or {}).items():
        path = f"kafka.{name}.{key}"
        if key in KAFKA_OWNED:
            c.add(path, f"is set by streamproc; use {KAFKA_OWNED[key]}")
        elif isinstance(val, bool):
            settings[key] = "true" if val else "false"
        elif isinstance(val, str | int | float):
            settings[key] = str(val)
        else:
            c.add(path, f"must be a string, number or boolean, got {kind_of(val)}")
    return MappingProxyType(settings)


def check_input(c: Checker, value: Any) -> InputConfig:
    """`input:`; Avro needs a schema source."""
    config = section(c, value, InputConfig, "input")
    if config.format == "avro" and config.schema_registry_url is None and config.schema_file is None:
        c.add("input", "format avro needs schema_registry_url (Confluent wire format) or schema_file")
    return config


def check_limits(c: Checker, value: Any) -> Limits:
    """`limits:`; each resume mark is below its bound (halved with it when not given)."""
    limits = section(c, value, Limits, "limits")
    for unit in ("bytes", "events"):
        bound, resume = f"max_in_flight_{unit}", f"resume_in_flight_{unit}"
        if getattr(limits, resume) < getattr(limits, bound):
            continue
        if isinstance(value, dict) and resume in value:
            c.add(f"limits.{resume}", f"must be below {bound} ({getattr(limits, bound)})")
        else:
            limits = dataclasses.replace(limits, **{resume: getattr(limits, bound) // 2})
    return limits


def check_destination_limits(c: Checker, value: Any, path: str) -> DestinationLimits:
    """A destination's `limits:`; backoff and park delays are ordered, and a park delay fits the budget."""
    limits = section(c, value, DestinationLimits, path)
    retry = limits.retry
    if retry.backoff_max < retry.backoff_initial:
        c.add(
            join_path(path, "retry.backoff_max"),
            f"must be at least backoff_initial ({show_number(retry.backoff_initial)})",
        )
    if retry.park_delay_max < retry.park_delay:
        c.add(
            join_path(path, "retry.park_delay_max"),
            f"must be at least park_delay ({show_number(retry.park_delay)})",
        )
    parks = retry.park_after_attempts is not None or retry.park_after_seconds is not None
    if parks and retry.park_delay >= retry.budget:
        c.add(
            join_path(path, "retry.park_delay"),
            f"must be below budget ({show_number(retry.budget)}):"
            " a parked delivery would never be tried again",
        )
    return limits
