"""scripts/kafka-local reports its state and start-up failures plainly (no broker left running)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kafka-local"

pytestmark = pytest.mark.kafka


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )


def test_status_and_stop_of_a_broker_that_is_not_running(tmp_path: Path) -> None:
    status = run("status", "--dir", str(tmp_path))
    assert status.returncode == 3 and "not running" in status.stderr
    assert run("stop", "--dir", str(tmp_path)).returncode == 0


def test_start_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run("start", "--dir", str(tmp_path), "--port", str(busy.getsockname()[1]))
    assert result.returncode == 1
    assert "already in use" in result.stderr


def test_a_broker_that_dies_at_start_up_fails_with_its_own_error(tmp_path: Path) -> None:
    result = run("start", "--dir", str(tmp_path), env={"KAFKA_LOCAL_HEAP": "-Xmx1k"})
    assert result.returncode == 1
    assert "broker exited during start-up" in result.stderr
    assert "heap" in result.stderr  # the JVM's own message, from the log tail
    assert result.stdout == ""
    assert not (tmp_path / "kafka.pid").exists()


def test_a_cluster_id_starting_with_a_dash_starts(tmp_path: Path) -> None:
    # One random id in 64 starts with "-"; the storage tool must not take it for an option.
    cluster_id = "-" + "A" * 21
    result = run("start", "--dir", str(tmp_path), env={"KAFKA_LOCAL_CLUSTER_ID": cluster_id})
    try:
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "cluster.id").read_text().strip() == cluster_id
        assert run("status", "--dir", str(tmp_path)).returncode == 0
    finally:
        run("stop", "--dir", str(tmp_path))
