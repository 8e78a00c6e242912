"""TikTok batching in the worker on the real broker: offsets wait for every batch holding one of an
event's deliveries, and a rejected batch leaves one dead letter per delivery."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_helpers import async_wait_until, committed_offsets, end_offsets, read_all
from test_worker_faults import Run, encode, sim
from test_worker_helpers import make_events

from streamproc.config import load_config
from streamproc.devtools.simulator import PartnerSimulator
from streamproc.router import Delivery, Router

pytestmark = pytest.mark.kafka

__all__ = ["sim"]  # the simulator fixture, shared with the fault tests

BATCH = {"tiktok-offline": {"batch": {"max_events": 50, "max_wait_ms": 50}}}
PATIENT = {
    "retry": {"max_attempts": 10_000, "budget": 120, "backoff_initial": 0.05, "backoff_max": 0.2},
    "breaker": {"min_requests": 100_000},
}


def tiktok_deliveries(router: Router, event: dict[str, Any]) -> list[Delivery]:
    return [d for d in router.route(event) if d.destination == "tiktok-offline" and d.requests]


def single_events(deliveries: list[Delivery]) -> collections.Counter[bytes]:
    """Each delivery's one TikTok event, as canonical JSON."""
    return collections.Counter(
        orjson.dumps(orjson.loads(d.requests[0].body or b"")["data"][0], option=orjson.OPT_SORT_KEYS)
        for d in deliveries
    )


def sent_events(sim: PartnerSimulator) -> collections.Counter[bytes]:
    """The events of every TikTok request the simulator accepted."""
    return collections.Counter(
        orjson.dumps(e, option=orjson.OPT_SORT_KEYS)
        for r in sim.requests_for("tiktok")
        if r.status == 200
        for e in r.events()
    )


async def test_offsets_wait_for_every_batch_and_commit_once_it_is_delivered(
    kafka_bootstrap: str, topic: Any, tmp_path: Path, sim: PartnerSimulator
) -> None:
    run = Run(
        kafka_bootstrap,
        topic,
        tmp_path,
        sim,
        destination_extra=BATCH,
        destination_limits={"tiktok-offline": PATIENT},
    )
    mixed = make_events(600, seed=31, weights={"Order Completed": 3, "Product Added": 3})
    # Events TikTok takes no part in first, so each partition has offsets to commit before the
    # first one that waits for a TikTok batch.
    router = Router(load_config(run.config_path))
    others = [e for e in mixed if not tiktok_deliveries(router, e)][:100]
    events = others + [e for e in mixed if tiktok_deliveries(router, e)][:200]
    run.produce(*encode(events))
    # Where each partition must stay while TikTok refuses: at its first event with a TikTok delivery.
    ends = end_offsets(kafka_bootstrap, run.src)
    held = dict(ends)
    expected: list[Delivery] = []
    for record in read_all(kafka_bootstrap, run.src):
        found = tiktok_deliveries(router, orjson.loads(record.value or b""))
        expected.extend(found)
        if found:
            held[record.partition] = min(held[record.partition], record.offset)
    assert len(expected) == 200 and all(offset > 0 for offset in held.values())

    sim.fault("tiktok", down=True)  # every batch is retried until this is cleared
    run.start()

    async def committed() -> dict[int, int]:
        return await asyncio.to_thread(committed_offsets, kafka_bootstrap, run.group, run.src)

    async def at_held() -> bool:
        return await committed() == held

    await async_wait_until(at_held, 60, message="offsets committed up to the first event waiting for TikTok")
    # The batches keep being refused and retried, and the offsets stay where they are.
    await async_wait_until(lambda: sum(r.attempt > 2 for r in sim.requests_for("tiktok")), 30)
    attempts = sim.requests_for("tiktok")
    assert any(len(r.events()) > 1 for r in attempts)  # batched
    assert sent_events(sim) == collections.Counter()
    assert await committed() == held

    sim.clear_faults("tiktok")
    await run.until_committed()
    await run.stop()
    assert sent_events(sim) == single_events(expected)  # each event exactly once, byte for byte
    assert len([r for r in sim.requests_for("tiktok") if r.status == 200]) < len(expected)
    assert run.dead_letters() == []


async def test_a_rejected_batch_leaves_one_dead_letter_per_delivery(
    kafka_bootstrap: str, topic: Any, tmp_path: Path, sim: PartnerSimulator
) -> None:
    run = Run(kafka_bootstrap, topic, tmp_path, sim, destination_extra=BATCH)
    events = make_events(200, seed=32, weights={"Order Completed": 3, "Product Added": 3})
    run.produce(*encode(events))
    router = Router(load_config(run.config_path))
    expected = {d.delivery_id: (e, d) for e in events for d in tiktok_deliveries(router, e)}
    sim.fault("tiktok", then={"status": 200, "code": 40001, "message": "No permission to operate"})
    run.start()
    await run.until_committed()
    await run.stop()

    letters = [r for r in run.dead_letters() if r.header("streamproc.destination") == b"tiktok-offline"]
    assert len(letters) == len(expected) > 0
    by_id = {(r.header("streamproc.delivery_id") or b"").decode(): r for r in letters}
    assert set(by_id) == set(expected)
    for delivery_id, (event, delivery) in expected.items():
        letter = by_id[delivery_id]
        assert letter.value == orjson.dumps(event)
        assert letter.header("streamproc.error.type") == b"PermanentError"
        assert letter.header("streamproc.error.message") == b"TikTok code 40001: No permission to operate"
        assert letter.header("streamproc.http.status") == b"200"
        assert b'"code":40001' in (letter.header("streamproc.response.body") or b"")
        assert letter.header("streamproc.attempts") == b"1"
        assert letter.header("streamproc.subscription") == delivery.subscription.encode()
    requests = sim.requests_for("tiktok")
    assert sum(len(r.events()) for r in requests) == len(expected)  # each sent once, permanent
    assert len(requests) < len(expected)
