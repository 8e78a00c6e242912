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
from kafka_helpers import create_topic, delete_topics, unique_name, wait_for_group_coordinator

REPO = Path(__file__).resolve().parent.parent
KAFKA_LOCAL = REPO / "scripts" / "kafka-local"
START_TIMEOUT = float(os.environ.get("KAFKA_LOCAL_START_TIMEOUT", "120"))


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


def _log_tail(run_dir: Path, lines: int = 60) -> str:
    parts = []
    for name in ("stdout.log", "format.log", "server.log"):
        path = run_dir / "logs" / name
        if path.is_file() and path.stat().st_size:
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path} ---\n" + "\n".join(text))
    return "\n".join(parts) or f"(no broker logs under {run_dir / 'logs'})"


def _local_broker(run_dir: Path) -> str:
    """Start scripts/kafka-local in `run_dir`; fail (never skip) with the broker's log tail."""
    try:
        proc = subprocess.run(
            [str(KAFKA_LOCAL), "start", "--dir", str(run_dir), "--watch-pid", str(os.getpid())],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT + 120,  # includes a first-time jar fetch
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        pytest.fail(f"kafka-local start timed out\n{stderr}\n{_log_tail(run_dir)}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(
            f"kafka-local start failed (exit {proc.returncode})\n{proc.stderr}\n{_log_tail(run_dir)}",
            pytrace=False,
        )
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real Kafka broker shared by the whole test run.

    KAFKA_BOOTSTRAP_SERVERS if set; else a testcontainers broker when a Docker engine answers;
    else the local broker from scripts/kafka-local in a temporary directory.
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
    bootstrap = _local_broker(run_dir)
    try:
        wait_for_group_coordinator(bootstrap)
        yield bootstrap
    finally:
        subprocess.run([str(KAFKA_LOCAL), "stop", "--dir", str(run_dir)], capture_output=True, timeout=60)
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
