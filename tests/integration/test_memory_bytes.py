"""The bytes bound on the real broker: a slow partner and ~1 MB events. The worker pauses on the
bytes it holds (the event bound is far away) and its memory stays under what it takes idle, plus
the memory each byte held takes times the bound (overshot by at most one poll, which librdkafka's
bounded queue limits), plus that bounded prefetch for each of its two consumers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_helpers import produce, unique_name
from test_worker_helpers import SimulatorThread, WorkerProcess, make_events, write_config

from streamproc.kafka.backpressure import prefetch_settings
from streamproc.kafka.consumer import HOLD_BEFORE_PAUSE

pytestmark = pytest.mark.kafka

MIB = 1 << 20
BOUND = 32 * MIB
EVENTS = 240
PER_BYTE = 2.0
"""Memory per byte held, measured (docs/configuration.md): the message, the decoded event and the
request built from it (its body repeats the large property)."""


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    s = SimulatorThread()
    yield s
    s.stop()


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for pid {pid}")


def test_rss_stays_under_the_bytes_bound_with_1mb_events_and_a_slow_partner(
    kafka_bootstrap: str, topic: Any, sim: SimulatorThread, tmp_path: Path
) -> None:
    src, dlq, group = topic("big", partitions=4), topic("big-dlq", partitions=1), unique_name("g")
    template = make_events(20, seed=31)
    blob = "x" * (1_000_000 - 2_000)
    values = [
        orjson.dumps({**template[i % 20], "messageId": f"big-{i}", "properties": {"blob": blob, "n": i}})
        for i in range(EVENTS)
    ]
    config = write_config(
        tmp_path / "config.yaml",
        bootstrap=kafka_bootstrap,
        topic=src,
        dlq=dlq,
        group=group,
        sim_url=sim.url,
        limits={"max_in_flight_bytes": BOUND, "resume_in_flight_bytes": BOUND // 2},
        destination_limits={d: {"concurrency": 64} for d in ("stackadapt", "tiktok-offline", "seg")},
        ordering="none",
    )
    # Well past the time a full window is held before the partitions pause, refilling included (a
    # fetch brings one 1 MB event per partition): the window stays full and pauses every round.
    sim.fault("*", latency=int((HOLD_BEFORE_PAUSE + 4.0) * 1000))
    worker = WorkerProcess(config, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 60
        while "partitions_assigned" not in worker.log_text():
            assert worker.alive() and time.monotonic() < deadline, worker.log_text()[-3000:]
            time.sleep(0.1)
        time.sleep(2.0)
        idle = status_mb(worker.pid, "VmRSS")
        produce(kafka_bootstrap, src, values, keys=[str(i).encode() for i in range(EVENTS)])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert worker.alive(), worker.log_text()[-3000:]
            log = worker.log_text()
            if log.count("partitions_paused") >= 3 and log.count("partitions_resumed") >= 2:
                break
            time.sleep(0.25)
        peak = status_mb(worker.pid, "VmHWM")
        log = worker.log_text()
    finally:
        code = worker.terminate()
    delivered = sim.count()
    prefetch = prefetch_settings(BOUND)["queued.max.messages.kbytes"] / 1024  # MiB per consumer
    allowed = idle + PER_BYTE * (BOUND / MIB + prefetch) + 2 * prefetch
    print(
        f"\nbytes bound {BOUND / MIB:.0f} MiB, {EVENTS} events of 1 MB: idle RSS {idle:.0f} MB, peak RSS "
        f"{peak:.0f} MB (allowed {allowed:.0f} MB = idle + {PER_BYTE:g} x (bound + {prefetch:.0f} MiB) + "
        f"2 x {prefetch:.0f} MiB prefetch); {log.count('partitions_paused')} pauses, {delivered} requests "
        "answered meanwhile"
    )
    assert code == 0
    assert log.count("partitions_paused") >= 3, "the bytes bound never paused the partitions"
    assert peak < allowed
