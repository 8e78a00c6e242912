"""Broker questions asked at start and by tools: do the topics exist, how far behind is a group."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import confluent_kafka
import structlog
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec

from streamproc.errors import KafkaError

__all__ = ["check_topics", "ensure_retry_topics", "group_lag", "max_message_bytes", "wait_until_served"]

log = structlog.get_logger("streamproc.admin")


def _admin_config(bootstrap_servers: str, client: Mapping[str, Any]) -> dict[str, Any]:
    conf: dict[str, Any] = {
        k: v for k, v in client.items() if not k.startswith(("group.", "enable.", "auto."))
    }
    conf["bootstrap.servers"] = bootstrap_servers
    return conf


def check_topics(
    bootstrap_servers: str, client: Mapping[str, Any], topics: Iterable[str], *, timeout: float = 15.0
) -> dict[str, int]:
    """Partition count of each topic; raises KafkaError naming the missing ones or the unreachable broker."""
    wanted = list(dict.fromkeys(topics))
    admin = AdminClient(_admin_config(bootstrap_servers, client))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except confluent_kafka.KafkaException as exc:
        raise KafkaError(
            f"cannot reach the Kafka brokers at {bootstrap_servers} within {timeout:g}s ({exc.args[0]}); "
            "check kafka.bootstrap_servers and the kafka.client security settings"
        ) from exc
    found: dict[str, int] = {}
    missing = []
    for name in wanted:
        topic = metadata.topics.get(name)
        if topic is None or topic.error is not None or not topic.partitions:
            missing.append(name)
        else:
            found[name] = len(topic.partitions)
    if missing:
        raise KafkaError(
            f"topic(s) {', '.join(repr(t) for t in missing)} do not exist on {bootstrap_servers}; "
            "create them (the dead-letter topic too) before starting the worker"
        )
    return found


def max_message_bytes(
    bootstrap_servers: str,
    client: Mapping[str, Any],
    topics: Iterable[str],
    *,
    fallback: int,
    timeout: float = 5.0,
) -> int:
    """The largest record every one of `topics` takes (the least of their `max.message.bytes`).

    A topic whose configuration may not be described (no DescribeConfigs right) counts as
    `fallback` (the broker's default), and a log line says so: records are then cut to that size."""
    wanted = list(dict.fromkeys(topics))
    admin = AdminClient(_admin_config(bootstrap_servers, client))
    futures = admin.describe_configs(
        [ConfigResource(ConfigResource.Type.TOPIC, name) for name in wanted], request_timeout=timeout
    )
    limits = []
    for resource, future in futures.items():
        try:
            entry = future.result(timeout).get("max.message.bytes")
            limits.append(int(entry.value))
        except (confluent_kafka.KafkaException, TimeoutError, AttributeError, TypeError, ValueError) as exc:
            error = exc.args[0] if exc.args else "no answer"
            log.warning(
                "topic_limit_unknown",
                topic=resource.name,
                error=str(error.str() if isinstance(error, confluent_kafka.KafkaError) else error),
                assumed_max_message_bytes=fallback,
                fix="allow DescribeConfigs on the topic, or records larger than the assumed limit are cut",
            )
            limits.append(fallback)
    return min(limits, default=fallback)


def ensure_retry_topics(
    bootstrap_servers: str,
    client: Mapping[str, Any],
    topics: Iterable[str],
    partitions: int,
    *,
    create: bool = True,
    timeout: float = 15.0,
) -> list[str]:
    """Make sure each retry topic exists with at least `partitions` partitions (a record parked from
    input partition p goes to retry partition p); creates the missing ones when `create`. Returns
    the topics it created; raises KafkaError saying what to create by hand otherwise."""
    wanted = list(dict.fromkeys(topics))
    if not wanted:
        return []
    admin = AdminClient(_admin_config(bootstrap_servers, client))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except confluent_kafka.KafkaException as exc:
        raise KafkaError(f"cannot reach the Kafka brokers at {bootstrap_servers}: {exc.args[0]}") from exc
    missing = []
    for name in wanted:
        topic = metadata.topics.get(name)
        if topic is None or topic.error is not None or not topic.partitions:
            missing.append(name)
        elif len(topic.partitions) < partitions:
            raise KafkaError(
                f"retry topic {name!r} has {len(topic.partitions)} partitions; it needs at least "
                f"{partitions} (as many as the input topics): add partitions to it"
            )
    if not missing:
        return []
    advice = (
        f"create {', '.join(repr(t) for t in missing)} with at least {partitions} partitions "
        "(or allow this worker to create topics)"
    )
    if not create:
        raise KafkaError(f"retry topic(s) missing and kafka.create_retry_topics is false: {advice}")
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=-1) for name in missing],
        operation_timeout=timeout,
    )
    for name, future in futures.items():
        try:
            future.result(timeout)
        except confluent_kafka.KafkaException as exc:
            err = exc.args[0]
            if err.code() != confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaError(f"cannot create retry topic {name!r} ({err.str()}); {advice}") from exc
    wait_until_served(admin, missing, timeout)
    return missing


def wait_until_served(admin: AdminClient, topics: Iterable[str], timeout: float = 30.0) -> None:
    """A created topic is usable once every partition's leader answers for it: until then reading
    its offsets answers NOT_LEADER_FOR_PARTITION (the metadata can name a leader a moment before
    that broker serves the partition). Ask each partition's end offset until all answer."""
    deadline = time.monotonic() + timeout
    pending: set[tuple[str, int]] = set()
    for name in topics:
        while True:
            try:
                meta = admin.list_topics(topic=name, timeout=max(0.5, deadline - time.monotonic()))
                parts = meta.topics[name].partitions
                if parts:
                    break
            except (confluent_kafka.KafkaException, KeyError):
                pass
            if time.monotonic() >= deadline:
                raise KafkaError(f"topic {name!r} was created but has no partitions after {timeout:g}s")
            time.sleep(0.1)
        pending.update((name, p) for p in parts)
    while pending:
        futures = admin.list_offsets(
            {TopicPartition(t, p): OffsetSpec.latest() for t, p in sorted(pending)},
            request_timeout=max(0.5, min(5.0, deadline - time.monotonic())),
        )
        for tp, future in futures.items():
            try:
                future.result()
            except confluent_kafka.KafkaException:
                continue
            pending.discard((tp.topic, tp.partition))
        if not pending:
            return
        if time.monotonic() >= deadline:
            names = sorted({f"{t}[{p}]" for t, p in pending})
            raise KafkaError(
                f"partition(s) {', '.join(names)} were created but no leader serves them after "
                f"{timeout:g}s; check the brokers"
            )
        time.sleep(0.1)


def group_lag(
    bootstrap_servers: str,
    client: Mapping[str, Any],
    group_id: str,
    topics: Iterable[str],
    *,
    timeout: float = 15.0,
) -> dict[tuple[str, int], tuple[int | None, int]]:
    """(committed offset or None, end offset) of every partition of `topics` for `group_id`."""
    conf = _admin_config(bootstrap_servers, client)
    conf.update({"group.id": group_id, "enable.auto.commit": False})
    consumer = confluent_kafka.Consumer(conf)
    try:
        metadata = consumer.list_topics(timeout=timeout)
        tps = [
            TopicPartition(t, p)
            for t in topics
            if t in metadata.topics
            for p in sorted(metadata.topics[t].partitions)
        ]
        committed = consumer.committed(tps, timeout=timeout)
        out: dict[tuple[str, int], tuple[int | None, int]] = {}
        for tp in committed:
            _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout)
            out[(tp.topic, tp.partition)] = (tp.offset if tp.offset >= 0 else None, high)
        return out
    finally:
        consumer.close()
