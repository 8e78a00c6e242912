"""Each kind of librdkafka client gets the settings meant for it, and librdkafka's own log lines
come out through structlog: JSON, scrubbed, never straight onto stderr."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pytest
import structlog
from confluent_kafka import Consumer, Producer

from streamproc.config import parse_config
from streamproc.kafka.consumer import consumer_config
from streamproc.kafka.producer import producer_config
from streamproc.kafka.settings import admin_settings, consumer_settings, producer_settings
from streamproc.logging import configure_logging, register_secrets


@dataclass(frozen=True)
class LogConfig:
    format: str = "json"
    level: str = "info"


def kafka_section(**sections: dict[str, object]):  # type: ignore[no-untyped-def]
    config = parse_config(
        {"kafka": {"bootstrap_servers": "k:9092", "topics": ["t"], **sections}}, "cfg.yaml", {}
    )
    assert config.kafka is not None
    return config.kafka


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    configure_logging(LogConfig(), stream=buf)
    yield buf
    structlog.reset_defaults()


def librdkafka_lines(buf: io.StringIO) -> list[dict]:
    found = [orjson.loads(line) for line in buf.getvalue().splitlines() if line.strip()]
    return [line for line in found if line.get("event") == "librdkafka"]


def test_consumer_and_producer_sections_go_to_their_clients_over_client() -> None:
    kafka = kafka_section(
        client={"client.id": "sp", "session.timeout.ms": 6000, "linger.ms": 1},
        consumer={"fetch.max.bytes": 1000000, "client.id": "sp-consumer"},
        producer={"linger.ms": 20},
    )
    consumer = consumer_settings(kafka)
    assert consumer["client.id"] == "sp-consumer" and consumer["fetch.max.bytes"] == "1000000"
    assert consumer["session.timeout.ms"] == "6000"
    producer = producer_settings(kafka)
    # Consumer-only settings of `client` never reach a producer (librdkafka warns about each).
    assert "session.timeout.ms" not in producer and "fetch.max.bytes" not in producer
    assert producer["linger.ms"] == "20" and producer["client.id"] == "sp"
    assert "session.timeout.ms" not in admin_settings(kafka)


def test_settings_streamproc_owns_are_refused_in_every_section() -> None:
    from streamproc.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        kafka_section(consumer={"enable.auto.commit": True}, producer={"bootstrap.servers": "x:1"})
    text = str(err.value)
    assert "kafka.consumer.enable.auto.commit: is set by streamproc" in text
    assert "kafka.producer.bootstrap.servers: is set by streamproc; use kafka.bootstrap_servers" in text


def _poll_until_logged(client: Producer | Consumer, buf: io.StringIO, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not librdkafka_lines(buf) and time.monotonic() < deadline:
        client.poll(0.1)


@pytest.mark.kafka
def test_no_configuration_warning_from_a_producer_given_consumer_settings_in_client(
    kafka_bootstrap: str, out: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    kafka = kafka_section(client={"session.timeout.ms": 6000, "max.poll.interval.ms": 300000})
    producer = Producer(producer_config(kafka_bootstrap, producer_settings(kafka)))
    producer.produce("never-created-topic-for-settings", b"x")
    producer.purge()
    producer.flush(1)
    assert [line for line in librdkafka_lines(out) if line["facility"] == "CONFWARN"] == []
    assert "CONFWARN" not in capfd.readouterr().err


@pytest.mark.kafka
def test_librdkafka_log_lines_are_json_and_scrubbed(
    kafka_bootstrap: str, out: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    secret = "s3cr3t-client-id-value"
    register_secrets([secret])
    # A consumer setting in the producer's own section: librdkafka warns about it, through structlog.
    kafka = kafka_section(client={"client.id": secret}, producer={"session.timeout.ms": 6000})
    producer = Producer(producer_config(kafka_bootstrap, producer_settings(kafka)))
    _poll_until_logged(producer, out)
    producer.flush(1)
    (line,) = [line for line in librdkafka_lines(out) if line["facility"] == "CONFWARN"]
    assert line["level"] == "warning"
    assert "session.timeout.ms is a consumer property" in line["message"]
    assert secret not in out.getvalue()  # the client's name carries the client.id
    assert "CONFWARN" not in capfd.readouterr().err

    out.truncate(0)
    out.seek(0)
    consumer = Consumer(
        consumer_config(
            kafka_bootstrap, "settings-test", consumer_settings(kafka_section(consumer={"linger.ms": 5}))
        )
    )
    try:
        _poll_until_logged(consumer, out)
    finally:
        consumer.close()
    # linger.ms is an alias: librdkafka names the property it stands for.
    assert any("is a producer property" in line["message"] for line in librdkafka_lines(out))
    assert "CONFWARN" not in capfd.readouterr().err
