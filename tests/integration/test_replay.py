"""`streamproc replay` against the real broker and two partner simulators: exactly the range, the live
group untouched, resumable after an interruption, and the rate limit respected."""

from __future__ import annotations

import asyncio
import collections
import io
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition
from kafka_helpers import committed_offsets, produce, unique_name
from ops_helpers import KEY_B, T0_MS, cli_args, make_events, predicted, received, write_config

from streamproc.commands.replay import replay

pytestmark = pytest.mark.kafka

N = 240


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def setup(kafka_bootstrap: str, topic, sims, tmp_path: Path):
    """A 3-partition topic holding N events one second apart, and a config pointing at the simulators."""
    source = topic("replay", partitions=3)
    dlq = topic("replay-dlq", partitions=1)
    events = make_events(N)
    values = [orjson.dumps(e) for e in events]
    produce(
        kafka_bootstrap,
        source,
        values,
        keys=[e["userId"].encode() for e in events],
        timestamps=[T0_MS + i * 1000 for i in range(N)],
    )
    a, b = sims
    cfg = write_config(
        tmp_path / "config.yaml",
        bootstrap=kafka_bootstrap,
        topic=source,
        dlq=dlq,
        group=unique_name("live"),
        url_a=a.base_url,
        url_b=b.base_url,
    )
    return cfg, source, events


def commit_live(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        consumer.close()


async def test_a_time_range_sends_exactly_its_events_and_leaves_the_live_group_alone(
    kafka_bootstrap: str, setup, sims
) -> None:
    cfg, source, events = setup
    a, b = sims
    group = yaml.safe_load(cfg.read_text())["kafka"]["group_id"]
    commit_live(kafka_bootstrap, group, source, {0: 3, 1: 4, 2: 5})
    before = committed_offsets(kafka_bootstrap, group, source)

    start, end = 60, 150
    err = io.StringIO()
    code, summary = await replay(
        cli_args(
            "replay",
            "--config",
            str(cfg),
            "--from",
            iso(T0_MS + start * 1000),
            "--to",
            iso(T0_MS + end * 1000),
        ),
        out=io.BytesIO(),
        err=err,
    )
    assert code == 0, err.getvalue()
    expect = predicted(cfg, events[start:end])
    assert received(a) == expect["seg-a"]
    assert received(b) == expect["seg-b"]
    assert summary.read == end - start
    assert summary.destinations["seg-a"].delivered == end - start
    assert committed_offsets(kafka_bootstrap, group, source) == before


async def test_offsets_filters_and_dry_run(kafka_bootstrap: str, setup, sims) -> None:
    cfg, _source, _events = setup
    a, b = sims
    out = io.BytesIO()
    code, summary = await replay(
        cli_args(
            "replay",
            "--config",
            str(cfg),
            "--from",
            "0:10,1:0",
            "--to",
            "0:20,1:5",
            "--destination",
            "seg-b",
            "--dry-run",
        ),
        out=out,
        err=io.StringIO(),
    )
    assert code == 0
    assert not a.requests and not b.requests  # a dry run sends nothing
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert {line["destination"] for line in lines} <= {"seg-b"}
    assert lines and KEY_B not in out.getvalue().decode()  # printed like `send`: credentials masked
    assert all(
        (line["partition"], line["offset"]) in {(0, o) for o in range(10, 20)} | {(1, o) for o in range(5)}
        for line in lines
    )
    assert summary.read == 15
    assert summary.destinations.get("seg-b") is None or summary.destinations["seg-b"].matched == len(lines)


async def test_rate_is_respected(setup, sims) -> None:
    cfg, _source, _events = setup
    a, _b = sims
    rate = 60.0
    code, summary = await replay(
        cli_args(
            "replay",
            "--config",
            str(cfg),
            "--to",
            "0:60,1:60,2:60",
            "--destination",
            "seg-a",
            "--rate",
            str(rate),
        ),
        out=io.BytesIO(),
        err=io.StringIO(),
    )
    assert code == 0
    times = sorted(r.received_at for r in a.requests)
    assert len(times) == summary.read >= 150
    observed = (len(times) - 1) / (times[-1] - times[0])
    print(f"replay --rate {rate:g}: observed {observed:.1f} events/s over {len(times)} events")
    # Never faster than asked (10 % slack); the lower bound is generous for a loaded CI machine.
    assert observed <= rate * 1.10
    assert observed >= rate * 0.5


async def test_an_interrupted_replay_resumes_from_its_state_file(setup, sims, tmp_path: Path) -> None:
    cfg, _source, events = setup
    a, _b = sims
    a.fault("seg", latency=20)  # slow partner: the replay is still running when interrupted
    state = tmp_path / "replay-state.json"
    max_in_flight = 8
    argv = [
        sys.executable,
        "-m",
        "streamproc",
        "replay",
        "--config",
        str(cfg),
        "--destination",
        "seg-a",
        "--state",
        str(state),
        "--max-in-flight",
        str(max_in_flight),
        "--rate",
        "150",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    for _ in range(400):
        if len(a.requests) >= 60:
            break
        await asyncio.sleep(0.05)
    assert len(a.requests) >= 60, "the replay did not start sending"
    proc.send_signal(signal.SIGINT)
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 130, err.decode()
    saved = orjson.loads(state.read_bytes())
    done_first = sum(saved["next"][p] - r[0] for p, r in saved["ranges"].items())
    assert 0 < done_first < N

    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert b"resuming" in err

    expect = predicted(cfg, events)["seg-a"]
    got = received(a)
    assert set(got) == set(expect)  # every event delivered
    duplicates = sum(got.values()) - sum(expect.values())
    assert 0 <= duplicates <= max_in_flight
    counts = collections.Counter(got.values())
    assert max(counts) <= 2


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_a_replay_keeping_progress_in_kafka_resumes_after_its_process_ends(
    kafka_bootstrap: str, setup, sims, stop: signal.Signals
) -> None:
    """What a Job's retried pod sees: no file survives, the progress group's commits do."""
    cfg, source, events = setup
    a, _b = sims
    a.fault("seg", latency=20)
    group = unique_name("replay-progress")
    max_in_flight = 8
    argv = [
        *(sys.executable, "-m", "streamproc", "replay", "--config", str(cfg), "--destination", "seg-a"),
        *("--to", "end", "--progress-group", group, "--max-in-flight", str(max_in_flight), "--rate", "60"),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    for _ in range(400):
        if len(a.requests) >= 60 or proc.returncode is not None:
            break
        await asyncio.sleep(0.05)
    assert len(a.requests) >= 60, "the replay did not start sending"
    # From here the partner answers in 2 s (well inside the 10 s request timeout): at most
    # max_in_flight deliveries finish per 2 s, so the replay is still running when it is stopped
    # however slowly this machine runs, and its checkpoints (every 2 s) go on meanwhile. The broker
    # is asked from a thread: this event loop serves the simulators and must not stall them.
    a.fault("seg", latency=2000)
    for _ in range(200):
        saved = await asyncio.to_thread(committed_offsets, kafka_bootstrap, group, source)
        if sum(saved.values()) > 0 or proc.returncode is not None:
            break
        await asyncio.sleep(0.1)
    assert proc.returncode is None, "the replay ended before it was stopped"
    assert sum(saved.values()) > 0, "the replay saved no progress"
    sent_before_stop = sum(received(a).values())
    proc.send_signal(stop)
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == (130 if stop == signal.SIGTERM else -signal.SIGKILL), err.decode()
    saved = committed_offsets(kafka_bootstrap, group, source)
    done_first = sum(saved.values())  # the range starts at offset 0 of each partition
    assert 0 < done_first < N, saved

    a.fault("seg", latency=20)
    # More events arrive meanwhile: the rerun keeps the ranges of the first run ("end" as it was then).
    produce(kafka_bootstrap, source, [orjson.dumps(e) for e in make_events(30, prefix="late")])
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert f"resuming from consumer group {group}: {N - done_first} events left".encode() in err

    expect = predicted(cfg, events)["seg-a"]
    got = received(a)
    assert set(got) == set(expect)  # every event of the first run's range, and none of the late ones
    duplicates = sum(got.values()) - sum(expect.values())
    # Sent again: what was in flight, plus (after SIGKILL) what finished since the last checkpoint.
    bound = max_in_flight if stop == signal.SIGTERM else sent_before_stop - done_first + max_in_flight
    assert 0 <= duplicates <= bound, (duplicates, bound)

    # A third run of a finished replay sends nothing.
    before = len(a.requests)
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert b"0 events left" in err and len(a.requests) == before
    # The group belongs to this replay: another range under it is refused, not mixed in.
    other = [*argv[:-8], "--from", "5", *argv[-8:]]
    proc = await asyncio.create_subprocess_exec(
        *other, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0 and b"belongs to a replay" in err, err.decode()
