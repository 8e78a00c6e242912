"""Static group membership on the real broker: a worker restarted under the same name
(`kafka.group_instance_id: ${POD_NAME}`, as the Helm chart sets it) within the session timeout gets
its partitions back and moves none of anyone else's; what was produced meanwhile is delivered once."""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any

import pytest
from group_chaos import _events
from kafka_helpers import unique_name, wait_until
from test_worker_helpers import (
    SimulatorThread,
    WorkerProcess,
    fully_committed,
    make_events,
    predict,
    produce_events,
    recorded,
    write_config,
)

pytestmark = pytest.mark.kafka


def _owned(w: WorkerProcess) -> set[str]:
    """The partitions this process owns by its log (assignments are incremental: cooperative)."""
    owned: set[str] = set()
    for line in w.own_log().splitlines():
        for entry in _events(line, "partitions_assigned"):
            owned |= set(entry["partitions"])
        for name in ("partitions_revoked", "partitions_lost"):
            for entry in _events(line, name):
                owned -= set(entry["partitions"])
    return owned


def _changes(w: WorkerProcess) -> int:
    """Assignments and revocations that named a partition."""
    log = w.own_log()
    names = ("partitions_assigned", "partitions_revoked", "partitions_lost")
    return sum(1 for name in names for e in _events(log, name) if e["partitions"])


def test_a_worker_restarted_under_its_name_within_the_session_timeout_moves_no_partition(
    kafka_bootstrap: str, topic: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dlq = topic("static", partitions=4), topic("static-dlq", partitions=1)
    sim = SimulatorThread()
    group = unique_name("g")
    config = write_config(
        tmp_path / "static.yaml",
        bootstrap=kafka_bootstrap,
        topic=src,
        dlq=dlq,
        group=group,
        sim_url=sim.url,
        client={"session.timeout.ms": "45000"},
        kafka_extra={"group_instance_id": "${POD_NAME}"},
    )
    events = make_events(600, seed=5)
    first, second = events[:300], events[300:]

    a = WorkerProcess(config, tmp_path / "a.log", env={"POD_NAME": "streamproc-a"})
    b = WorkerProcess(config, tmp_path / "b.log", env={"POD_NAME": "streamproc-b"})
    try:
        produce_events(kafka_bootstrap, src, first)

        def settled() -> bool:
            owned = [_owned(w) for w in (a, b)]
            return all(owned) and len(owned[0] | owned[1]) == 4 and not owned[0] & owned[1]

        wait_until(settled, timeout=90, interval=0.2, message="the two workers never shared the partitions")
        time.sleep(2.0)  # no rebalance still in flight
        assert settled()
        a_had, b_changes = _owned(a), _changes(b)

        assert a.terminate() == 0  # a static member leaves without a LeaveGroup
        produce_events(kafka_bootstrap, src, second)  # produced while it is down: its partitions wait for it
        a = WorkerProcess(config, tmp_path / "a.log", env={"POD_NAME": "streamproc-a"})
        wait_until(lambda: _owned(a), timeout=60, interval=0.2, message="the restarted worker got nothing")
        assert _owned(a) == a_had and _changes(a) == 1  # the same partitions, in one assignment
        wait_until(fully_committed(kafka_bootstrap, group, src), timeout=60, interval=0.5)
        assert _changes(b) == b_changes  # the other worker saw no rebalance at all
        assert "partitions_lost" not in a.own_log() + b.own_log()
    finally:
        for w in (a, b):
            if w.alive():
                w.terminate()
        sent = recorded(sim.requests())
        sim.stop()
    monkeypatch.setenv("POD_NAME", "the-test")  # the config is read here too, to predict the requests
    expected = predict(config, events)
    assert sent == expected, f"missing {expected - sent}, sent twice {sent - expected}"
    assert collections.Counter(sent.values()) == collections.Counter(expected.values())
