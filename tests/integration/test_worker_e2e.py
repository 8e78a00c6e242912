"""`streamproc run` as a real process against the real broker and the partner simulator: exactly the
predicted requests, nothing lost across rebalances, bounded memory, per-user order (SIGKILLs under
partner faults: test_chaos.py)."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_helpers import produce, read_all, unique_name
from test_worker_helpers import (
    SimulatorThread,
    WorkerProcess,
    fully_committed,
    make_events,
    predict,
    produce_events,
    recorded,
    user_key,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.kafka


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    s = SimulatorThread()
    yield s
    s.stop()


def test_exactly_the_predicted_requests_arrive(
    kafka_bootstrap: str, topic: Any, sim: SimulatorThread, tmp_path: Path
) -> None:
    src, dlq, group = topic("events"), topic("dlq", partitions=1), unique_name("g")
    events = make_events(10_000, seed=11)
    produce_events(kafka_bootstrap, src, events)
    config = write_config(
        tmp_path / "config.yaml", bootstrap=kafka_bootstrap, topic=src, dlq=dlq, group=group, sim_url=sim.url
    )
    expected = predict(config, events)
    assert sum(expected.values()) > 10_000  # all three partners take part

    worker = WorkerProcess(config, tmp_path / "worker.log")
    wait_for(fully_committed(kafka_bootstrap, group, src), 300, "committed offsets at the end", [worker])
    assert worker.terminate() == 0

    got = recorded(sim.requests())
    assert got == expected, (
        f"missing {sum((expected - got).values())}, unexpected {sum((got - expected).values())}"
    )
    assert read_all(kafka_bootstrap, dlq) == []  # the example events are all deliverable


def test_workers_joining_and_leaving_lose_nothing_and_send_nothing_twice(
    kafka_bootstrap: str, topic: Any, sim: SimulatorThread, tmp_path: Path
) -> None:
    src, dlq, group = topic("events", partitions=6), topic("dlq", partitions=1), unique_name("g")
    events = make_events(4_000, seed=13)
    produce_events(kafka_bootstrap, src, events)
    config = write_config(
        tmp_path / "config.yaml",
        bootstrap=kafka_bootstrap,
        topic=src,
        dlq=dlq,
        group=group,
        sim_url=sim.url,
        limits={"max_in_flight_events": 500, "resume_in_flight_events": 250, "poll_batch_size": 100},
    )
    expected = predict(config, events)
    total = sum(expected.values())
    sim.fault("*", latency={"kind": "uniform", "min_ms": 5, "max_ms": 15})

    first = WorkerProcess(config, tmp_path / "first.log")
    wait_for(lambda: sim.count() > total * 0.15, 120, "15% delivered", [first])
    second = WorkerProcess(config, tmp_path / "second.log")  # joins mid-run
    wait_for(
        lambda: "partitions_assigned" in second.log_text(), 60, "second worker assigned", [first, second]
    )
    wait_for(lambda: sim.count() > total * 0.5, 120, "half delivered", [first, second])
    assert first.terminate() == 0  # leaves mid-run; its partitions move to the second
    wait_for(fully_committed(kafka_bootstrap, group, src), 300, "committed offsets at the end", [second])
    assert second.terminate() == 0

    assert "partitions_revoked" in first.log_text()
    got = recorded(sim.requests())
    assert not (expected - got), f"{sum((expected - got).values())} predicted requests never arrived"
    assert not (set(got) - set(expected))
    # Both rebalances handed their partitions over with what was finished past the commits.
    assert got == expected, f"{sum((got - expected).values())} of {total} requests sent twice"


def test_memory_stays_bounded_under_lag_with_a_slow_partner(
    kafka_bootstrap: str, topic: Any, sim: SimulatorThread, tmp_path: Path
) -> None:
    src, dlq, group = topic("events"), topic("dlq", partitions=1), unique_name("g")
    template = make_events(2_000, seed=14)
    values = [orjson.dumps({**template[i % 2000], "messageId": f"lag-{i}"}) for i in range(200_000)]
    produce(kafka_bootstrap, src, values, keys=[str(i % 500).encode() for i in range(200_000)])
    many = {"concurrency": 256}
    config = write_config(
        tmp_path / "config.yaml",
        bootstrap=kafka_bootstrap,
        topic=src,
        dlq=dlq,
        group=group,
        sim_url=sim.url,
        limits={"max_in_flight_events": 2000, "resume_in_flight_events": 1000},
        destination_limits={"stackadapt": many, "tiktok-offline": many, "seg": many},
        ordering="none",
    )
    # Slow enough that the window stays full past the 2 s it is held before the partitions pause.
    sim.fault("*", latency=1000)
    rss_bound_mb = 300.0
    worker = WorkerProcess(config, tmp_path / "worker.log")
    peak = 0.0
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert worker.alive(), worker.log_text()[-3000:]
            peak = max(peak, worker.rss_mb())
            log = worker.log_text()
            if log.count("partitions_resumed") >= 2 and log.count("partitions_paused") >= 2:
                break
            time.sleep(0.25)
        log = worker.log_text()
        assert log.count("partitions_paused") >= 2, "backpressure never paused the partitions"
        assert log.count("partitions_resumed") >= 2
    finally:
        code = worker.terminate()
    delivered = sim.count()
    print(f"peak RSS {peak:.0f} MB with 200,000 events of lag; {delivered} requests answered meanwhile")
    assert code == 0
    assert peak < rss_bound_mb
    assert delivered < 150_000  # the property was shown long before the backlog drained


def test_one_users_requests_arrive_in_offset_order(
    kafka_bootstrap: str, topic: Any, sim: SimulatorThread, tmp_path: Path
) -> None:
    src, dlq, group = topic("events"), topic("dlq", partitions=4), unique_name("g")
    events = make_events(2_000, seed=15, users=12)
    produce_events(kafka_bootstrap, src, events)
    config = write_config(
        tmp_path / "config.yaml",
        bootstrap=kafka_bootstrap,
        topic=src,
        dlq=dlq,
        group=group,
        sim_url=sim.url,
        ordering="key",
    )
    sim.fault("seg", latency={"kind": "uniform", "min_ms": 0, "max_ms": 20})
    worker = WorkerProcess(config, tmp_path / "worker.log")
    wait_for(fully_committed(kafka_bootstrap, group, src), 300, "committed offsets at the end", [worker])
    assert worker.terminate() == 0

    position = {e["messageId"]: i for i, e in enumerate(events)}
    user_of = {e["messageId"]: user_key(e) for e in events}
    per_user: dict[bytes, list[int]] = collections.defaultdict(list)
    seg = sorted(sim.requests(), key=lambda r: r.seq)
    for r in seg:
        if not r.path.startswith("/segment/"):
            continue
        mid = r.json().get("MessageId")
        per_user[user_of[mid]].append(position[mid])
    assert sum(len(v) for v in per_user.values()) > 500
    for user, seq in per_user.items():
        assert seq == sorted(seq), f"{user!r}: Seg requests out of offset order"
