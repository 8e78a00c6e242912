"""Gives the demo, benchmarks and tests a broker: a given address, a local Kafka, or a mock cluster.

The local broker is a single-node KRaft Apache Kafka run by `kafka-local`, the script shipped beside
this module (`scripts/kafka-local` in a checkout runs the same script). Its jars are fetched once with
Maven into one cache that every entry point shares (`cache_dir`): KAFKA_LOCAL_CACHE when set, else the
checkout's `.cache/kafka` when streamproc runs from a source checkout, else
~/.cache/streamproc/kafka (XDG_CACHE_HOME). The script picks the same folder by the same rule.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TextIO

__all__ = [
    "Broker",
    "LocalBrokerError",
    "cache_dir",
    "create_topics",
    "local_broker_missing",
    "log_tail",
    "mock_cluster",
    "start_broker",
    "start_local_broker",
    "stop_local_broker",
    "wait_for_group_coordinator",
]

START_TIMEOUT = float(os.environ.get("KAFKA_LOCAL_START_TIMEOUT", "120"))


class LocalBrokerError(RuntimeError):
    """The local broker did not start; the message carries the script's output and the broker's log tail."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
        """One line: why, as the script said it."""


@dataclass
class Broker:
    """A running broker: its bootstrap address and how to stop it."""

    bootstrap: str
    kind: Literal["external", "local", "mock"]
    _stop: Callable[[], None] = field(default=lambda: None, repr=False)
    mock_owner: Any = field(default=None, repr=False)
    """The client that owns the mock cluster; the cluster lives as long as it does."""

    def create_topics(self, topics: Mapping[str, int], timeout: float = 30.0) -> None:
        """Create the topics (name → partitions); the mock cluster creates them on first use instead."""
        if self.mock_owner is None:
            create_topics(self.bootstrap, topics, timeout)
            return
        # The mock cluster has no CreateTopics; a metadata request auto-creates (with its own
        # default partition count).
        for name in topics:
            self.mock_owner.list_topics(name, timeout=timeout)

    def stop(self) -> None:
        self._stop()
        self.mock_owner = None


def cache_dir() -> Path:
    """Where the broker's jars (and its class-data archive) are kept: the same folder for `streamproc
    demo`, the tests and `scripts/kafka-local`, so the jars are fetched once."""
    given = os.environ.get("KAFKA_LOCAL_CACHE")
    if given:
        return Path(given)
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "scripts" / "kafka-local").is_file() and (checkout / "pyproject.toml").is_file():
        return checkout / ".cache" / "kafka"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamproc" / "kafka"


def _script() -> Path:
    # A real file: the package is installed unpacked (setuptools wheels are not zip-safe here).
    return Path(str(resources.files("streamproc.devtools").joinpath("kafka-local")))


def _environment() -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_LOCAL_CACHE": str(cache_dir()),
        "KAFKA_LOCAL_PYTHON": os.environ.get("KAFKA_LOCAL_PYTHON", sys.executable),
    }


def local_broker_missing(*, fetch: bool = True) -> str | None:
    """Why a local broker cannot start here, or None when it can (fetch: Maven may fetch the jars)."""
    if shutil.which("bash") is None or not _script().is_file():
        return "bash or the kafka-local script is missing"
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which(os.environ.get("JAVA", "java")) is None and not (
        java_home and Path(java_home, "bin", "java").exists()
    ):
        return "Java is not installed"
    if not any(cache_dir().glob("*/.complete")):
        if not fetch:
            return f"the broker's jars are not in {cache_dir()}"
        if shutil.which("mvn") is None:
            return "Maven is not installed (needed once to fetch the broker's jars)"
    return None


def log_tail(run_dir: Path, lines: int = 60) -> str:
    """The last lines of the broker's logs in `run_dir`, for error messages."""
    parts = []
    for name in ("stdout.log", "format.log", "server.log"):
        path = run_dir / "logs" / name
        if path.is_file() and path.stat().st_size:
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path} ---\n" + "\n".join(text))
    return "\n".join(parts) or f"(no broker logs under {run_dir / 'logs'})"


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(_script()), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_environment(),
        check=False,
    )


def start_local_broker(run_dir: Path, *, watch_pid: int | None = None, timeout: float = START_TIMEOUT) -> str:
    """Start the local broker with its data in `run_dir` and return its bootstrap address.

    watch_pid: the broker stops itself when that process dies without stopping it. Raises
    LocalBrokerError with the script's output and the broker's log tail."""
    args = ["start", "--dir", str(run_dir)]
    if watch_pid is not None:
        args += ["--watch-pid", str(watch_pid)]
    try:
        proc = _run(*args, timeout=timeout + 120)  # includes a first-time jar fetch
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise LocalBrokerError(
            f"kafka-local start timed out\n{stderr}\n{log_tail(run_dir)}", "kafka-local start timed out"
        ) from None
    if proc.returncode != 0 or not proc.stdout.strip():
        lines = [line for line in proc.stderr.splitlines() if line.startswith("kafka-local: ")]
        raise LocalBrokerError(
            f"kafka-local start failed (exit {proc.returncode})\n{proc.stderr.strip()}\n{log_tail(run_dir)}",
            lines[-1] if lines else f"kafka-local start failed (exit {proc.returncode})",
        )
    return proc.stdout.strip().splitlines()[-1]


def stop_local_broker(run_dir: Path, timeout: float = 120.0) -> None:
    """Stop the local broker of `run_dir` (nothing when none runs there)."""
    _run("stop", "--dir", str(run_dir), timeout=timeout)


def mock_cluster() -> Broker:
    """librdkafka's in-process mock cluster, kept alive by the client that created it."""
    from confluent_kafka import Producer

    owner = Producer({"test.mock.num.brokers": 1, "log_level": 3})
    md = owner.list_topics(timeout=10)
    address = ",".join(f"{b.host}:{b.port}" for b in md.brokers.values())
    return Broker(address, "mock", mock_owner=owner)


def start_broker(
    bootstrap: str | None,
    *,
    mode: Literal["auto", "local", "mock"] = "auto",
    run_dir: Path | None = None,
    out: TextIO = sys.stderr,
) -> Broker:
    """The broker to use: `bootstrap` when given, else a local Kafka, else the mock cluster.

    mode "auto" starts a local broker only when its jars are already there (never a Maven fetch)
    and falls back to the mock cluster; "local" starts one (fetching the jars if need be) or raises
    LocalBrokerError; "mock" is the mock cluster. The local broker stops with `Broker.stop()`, or
    by itself when this process dies."""
    if bootstrap:
        return Broker(bootstrap, "external")
    if mode in ("auto", "local"):
        missing = local_broker_missing(fetch=mode == "local")
        if missing is None:
            where = run_dir or Path(tempfile.mkdtemp(prefix="streamproc-kafka-"))
            print(f"starting a local Kafka broker (data in {where}) ...", file=out, flush=True)
            try:
                address = start_local_broker(where, watch_pid=os.getpid())
            except LocalBrokerError as exc:
                if mode == "local":
                    raise
                first = str(exc).splitlines()[0]
                print(
                    f"the local broker did not start ({first}); using the mock cluster", file=out, flush=True
                )
            else:
                wait_for_group_coordinator(address)

                def stop() -> None:
                    stop_local_broker(where)
                    if run_dir is None:
                        shutil.rmtree(where, ignore_errors=True)

                return Broker(address, "local", stop)
        elif mode == "local":
            raise LocalBrokerError(f"cannot start a local Kafka broker: {missing}", missing)
        else:
            print(f"{missing}: using librdkafka's built-in mock cluster instead of a real broker", file=out)
    return mock_cluster()


def create_topics(bootstrap: str, topics: Mapping[str, int], timeout: float = 30.0) -> None:
    """Create the topics (name → partitions) and wait until their leaders serve them; existing ones
    are fine."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    from streamproc.kafka.admin import wait_until_served

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items()],
        operation_timeout=timeout,
    )
    for name, fut in futures.items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"creating topic {name} failed: {exc}") from exc
    wait_until_served(admin, topics, timeout)


def wait_for_group_coordinator(bootstrap: str, timeout: float = 90.0) -> None:
    """Block until the broker answers group-offset requests (its offsets topic is created and loaded),
    so the first consumer group does not meet a coordinator still loading."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    name = f"_streamproc_warmup_{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, {name: 1}, timeout=min(timeout, 30.0))
    loading = (
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    )
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": name, "enable.auto.commit": False})
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                consumer.committed([TopicPartition(name, 0)], timeout=max(1.0, deadline - time.monotonic()))
                return
            except KafkaException as exc:
                error = exc.args[0]
                if (not error.retriable() and error.code() not in loading) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()
