"""Shared pytest fixtures: the Kafka broker for integration tests (started lazily, once per run)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka_helpers import create_topic, delete_topics, unique_name

from streamproc.devtools import broker as local

# The checkout's jar cache, as scripts/kafka-local uses it.
os.environ.setdefault("KAFKA_LOCAL_CACHE", str(Path(__file__).resolve().parent.parent / ".cache" / "kafka"))


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(
                ["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=5
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real Kafka broker shared by the whole test run.

    KAFKA_BOOTSTRAP_SERVERS if set; else a testcontainers broker when a Docker engine answers;
    else a local broker (streamproc.devtools.broker, the checkout's jar cache) in a temporary directory.
    """
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return

    if _docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        container = (
            KafkaContainer(os.environ.get("KAFKA_TEST_IMAGE", "confluentinc/cp-kafka:7.6.0"))
            .with_kraft()
            .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
            .with_env("KAFKA_NUM_PARTITIONS", "4")
            .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        )
        with container:
            yield container.get_bootstrap_server()
        return

    run_dir = Path(tempfile.mkdtemp(prefix="streamproc-kafka-"))
    try:
        bootstrap = local.start_local_broker(run_dir, watch_pid=os.getpid())
    except local.LocalBrokerError as exc:
        pytest.fail(str(exc), pytrace=False)  # never a skip: the suite needs its broker
    try:
        local.wait_for_group_coordinator(bootstrap)
        yield bootstrap
    finally:
        local.stop_local_broker(run_dir)
        if not os.environ.get("KAFKA_LOCAL_KEEP"):
            shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Factory creating topics with names unique to this test; they are deleted afterwards.

    `topic()` -> name with 4 partitions; `topic("orders", partitions=1, config={...})`.
    """
    created: list[str] = []

    def make(prefix: str = "t", partitions: int = 4, config: dict[str, str] | None = None) -> str:
        name = create_topic(kafka_bootstrap, unique_name(prefix), partitions, config)
        created.append(name)
        return name

    yield make
    # Cleanup must not turn a passing test into an error.
    with contextlib.suppress(Exception):
        delete_topics(kafka_bootstrap, created)
