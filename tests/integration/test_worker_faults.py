"""The worker in-process against the real broker and the simulator's faults: retries, dead letters
with their headers, timeouts, an outage that holds only its own partner, poison messages."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_helpers import committed_offsets, end_offsets, produce, read_all, unique_name
from test_worker_helpers import make_events, predict, recorded, user_key, write_config

from streamproc.config import load_config
from streamproc.devtools.simulator import PartnerSimulator
from streamproc.router import Router
from streamproc.runs.worker import Worker

pytestmark = pytest.mark.kafka

FAST_RETRY = {"max_attempts": 6, "budget": 30, "backoff_initial": 0.05, "backoff_max": 0.5}
FAST_BREAKER = {"open_for": 0.5, "min_requests": 20, "window": 10}


@pytest.fixture
async def sim() -> AsyncIterator[PartnerSimulator]:
    s = PartnerSimulator(seed=3)
    await s.start()
    yield s
    await s.stop()


class Run:
    """One in-process worker over one fresh topic."""

    def __init__(self, bootstrap: str, topic: Any, tmp_path: Path, sim: PartnerSimulator, **config: Any):
        self.bootstrap = bootstrap
        self.src, self.dlq, self.group = topic("events"), topic("dlq", partitions=1), unique_name("g")
        assert sim.base_url is not None
        self.config_path = write_config(
            tmp_path / f"{self.group}.yaml",
            bootstrap=bootstrap,
            topic=self.src,
            dlq=self.dlq,
            group=self.group,
            sim_url=sim.base_url,
            **config,
        )
        self.worker = Worker(load_config(self.config_path))
        self.task: asyncio.Task[None] | None = None

    def produce(self, values: list[bytes], keys: list[bytes] | None = None) -> None:
        produce(self.bootstrap, self.src, values, keys=keys)

    def start(self) -> None:
        self.task = asyncio.create_task(self.worker.run_async())

    async def until(self, predicate: Callable[[], Any], timeout: float, what: str) -> float:
        started = time.monotonic()
        while not predicate():
            if self.task is not None and self.task.done():
                self.task.result()
                raise AssertionError(f"worker stopped before {what}")
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{what} not reached within {timeout}s")
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    async def until_committed(self, timeout: float = 120) -> None:
        ends = await asyncio.to_thread(end_offsets, self.bootstrap, self.src)
        started = time.monotonic()
        while await asyncio.to_thread(committed_offsets, self.bootstrap, self.group, self.src) != ends:
            if self.task is not None and self.task.done():
                self.task.result()
            if time.monotonic() - started > timeout:
                raise AssertionError(f"offsets not committed to the end within {timeout}s")
            await asyncio.sleep(0.3)

    async def stop(self) -> None:
        self.worker.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 60)

    def dead_letters(self) -> list[Any]:
        return read_all(self.bootstrap, self.dlq)


def encode(events: list[dict[str, Any]]) -> tuple[list[bytes], list[bytes]]:
    return [orjson.dumps(e) for e in events], [user_key(e) for e in events]


async def test_503_bursts_with_retry_after_are_retried_and_delivered(
    kafka_bootstrap: str, topic: Any, tmp_path: Path, sim: PartnerSimulator
) -> None:
    retry = {"retry": FAST_RETRY, "breaker": FAST_BREAKER}
    run = Run(
        kafka_bootstrap,
        topic,
        tmp_path,
        sim,
        destination_limits={"stackadapt": retry, "tiktok-offline": retry, "seg": retry},
    )
    events = make_events(400, seed=21)
    run.produce(*encode(events))
    expected = predict(run.config_path, events)
    sim.fault("tiktok", sequence=[503] * 25, retry_after=0.2)
    sim.fault("stackadapt", sequence=[503] * 25, retry_after="1")
    run.start()
    await run.until_committed()
    await run.stop()

    ok = recorded(r for r in sim.requests if r.status is not None and r.status < 300)
    assert ok == expected  # each predicted request delivered exactly once in the end
    assert sum(1 for r in sim.requests if r.status == 503) == 50
    assert run.dead_letters() == []
    retries = run.worker.metrics.registry.get_sample_value(
        "streamproc_delivery_retries_total", {"destination": "tiktok-offline"}
    )
    assert retries is not None and retries >= 25


async def test_rejected_requests_are_dead_lettered_with_headers(
    kafka_bootstrap: str, topic: Any, tmp_path: Path, sim: PartnerSimulator
) -> None:
    run = Run(kafka_bootstrap, topic, tmp_path, sim)
    events = make_events(300, seed=22)
    values, keys = encode(events)
    run.produce(values, keys)
    router = Router(load_config(run.config_path))
    stackadapt = [
        (e, d) for e in events for d in router.route(e) if d.destination == "stackadapt" and d.requests
    ]
    sim.fault("stackadapt", then=400)
    run.start()
    await run.until_committed()
    await run.stop()

    letters = run.dead_letters()
    assert len(letters) == len(stackadapt) > 0
    by_id = {r.header("streamproc.delivery_id"): r for r in letters}
    for event, delivery in stackadapt:
        r = by_id[delivery.delivery_id.encode()]
        assert r.value == orjson.dumps(event)  # bytes exactly as consumed
        assert r.key == user_key(event)
        assert r.header("streamproc.error.type") == b"PermanentError"
        assert r.header("streamproc.http.status") == b"400"
        assert r.header("streamproc.destination") == b"stackadapt"
        assert r.header("streamproc.action") == delivery.action.encode()
        assert r.header("streamproc.subscription") == delivery.subscription.encode()
        assert r.header("streamproc.attempts") == b"1"
        assert r.header("streamproc.original.topic") == run.src.encode()
        assert r.header("streamproc.first_attempt_at") is not None
    others = predict(run.config_path, events)
    got = recorded(sim.requests)
    for key, n in others.items():
        if not key[1].startswith("/saq_pxl"):
            assert got[key] == n


async def test_timeouts_are_retried_then_dead_lettered_after_the_budget(
    kafka_bootstrap: str, topic: Any, tmp_path: Path, sim: PartnerSimulator
) -> None:
    slow = {
        "timeout": 0.2,
        "retry": {"max_attempts": 3, "budget": 5, "backoff_initial": 0.05, "backoff_max": 0.1},
        "breaker": {"min_requests": 1000},
    }
    run = Run(kafka_bootstrap, topic, tmp_path, sim, destination_limits={"seg": slow})
    events = make_events(60, seed=23)
    run.produce(*encode(events))
    seg_requests = [k for k in predict(run.config_path, events).elements() if k[1].startswith("/segment/")]
    sim.fault("seg", then="timeout", hang=5)
    run.start()
    await run.until_committed()
    await run.stop()

    letters = [r for r in run.dead_letters() if r.header("streamproc.destination") == b"seg"]
    assert len(letters) == len(seg_requests) > 0
    for r in letters:
        assert r.header("streamproc.error.type") == b"RetryableError"
        assert r.header("streamproc.attempts") == b"3"
        assert b"timeout" in (r.header("streamproc.error.message") or b"")
        assert r.header("streamproc.http.status") is None
    attempts = collections.Counter((r.method, r.raw_path, r.body) for r in sim.requests_for("seg"))
    # A request the client gave up on may not have reached the simulator's handler yet, so its
    # count there can be lower; it is never higher than the attempts allowed.
    assert max(attempts.values()) == 3


async def test_an_outage_holds_only_its_own_partner_and_its_circuit_opens_then_closes(
    kafka_bootstrap: str, topic: Any, tmp_path: Path, sim: PartnerSimulator
) -> None:
    limits = {
        "retry": {"max_attempts": 1000, "budget": 120, "backoff_initial": 0.05, "backoff_max": 0.5},
        "breaker": {"open_for": 0.5, "min_requests": 20, "window": 10},
    }
    dl = {"stackadapt": limits, "tiktok-offline": limits, "seg": limits}
    events = make_events(800, seed=24)

    async def tiktok_done_after(outage: bool) -> tuple[float, Run]:
        sim.clear()
        run = Run(kafka_bootstrap, topic, tmp_path, sim, destination_limits=dl)
        run.produce(*encode(events))
        expected = sum(n for k, n in predict(run.config_path, events).items() if k[1].startswith("/open_api"))
        if outage:
            sim.fault("stackadapt", down=True)
        run.start()
        took = await run.until(
            lambda: sum(1 for r in sim.requests_for("tiktok") if r.status == 200) >= expected,
            120,
            "TikTok done",
        )
        return took, run

    baseline, run = await tiktok_done_after(outage=False)
    await run.until_committed()
    await run.stop()

    with_outage, run = await tiktok_done_after(outage=True)
    circuit = run.worker.metrics.circuit_state.labels("stackadapt")
    await run.until(lambda: circuit._value.get() == 2, 30, "StackAdapt circuit open")
    assert run.worker.metrics.circuit_state.labels("tiktok-offline")._value.get() == 0
    sim.clear_faults()
    await run.until(lambda: circuit._value.get() == 0, 30, "StackAdapt circuit closed again")
    await run.until_committed()
    await run.stop()
    print(f"TikTok finished in {baseline:.2f}s without the outage, {with_outage:.2f}s with StackAdapt down")
    assert with_outage < 3 * baseline + 5  # generous: the outage must not hold TikTok back
    assert run.dead_letters() == []  # held deliveries went out once StackAdapt came back


async def test_poison_messages_are_dead_lettered_with_their_reason(
    kafka_bootstrap: str, topic: Any, tmp_path: Path, sim: PartnerSimulator
) -> None:
    run = Run(kafka_bootstrap, topic, tmp_path, sim)
    router = Router(load_config(run.config_path))
    good = make_events(50, seed=25)
    # Events that route but fail mapping or validation: strip what the partners require.
    candidates = []
    for i, event in enumerate(make_events(400, seed=26)):
        broken = {k: v for k, v in event.items() if k not in ("properties", "traits", "context", "userId")}
        broken["messageId"] = f"broken-{i}"
        candidates.append(broken)
    invalid = [e for e in candidates if any(d.error is not None for d in router.route(e))][:20]
    assert invalid, "no generated event fails validation"
    errors = [d for e in invalid for d in router.route(e) if d.error is not None]
    poison = [b"not json {", b"[1, 2, 3]", b'"just a string"', b"null"]
    values = [orjson.dumps(e) for e in invalid] + poison + [orjson.dumps(e) for e in good]
    run.produce(values)
    run.start()
    await run.until_committed()
    await run.stop()

    letters = run.dead_letters()
    decode = [r for r in letters if r.header("streamproc.error.type") == b"DecodeError"]
    assert sorted(r.value for r in decode) == sorted(poison)
    assert all(r.header("streamproc.error.message") for r in decode)
    by_id = {r.header("streamproc.delivery_id"): r for r in letters if r.header("streamproc.delivery_id")}
    for d in errors:
        r = by_id[d.delivery_id.encode()]
        assert d.error is not None
        assert r.header("streamproc.error.type") == type(d.error).__name__.encode()
        assert r.header("streamproc.error.message")
    # The worker kept going: every request for the good events arrived.
    expected = predict(run.config_path, good)
    got = recorded(sim.requests)
    assert all(got[k] >= n for k, n in expected.items())
