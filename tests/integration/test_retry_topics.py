"""Parked deliveries on the real broker: one partner's long outage leaves the others and the input
watermark moving and loses nothing; an unwritable retry topic stops the worker without committing
past the event; a failing hot key under `ordering: key` keeps its order while other keys proceed."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from kafka_helpers import committed_offsets, create_topic, delete_topics, end_offsets, read_all
from test_worker_faults import Run, encode
from test_worker_helpers import make_events, predict, recorded

from streamproc.cli import build_parser
from streamproc.commands.retry import inspect as retry_inspect
from streamproc.config import load_config
from streamproc.devtools.simulator import PartnerSimulator
from streamproc.errors import KafkaError
from streamproc.kafka.producer import AckedProducer, producer_config
from streamproc.kafka.retry import retry_group
from streamproc.router import Router
from streamproc.runs.worker import Worker

pytestmark = pytest.mark.kafka

PARTNERS = {"stackadapt": "/saq_pxl", "tiktok-offline": "/open_api", "seg": "/segment/"}
BREAKER = {"open_for": 2, "min_requests": 20, "window": 10}


def parking(**retry: Any) -> dict[str, Any]:
    """Destination limits with a small in-memory share: two attempts, then the retry topic."""
    return {
        "concurrency": 32,
        "retry": {
            "max_attempts": 1000,
            "budget": 120,
            "backoff_initial": 0.05,
            "backoff_max": 0.2,
            "park_after_attempts": 2,
            "park_delay": 1,
            "park_delay_max": 4,
            **retry,
        },
        "breaker": BREAKER,
    }


def per_partner(counter: collections.Counter[Any]) -> dict[str, int]:
    return {d: sum(n for k, n in counter.items() if k[1].startswith(p)) for d, p in PARTNERS.items()}


def ok(sim: PartnerSimulator) -> collections.Counter[Any]:
    return recorded(r for r in sim.requests if r.status is not None and r.status < 300)


async def retry_done(run: Run, topics: list[str]) -> bool:
    group = retry_group(run.group)
    for t in topics:
        ends = await asyncio.to_thread(end_offsets, run.bootstrap, t)
        if await asyncio.to_thread(committed_offsets, run.bootstrap, group, t) != ends:
            return False
    return True


def total(metric: Any) -> float:
    return sum(s.value for m in metric.collect() for s in m.samples if s.name.endswith("_total"))


def cleanup(bootstrap: str, group: str, destinations: list[str]) -> None:
    with contextlib.suppress(Exception):
        delete_topics(bootstrap, [f"{group}.retry.{d}" for d in destinations])


async def test_a_long_outage_of_one_partner_parks_its_deliveries_and_the_others_keep_going(
    kafka_bootstrap: str, topic: Any, tmp_path: Path, sims: tuple[PartnerSimulator, PartnerSimulator]
) -> None:
    sim = sims[0]
    outage_s = 20.0
    dl = {d: parking() for d in PARTNERS}
    # A small in-flight bound: without parking, StackAdapt's held offsets would pause every partition.
    limits = {"max_in_flight_events": 200, "resume_in_flight_events": 100}
    events = make_events(1500, seed=41)

    def others_delivered() -> int:
        return sum(n for d, n in per_partner(ok(sim)).items() if d != "stackadapt")

    async def run_once(outage: bool, window: float | None = None) -> tuple[Run, float, int, Any]:
        """Start a run; returns it, how long the other partners took, and how many of their
        requests had arrived when `window` seconds had passed (all, if they finished sooner)."""
        sim.clear()
        run = Run(kafka_bootstrap, topic, tmp_path, sim, destination_limits=dl, limits=limits)
        run.produce(*encode(events))
        expected = predict(run.config_path, events)
        want = sum(n for d, n in per_partner(expected).items() if d != "stackadapt")
        if outage:
            sim.fault("stackadapt", down=True)
        run.start()
        started = time.monotonic()
        in_window = None
        while others_delivered() < want:
            if window is not None and in_window is None and time.monotonic() - started >= window:
                in_window = others_delivered()
            if run.task is not None and run.task.done():
                run.task.result()
                raise AssertionError("the worker stopped")
            assert time.monotonic() - started < 90, "the other partners were not served within 90s"
            await asyncio.sleep(0.05)
        took = time.monotonic() - started
        return run, took, want if in_window is None else in_window, expected

    base_run, base_s, _, expected = await run_once(outage=False)
    await base_run.until_committed()
    await base_run.stop()
    cleanup(kafka_bootstrap, base_run.group, list(PARTNERS))

    # The other partners' throughput during the outage, as counts: what they had received once
    # twice the no-outage time had passed (slack for a shared CI machine), against all they get.
    window = 2 * base_s
    run, outage_took, in_window, expected = await run_once(outage=True, window=window)
    started = time.monotonic()
    try:
        # The input watermark reaches the end while StackAdapt is still down.
        await run.until_committed(timeout=60)
        committed_while_down = per_partner(ok(sim))["stackadapt"] == 0
        parked = total(run.worker.metrics.parked)
        inspected = await retry_inspect(
            build_parser().parse_args(["retry", "inspect", "--config", str(run.config_path), "--json"]),
            io.StringIO(),
        )
        await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - started)))
        pending = run.worker.metrics.retry_pending.labels("stackadapt")._value.get()
        oldest = run.worker.metrics.retry_oldest.labels("stackadapt")._value.get()
        outage_total = time.monotonic() - started + outage_took
        sim.clear_faults()
        want = per_partner(expected)["stackadapt"]
        back = await run.until(lambda: per_partner(ok(sim))["stackadapt"] >= want, 60, "StackAdapt drained")
        topics = [f"{run.group}.retry.stackadapt"]
        deadline = time.monotonic() + 30
        while not await retry_done(run, topics):
            assert time.monotonic() < deadline, "the retry topic was not committed to its end"
            await asyncio.sleep(0.3)
        await run.stop()
    finally:
        cleanup(kafka_bootstrap, run.group, list(PARTNERS))

    got = ok(sim)
    missing = sum((expected - got).values())
    duplicates = sum((got - expected).values())
    other_expected = sum(n for d, n in per_partner(expected).items() if d != "stackadapt")
    count_ratio = in_window / other_expected
    others_base = other_expected / base_s
    others_outage = other_expected / outage_took
    outcomes = {
        s.labels["outcome"]: s.value
        for m in run.worker.metrics.retry_outcomes.collect()
        for s in m.samples
        if s.name.endswith("_total") and s.labels["destination"] == "stackadapt"
    }
    print(
        f"\noutage: {len(events)} events; other partners {other_expected} requests in {base_s:.2f}s "
        f"without the outage ({others_base:.0f}/s) and {outage_took:.2f}s with StackAdapt down "
        f"({others_outage:.0f}/s), "
        f"throughput ratio {others_outage / others_base:.2f}; delivered to them within {window:.1f}s "
        f"(twice the no-outage time) of the outage: {count_ratio:.2%}; StackAdapt down "
        f"{outage_total:.1f}s, {parked:.0f} parks, retry outcomes "
        f"{outcomes}, pending {pending:.0f}, oldest parked {oldest:.1f}s; StackAdapt drained "
        f"{back:.1f}s after it came back: {want} expected, missing {missing}, duplicates {duplicates}"
    )
    print(f"retry inspect during the outage: {inspected.to_json()['by_destination']}")
    assert count_ratio >= 0.8
    # Everything StackAdapt still owes is waiting in its retry topic, and only there.
    assert inspected.by_destination["stackadapt"] > 0 and set(inspected.by_destination) == {"stackadapt"}
    assert set(inspected.by_error_type) <= {"RetryableError", "CircuitOpenError"}
    assert set(inspected.by_status) <= {"503", "none"}
    assert committed_while_down
    assert parked >= want and outcomes.get("parked_again", 0) > 0
    assert missing == 0
    assert duplicates == 0  # no crash: a parked delivery is sent once it succeeds, never twice
    assert run.dead_letters() == []


async def test_an_unwritable_retry_topic_stops_the_worker_without_committing_past_the_event(
    kafka_bootstrap: str, topic: Any, tmp_path: Path, sims: tuple[PartnerSimulator, PartnerSimulator]
) -> None:
    sim = sims[0]
    run = Run(kafka_bootstrap, topic, tmp_path, sim, destination_limits={"stackadapt": parking()})
    # The broker refuses every record of this retry topic (larger than the topic allows), and the
    # worker's producer believes the topic takes more (as when the limit is lowered after start).
    retry_topic = create_topic(
        kafka_bootstrap, f"{run.group}.retry.stackadapt", 4, {"max.message.bytes": "64"}
    )
    believing = AckedProducer(run.dlq, producer_config(kafka_bootstrap, {}, 1_048_588), what="retry record")
    run.worker = Worker(load_config(run.config_path), retry_producer=believing)
    try:
        router = Router(load_config(run.config_path))

        def parks(event: dict[str, Any]) -> bool:
            return any(d.destination == "stackadapt" and d.requests for d in router.route(event))

        # Events for the other partners first, so each partition commits some before the first park.
        pool = make_events(600, seed=42)
        events = [e for e in pool if not parks(e)][:120] + [e for e in pool if parks(e)][:180]
        values, keys = encode(events)
        run.produce(values, keys)
        records = await asyncio.to_thread(read_all, kafka_bootstrap, run.src)
        by_id = {orjson.loads(r.value or b"{}")["messageId"]: r for r in records}
        first_parkable: dict[int, int] = {}
        for event in events:
            if parks(event):
                r = by_id[event["messageId"]]
                first_parkable[r.partition] = min(first_parkable.get(r.partition, r.offset), r.offset)
        sim.fault("stackadapt", down=True)
        run.start()
        assert run.task is not None
        with pytest.raises(KafkaError, match=r"retry record of .* is too large for topic"):
            await asyncio.wait_for(run.task, 60)
        committed = await asyncio.to_thread(committed_offsets, kafka_bootstrap, run.group, run.src)
        ends = await asyncio.to_thread(end_offsets, kafka_bootstrap, run.src)
        print(
            f"\nunwritable retry topic: {len(events)} events, first parked delivery per partition at "
            f"{dict(sorted(first_parkable.items()))}, committed {dict(sorted(committed.items()))}, "
            f"ends {dict(sorted(ends.items()))}"
        )
        for partition, end in ends.items():
            assert committed.get(partition, 0) <= first_parkable.get(partition, end)
        assert committed != ends
        assert await asyncio.to_thread(read_all, kafka_bootstrap, retry_topic) == []
        assert per_partner(ok(sim))["stackadapt"] == 0
    finally:
        cleanup(kafka_bootstrap, run.group, ["stackadapt"])


async def test_a_delivery_too_large_for_its_retry_topic_is_dead_lettered_instead_of_parked(
    kafka_bootstrap: str, topic: Any, tmp_path: Path, sims: tuple[PartnerSimulator, PartnerSimulator]
) -> None:
    sim = sims[0]
    run = Run(kafka_bootstrap, topic, tmp_path, sim, destination_limits={"stackadapt": parking()})
    # Smaller than any retry record: none could be written whole, and a cut one could never be sent.
    retry_topic = create_topic(
        kafka_bootstrap, f"{run.group}.retry.stackadapt", 4, {"max.message.bytes": "1500"}
    )
    try:
        router = Router(load_config(run.config_path))
        events = [
            e
            for e in make_events(300, seed=44)
            if any(d.destination == "stackadapt" and d.requests for d in router.route(e))
        ][:40]
        run.produce(*encode(events))
        sim.fault("stackadapt", down=True)
        run.start()
        await run.until_committed()
        await run.stop()
        letters = run.dead_letters()
        assert len(letters) == len(events)
        assert {r.header("streamproc.destination") for r in letters} == {b"stackadapt"}
        assert {r.header("streamproc.error.type") for r in letters} <= {
            b"RetryableError",
            b"CircuitOpenError",
        }
        assert all(r.header("streamproc.value_truncated") is None for r in letters)
        assert await asyncio.to_thread(read_all, kafka_bootstrap, retry_topic) == []
    finally:
        cleanup(kafka_bootstrap, run.group, ["stackadapt"])


class HotKeyPartner:
    """Seg's stand-in: 503 for the hot user's events while `failing`, 200 otherwise; records what it took."""

    def __init__(self, hot: set[str]) -> None:
        self.hot = hot
        self.failing = True
        self.delivered: list[tuple[str, str]] = []
        """(path, MessageId) of every request answered 200, in arrival order."""
        self.refused = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read() or b"{}")
        mid = str(body.get("MessageId"))
        if self.failing and mid in self.hot:
            self.refused += 1
            return web.Response(status=503, text="busy")
        self.delivered.append((request.path, mid))
        return web.Response(status=200, text="{}")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def hot_partner() -> AsyncIterator[HotKeyPartner]:
    partner = HotKeyPartner(set())
    await partner.start()
    yield partner
    await partner.stop()


async def test_a_failing_hot_key_keeps_its_order_while_other_keys_proceed(
    kafka_bootstrap: str,
    topic: Any,
    tmp_path: Path,
    sims: tuple[PartnerSimulator, PartnerSimulator],
    hot_partner: HotKeyPartner,
) -> None:
    events = make_events(600, seed=43, users=40)
    later = make_events(100, seed=44, users=40)  # produced after a restart, while the key is parked
    for i, event in enumerate(events + later):
        if i % 5 == 0:  # one event in five is the hot user's
            event["userId"] = event["anonymousId"] = "hot-user"
    hot_ids = {e["messageId"] for e in events + later if e.get("userId") == "hot-user"}
    hot_partner.hot = hot_ids
    limits = parking(park_delay=0.3, park_delay_max=1)
    limits["breaker"] = {"min_requests": 1_000_000}  # one key's failures must not open the circuit
    run = Run(kafka_bootstrap, topic, tmp_path, sims[0], destination_limits={"seg": limits})
    data = yaml.safe_load(run.config_path.read_text())
    for dest in data["destinations"]:
        if dest["id"] == "seg":
            dest["endpoint"] = hot_partner.url
            assert dest["ordering"] == "key"
    run.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    run.worker = Worker(load_config(run.config_path))
    router = Router(load_config(run.config_path))
    expected: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    first_others = 0
    for n, event in enumerate(events + later):
        for d in router.route(event):
            if d.destination == "seg":
                for req in d.requests:
                    path = "/" + req.url.split("://", 1)[1].split("/", 1)[1]
                    user = str(event.get("userId") or event["anonymousId"])
                    expected[user].append((path, event["messageId"]))
                    first_others += n < len(events) and user != "hot-user"
    want_hot = expected["hot-user"]
    assert want_hot and first_others
    run.produce(*encode(events))
    run.start()
    try:
        others = lambda: sum(1 for _, mid in hot_partner.delivered if mid not in hot_ids)  # noqa: E731
        took = await run.until(lambda: others() >= first_others, 60, "other keys delivered")
        await run.until_committed(timeout=60)
        hot_during = sum(1 for _, mid in hot_partner.delivered if mid in hot_ids)
        refused = hot_partner.refused
        parked_behind = run.worker.metrics.parked.labels("seg", "ParkedBehind")._value.get()
        # A restart while the key is parked: the next run takes over the records the first left,
        # and the key's new events wait behind them.
        await run.stop()
        run.worker = Worker(load_config(run.config_path))
        run.produce(*encode(later))
        run.start()
        await run.until(lambda: run.worker.retry is not None and run.worker.retry.partitions, 30, "retry")
        hot_partner.failing = False
        back = await run.until(
            lambda: sum(1 for _, mid in hot_partner.delivered if mid in hot_ids) >= len(want_hot),
            60,
            "hot key delivered",
        )
        behind_after = run.worker.metrics.parked.labels("seg", "ParkedBehind")._value.get()
        await run.stop()
    finally:
        cleanup(kafka_bootstrap, run.group, ["seg"])
    user_of = {e["messageId"]: str(e.get("userId") or e["anonymousId"]) for e in events + later}
    got: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for path, mid in hot_partner.delivered:
        got[user_of[mid]].append((path, mid))
    out_of_order = [k for k, v in expected.items() if got[k] != v]
    print(
        f"\nhot key: {len(events)} + {len(later)} events (a restart between), hot key {len(want_hot)} Seg "
        f"requests, other keys {first_others} delivered in {took:.2f}s while the hot key failed "
        f"({hot_during} of its requests delivered then, {refused} refused, {parked_behind:.0f} parked "
        f"behind it; {behind_after:.0f} parked behind by the next run); hot key drained {back:.2f}s "
        f"after recovery; keys out of order or with missing/duplicate requests: {len(out_of_order)}"
    )
    assert hot_during == 0
    assert parked_behind > 0
    assert behind_after > 0  # the next run's deliveries waited behind what the first one parked
    assert got["hot-user"] == want_hot  # every one, once, in offset order
    assert out_of_order == []
