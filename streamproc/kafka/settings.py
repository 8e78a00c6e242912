"""The user's librdkafka settings for each kind of client: `kafka.client` for all of them,
`kafka.consumer` or `kafka.producer` on top, and librdkafka's own log lines routed through structlog.

A producer (dead letters, retry records) or an admin client never gets a consumer-only setting from
`kafka.client`: librdkafka would print a configuration warning for each one at every start.
"""

from __future__ import annotations

from typing import Any, Protocol

from streamproc.logging import librdkafka_logger

__all__ = ["admin_settings", "consumer_only", "consumer_settings", "producer_settings"]

_CONSUMER_ONLY = (
    "group.",
    "enable.auto.",
    "auto.",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
    "coordinator.query.interval.ms",
    "offset.store.",
    "consume.callback.max.messages",
    "fetch.",
    "queued.",
    "max.partition.fetch.bytes",
    "isolation.level",
    "check.crcs",
    "enable.partition.eof",
)


def consumer_only(key: str) -> bool:
    """Whether a librdkafka setting only means something to a consumer (a producer would warn)."""
    return key.startswith(_CONSUMER_ONLY)


class KafkaSettings(Protocol):
    """The parts of `KafkaConfig` read here."""

    @property
    def client(self) -> Any: ...

    @property
    def consumer(self) -> Any: ...

    @property
    def producer(self) -> Any: ...


def consumer_settings(kafka: KafkaSettings) -> dict[str, Any]:
    """`kafka.client`, then `kafka.consumer`, and the logger (for the live, retry and range consumers)."""
    return {**kafka.client, **kafka.consumer, "logger": librdkafka_logger()}


def producer_settings(kafka: KafkaSettings) -> dict[str, Any]:
    """`kafka.client` without its consumer-only settings, then `kafka.producer`, and the logger."""
    common = {k: v for k, v in kafka.client.items() if not consumer_only(k)}
    return {**common, **kafka.producer, "logger": librdkafka_logger()}


def admin_settings(kafka: KafkaSettings) -> dict[str, Any]:
    """`kafka.client` without its consumer-only settings, and the logger (topic checks, creation)."""
    common = {k: v for k, v in kafka.client.items() if not consumer_only(k)}
    return {**common, "logger": librdkafka_logger()}
