"""Dispatch against a stand-in partner: retries, dead-letter details, rate limit, breaker, key order."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
from aiohttp import web
from http_stand_in import Handler, serving

from streamproc.client import DEFAULT_CLIENT, make_client
from streamproc.destinations.base import Request
from streamproc.devtools.simulator import PartnerSimulator
from streamproc.dispatch import (
    Admission,
    Bulkhead,
    BulkheadPolicy,
    CircuitBreaker,
    CircuitState,
    ConcurrencyLimit,
    Dispatcher,
    RetryShare,
    TokenBucket,
)
from streamproc.errors import DeliveryError, PayloadValidationError
from streamproc.handoff import DeliveryResult
from streamproc.metrics import Metrics


@dataclass
class StandIn:
    """A partner stand-in: one handler for every path, and what it saw."""

    url: str = ""
    handler: Handler | None = None
    seen: list[tuple[str, str, bytes]] = field(default_factory=list)
    concurrent: int = 0
    max_concurrent: int = 0


@pytest.fixture
async def partner() -> AsyncIterator[StandIn]:
    state = StandIn()

    async def any_path(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        state.seen.append((request.method, request.raw_path, body))
        state.concurrent += 1
        state.max_concurrent = max(state.max_concurrent, state.concurrent)
        try:
            assert state.handler is not None
            return await state.handler(request)
        finally:
            state.concurrent -= 1

    async with serving(any_path) as url:
        state.url = url
        yield state


@dataclass(frozen=True)
class FakeDelivery:
    delivery_id: str
    destination: str
    requests: list[Request]
    subscription: str = "sub"
    action: str = "act"
    error: DeliveryError | None = None
    skipped: str | None = None
    ordering_key: str | None = None


def post(url: str, body: bytes = b"{}") -> Request:
    return Request("POST", url, {"content-type": "application/json"}, body)


def policy(**kw: object) -> BulkheadPolicy:
    base: dict[str, object] = dict(
        destination="p", backoff_initial=0.01, backoff_max=0.05, timeout=2.0, max_attempts=4, budget=10.0
    )
    base.update(kw)
    return BulkheadPolicy(**base)  # type: ignore[arg-type]


async def test_retryable_status_is_retried_honouring_retry_after(partner: StandIn) -> None:
    calls = collections.Counter[str]()

    async def flaky(request: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] <= 2:
            return web.Response(status=503, headers={"Retry-After": "0.05"}, text="busy")
        return web.Response(status=200)

    partner.handler = flaky
    metrics = Metrics()
    bulkhead = Bulkhead(policy(), metrics=metrics)
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await bulkhead.deliver(FakeDelivery("d1", "p", [post(partner.url + "/x")]))
    elapsed = loop.time() - started
    await bulkhead.close()
    assert result.outcome == "delivered"
    assert result.attempts == 3
    assert elapsed >= 0.1  # two Retry-After waits of 50 ms were honoured
    assert metrics.registry.get_sample_value("streamproc_delivery_retries_total", {"destination": "p"}) == 2


async def test_permanent_error_is_dead_lettered_with_details(partner: StandIn) -> None:
    async def reject(request: web.Request) -> web.Response:
        return web.Response(status=400, text='{"error":"bad pixel id"}' + "x" * 5000)

    partner.handler = reject
    bulkhead = Bulkhead(policy())
    result = await bulkhead.deliver(FakeDelivery("d1", "p", [post(partner.url + "/x")]))
    await bulkhead.close()
    assert result.outcome == "dead_lettered"
    f = result.failure
    assert f is not None
    assert (f.type, f.status, f.attempts) == ("PermanentError", 400, 1)
    assert f.response_body is not None and f.response_body.startswith('{"error":"bad pixel id"}')
    assert len(f.response_body) == 2048
    assert f.first_attempt_at is not None and f.first_attempt_at == f.last_attempt_at
    assert len(partner.seen) == 1


async def test_timeouts_retry_then_dead_letter_after_max_attempts(partner: StandIn) -> None:
    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(0.5)
        return web.Response(status=200)

    partner.handler = hang
    bulkhead = Bulkhead(policy(timeout=0.1, max_attempts=3, min_requests=100))
    result = await bulkhead.deliver(FakeDelivery("d1", "p", [post(partner.url + "/x")]))
    await bulkhead.close()
    assert result.outcome == "dead_lettered"
    assert result.failure is not None
    assert result.failure.type == "RetryableError"
    assert result.failure.status is None
    assert "timeout" in result.failure.message
    assert result.failure.attempts == 3
    assert len(partner.seen) == 3


async def test_budget_ends_retries_before_max_attempts(partner: StandIn) -> None:
    async def busy(request: web.Request) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": "1"})

    partner.handler = busy
    bulkhead = Bulkhead(policy(budget=0.5, max_attempts=50, min_requests=100))
    result = await bulkhead.deliver(FakeDelivery("d1", "p", [post(partner.url + "/x")]))
    await bulkhead.close()
    assert result.outcome == "dead_lettered"
    assert result.failure is not None and "budget" in result.failure.message
    assert result.failure.status == 429
    assert len(partner.seen) == 1


async def test_routing_errors_and_skips_send_nothing(partner: StandIn) -> None:
    bulkhead = Bulkhead(policy())
    bad = FakeDelivery(
        "d1", "p", [], error=PayloadValidationError("The root value is missing the required field 'x'.")
    )
    skip = FakeDelivery("d2", "p", [], skipped="no pixel")
    r1 = await bulkhead.deliver(bad)
    r2 = await bulkhead.deliver(skip)
    await bulkhead.close()
    assert r1.outcome == "dead_lettered" and r1.failure is not None
    assert (r1.failure.type, r1.failure.status, r1.failure.attempts) == ("PayloadValidationError", 400, 0)
    assert r2.outcome == "skipped"
    assert partner.seen == []


async def test_url_and_body_are_sent_byte_for_byte(partner: StandIn) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(status=200)

    partner.handler = ok
    bulkhead = Bulkhead(policy())
    url = partner.url + "/saq_pxl?uid=a%2Fb&args=%7B%22x%22%3A1%7D&e=caf%C3%A9+x"
    req = Request("GET", url, {}, None)
    assert (await bulkhead.deliver(FakeDelivery("d", "p", [req]))).outcome == "delivered"
    await bulkhead.close()
    assert partner.seen == [("GET", "/saq_pxl?uid=a%2Fb&args=%7B%22x%22%3A1%7D&e=caf%C3%A9+x", b"")]


async def test_concurrency_limit_is_respected(partner: StandIn) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.02)
        return web.Response(status=200)

    partner.handler = slow
    bulkhead = Bulkhead(policy(concurrency=3))
    results = await asyncio.gather(
        *(bulkhead.deliver(FakeDelivery(f"d{i}", "p", [post(partner.url + "/x")])) for i in range(20))
    )
    await bulkhead.close()
    assert all(r.outcome == "delivered" for r in results)
    assert partner.max_concurrent == 3


def test_token_bucket_spaces_requests_at_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=2, clock=lambda: now[0])
    waits = [bucket.reserve() for _ in range(5)]
    assert waits[:2] == [0.0, 0.0]
    assert waits[2:] == pytest.approx([0.1, 0.2, 0.3])
    now[0] = 10.0
    assert bucket.reserve() == 0.0


async def test_circuit_opens_on_failure_ratio_then_probes_and_closes() -> None:
    now = [0.0]
    states: list[CircuitState] = []
    breaker = CircuitBreaker(
        failure_ratio=0.5,
        min_requests=4,
        window=10,
        open_for=5,
        clock=lambda: now[0],
        on_change=states.append,
    )
    for ok in (True, False, True):
        breaker.record(ok)
    assert breaker.state is CircuitState.CLOSED  # below the minimum of requests
    breaker.record(False)
    assert breaker.state is CircuitState.OPEN
    assert breaker.try_acquire() == (False, False)
    now[0] = 5.0
    assert breaker.try_acquire() == (True, True)  # one probe
    assert breaker.try_acquire() == (False, False)  # only one at a time
    breaker.record(False, probe=True)
    assert breaker.state is CircuitState.OPEN
    now[0] = 10.0
    assert breaker.try_acquire() == (True, True)
    breaker.record(True, probe=True)
    assert breaker.state is CircuitState.CLOSED
    assert states == [
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.CLOSED,
    ]


async def test_old_failures_leave_the_window() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_ratio=0.5, min_requests=4, window=10, open_for=5, clock=lambda: now[0])
    for _ in range(3):
        breaker.record(False)
    now[0] = 30.0
    for _ in range(3):
        breaker.record(True)
    breaker.record(False)
    assert breaker.state is CircuitState.CLOSED


class Watching:
    """A real HTTP client that notes the circuit's state each time a request goes out."""

    name = "watching"

    def __init__(self) -> None:
        self._client = make_client(DEFAULT_CLIENT, max_connections=20)
        self.bulkhead: Bulkhead | None = None
        self.states: list[CircuitState] = []

    async def send(self, request: Request, timeout: float) -> tuple[int, Mapping[str, str], bytes]:
        assert self.bulkhead is not None
        self.states.append(self.bulkhead.breaker.state)
        return await self._client.send(request, timeout)

    async def close(self) -> None:
        await self._client.close()


async def test_open_circuit_holds_deliveries_and_recovers(partner: StandIn) -> None:
    down = {"on": True}

    async def outage(request: web.Request) -> web.Response:
        return web.Response(status=503 if down["on"] else 200)

    partner.handler = outage
    metrics = Metrics()
    client = Watching()
    bulkhead = Bulkhead(
        policy(min_requests=4, open_for=0.3, max_attempts=100, budget=20.0), metrics=metrics, client=client
    )
    client.bulkhead = bulkhead
    tasks = [
        asyncio.create_task(bulkhead.deliver(FakeDelivery(f"d{i}", "p", [post(partner.url + "/x")])))
        for i in range(10)
    ]
    for _ in range(200):
        if bulkhead.breaker.state is CircuitState.OPEN:
            break
        await asyncio.sleep(0.01)
    assert metrics.circuit_state.labels("p")._value.get() == 2
    await asyncio.sleep(0.1)
    down["on"] = False
    results = await asyncio.gather(*tasks)
    await bulkhead.close()
    await client.close()
    # Nothing goes out while the circuit is open: requests sent before it opened were answered
    # (and retried only once it let a probe through, half-open, then closed).
    assert CircuitState.HALF_OPEN in client.states and CircuitState.OPEN not in client.states
    assert all(r.outcome == "delivered" for r in results)
    assert bulkhead.breaker.state is CircuitState.CLOSED
    assert metrics.circuit_state.labels("p")._value.get() == 0


async def test_circuit_open_past_the_budget_dead_letters(partner: StandIn) -> None:
    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500)

    partner.handler = fail
    bulkhead = Bulkhead(policy(min_requests=2, open_for=60, max_attempts=100, budget=0.5))
    results = await asyncio.gather(
        *(bulkhead.deliver(FakeDelivery(f"d{i}", "p", [post(partner.url + "/x")])) for i in range(5))
    )
    await bulkhead.close()
    assert {r.outcome for r in results} == {"dead_lettered"}
    assert any(r.failure is not None and r.failure.type == "CircuitOpenError" for r in results)


async def test_key_order_is_kept_while_other_keys_proceed(partner: StandIn) -> None:
    import random

    rnd = random.Random(7)

    async def jittery(request: web.Request) -> web.Response:
        await asyncio.sleep(rnd.uniform(0, 0.01))
        return web.Response(status=200)

    partner.handler = jittery
    ordered = Bulkhead(policy(destination="o", ordered=True, concurrency=16))
    dispatcher = Dispatcher([ordered])
    tasks = []
    for i in range(120):
        user = f"u{i % 4}"
        body = f'{{"user":"{user}","seq":{i}}}'.encode()
        d = FakeDelivery(f"d{i}", "o", [post(partner.url + "/x", body)], ordering_key=user)
        tasks.append(asyncio.create_task(dispatcher.deliver(d)))
    await asyncio.gather(*tasks)
    await dispatcher.close()
    per_user: dict[str, list[int]] = collections.defaultdict(list)
    import orjson

    for _, _, body in partner.seen:
        doc = orjson.loads(body)
        per_user[doc["user"]].append(doc["seq"])
    assert all(seqs == sorted(seqs) and len(seqs) == 30 for seqs in per_user.values())
    assert partner.max_concurrent > 1  # different keys went out together
    assert dispatcher.keys_waiting == 0


async def test_a_delivery_parks_once_its_share_is_spent_and_only_when_given_a_share(partner: StandIn) -> None:
    async def down(request: web.Request) -> web.Response:
        return web.Response(status=503, text="down")

    partner.handler = down
    bulkhead = Bulkhead(
        policy(max_attempts=50, budget=60.0, park_after_attempts=2, park_delay=3.0, min_requests=1000)
    )
    before = time.time()
    parked = await bulkhead.deliver(FakeDelivery("d1", "p", [post(partner.url + "/x")]), RetryShare())
    assert parked.outcome == "parked" and parked.attempts == 2 and len(partner.seen) == 2
    assert parked.failure is not None and parked.failure.status == 503
    assert parked.failure.type == "RetryableError" and parked.failure.first_attempt_at is not None
    assert parked.next_attempt_at is not None and parked.next_attempt_at >= before + 3.0
    assert parked.deadline_at is not None and before + 60 <= parked.deadline_at <= time.time() + 60
    # Without a share (replay, redrive) the same bulkhead keeps the delivery until its budget.
    partner.seen.clear()
    held = await Bulkhead(policy(max_attempts=5, park_after_attempts=2, min_requests=1000)).deliver(
        FakeDelivery("d2", "p", [post(partner.url + "/x")])
    )
    assert held.outcome == "dead_lettered" and len(partner.seen) == 5
    await bulkhead.close()


async def test_an_open_circuit_parks_at_once_and_the_carried_budget_is_kept(partner: StandIn) -> None:
    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500)

    partner.handler = fail
    bulkhead = Bulkhead(
        policy(max_attempts=6, budget=60.0, park_after_seconds=30.0, min_requests=2, open_for=60)
    )
    for i in range(2):
        await bulkhead.deliver(FakeDelivery(f"o{i}", "p", [post(partner.url + "/x")]), RetryShare())
    assert bulkhead.breaker.state is CircuitState.OPEN
    sent = len(partner.seen)
    share = RetryShare(attempts=3, first_attempt_at=time.time() - 10, deadline_at=time.time() + 50, parks=2)
    parked = await bulkhead.deliver(FakeDelivery("d", "p", [post(partner.url + "/x")]), share)
    assert len(partner.seen) == sent  # nothing sent while open
    assert parked.outcome == "parked" and parked.attempts == 3
    assert parked.failure is not None and parked.failure.type == "CircuitOpenError"
    assert parked.deadline_at == share.deadline_at
    assert parked.next_attempt_at is not None and parked.next_attempt_at >= time.time() + 4 * 5.0 - 1
    # A record whose budget ended while it waited goes to the dead letters without a request.
    late = RetryShare(attempts=4, deadline_at=time.time() - 1, parks=3)
    dead = await bulkhead.deliver(FakeDelivery("late", "p", [post(partner.url + "/x")]), late)
    assert dead.outcome == "dead_lettered" and dead.attempts == 4 and len(partner.seen) == sent
    await bulkhead.close()


async def test_attempts_carried_from_earlier_parks_count_towards_max_attempts(partner: StandIn) -> None:
    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=503)

    partner.handler = fail
    bulkhead = Bulkhead(policy(max_attempts=5, park_after_attempts=3, min_requests=1000))
    result = await bulkhead.deliver(
        FakeDelivery("d", "p", [post(partner.url + "/x")]), RetryShare(attempts=4, parks=1)
    )
    assert result.outcome == "dead_lettered" and len(partner.seen) == 1
    assert result.failure is not None and result.failure.attempts == 5
    assert "gave up after 5 attempts" in result.failure.message
    await bulkhead.close()


async def test_a_key_behind_a_parked_delivery_parks_in_order_before_the_next_goes(partner: StandIn) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(status=200)

    partner.handler = ok
    dispatcher = Dispatcher([Bulkhead(policy(destination="o", ordered=True, park_after_attempts=1))])
    parked_keys = {"u1"}
    written: list[str] = []

    async def on_parked(result: DeliveryResult, d: str) -> None:
        await asyncio.sleep(0.01)  # the retry record's acknowledgement
        written.append(d)

    def behind(key: str) -> RetryShare | None:
        return RetryShare(park_now=True) if key in parked_keys else None

    async def at_turn(d: FakeDelivery, user: str, i: int) -> DeliveryResult:
        # What parking does at a key's turn: park behind, and write the record before the next goes.
        result = await dispatcher.send(d, behind(user) or RetryShare())
        if result.outcome == "parked":
            await on_parked(result, f"d{i}")
        return result

    tasks = []
    for i in range(6):
        user = f"u{i % 2}"
        d = FakeDelivery(f"d{i}", "o", [post(partner.url + "/x", str(i).encode())], ordering_key=user)
        tasks.append(asyncio.create_task(dispatcher.in_turn(("o", user), partial(at_turn, d, user, i))))
    results = await asyncio.gather(*tasks)
    await dispatcher.close()
    assert [r.outcome for r in results] == ["delivered", "parked"] * 3
    assert written == ["d1", "d3", "d5"]
    assert all(r.failure is not None and r.failure.type == "ParkedBehind" for r in results[1::2])
    assert all(r.next_attempt_at is not None and r.next_attempt_at <= time.time() for r in results[1::2])
    assert sorted(body for _, _, body in partner.seen) == [b"0", b"2", b"4"]


# -- adaptive concurrency ----------------------------------------------------------------------------


async def test_adaptive_limit_settles_near_the_partner_capacity_with_few_429s() -> None:
    capacity = 16
    async with PartnerSimulator(seed=3, record=False) as sim:
        # Each request is held 30 ms; beyond 16 at once the partner answers 429 straight away.
        sim.fault("seg", capacity=capacity, latency=30)
        metrics = Metrics()
        # latency_factor: only the partner's 429s steer the limit here, not this machine's load.
        bulkhead = Bulkhead(
            policy(destination="seg", concurrency=64, adaptive=True, latency_factor=1000.0, max_attempts=20),
            metrics=metrics,
        )
        url = f"{sim.base_url}/segment/site/track"
        deliveries = [FakeDelivery(f"d{i}", "seg", [post(url, f'{{"n":{i}}}'.encode())]) for i in range(1200)]
        results = []
        for start in range(0, len(deliveries), 200):  # the worker hands over deliveries in batches
            results += await asyncio.gather(*(bulkhead.deliver(d) for d in deliveries[start : start + 200]))
        await bulkhead.close()
        answers = sim.stats()["partners"]["seg"]
    assert {r.outcome for r in results} == {"delivered"}, [r.failure for r in results if r.failure][:3]
    limit = metrics.registry.get_sample_value(
        "streamproc_destination_concurrency_limit", {"destination": "seg"}
    )
    assert limit == bulkhead.limiter.limit
    assert capacity * 0.6 <= limit <= capacity * 1.25
    rejected = answers.get("429", 0)
    assert answers["204"] == 1200
    assert rejected / (rejected + answers["204"]) < 0.08


def test_concurrency_limit_grows_additively_and_cuts_once_per_round() -> None:
    limit = ConcurrencyLimit(64, adaptive=True, initial=8)
    tickets = []
    for _ in range(8):
        assert limit.try_acquire()
        tickets.append(limit.started)
    assert not limit.try_acquire()  # the limit holds
    for t in tickets:
        limit.record(t, 0.01, False)  # slow start: one per success
    assert limit.limit == 16
    for t in tickets[:3]:
        limit.record(t, None, True)  # three 429s of one round: one cut
    assert limit.limit == int(16 * 0.8)
    for _ in range(5):
        limit.release()
    later = []
    while limit.try_acquire():
        later.append(limit.started)
    limit.record(later[0], 0.01, False)
    grown = limit.limit
    assert grown == int(12.8 + 1 / 12.8)  # after a cut, growth is additive
    limit.record(later[-1], None, True)  # admitted after the cut: cuts again
    assert limit.limit == int((12.8 + 1 / 12.8) * 0.8)


def test_rising_latency_cuts_and_the_limit_stays_within_its_bounds() -> None:
    limit = ConcurrencyLimit(4, adaptive=True, initial=4)
    for _ in range(4):
        limit.try_acquire()
    for _ in range(50):
        limit.record(limit.started, 0.01, False)
    assert limit.limit == 4  # never above the configured concurrency
    for _ in range(4):
        limit.release()
    for _ in range(60):
        assert limit.try_acquire()
        limit.record(limit.started, 1.0, False)  # latency a hundred times its floor
        limit.release()
    assert limit.limit == 1  # never below one
    fixed = ConcurrencyLimit(4)
    fixed.record(1, None, True)
    assert fixed.limit == 4


async def all_finished(tasks: Sequence[asyncio.Task[Any]], count: int, timeout: float = 30.0) -> None:
    """Wait until `count` admitted deliveries have their tasks and every one has finished, done
    callbacks included: awaited together, each task's own callback (its admission's finish, added
    before gather's) has run, not only the task."""

    async def started() -> None:
        while len(tasks) < count:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(started(), timeout)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout)


async def test_admitted_deliveries_wait_without_tasks_in_key_order_within_the_limit(
    partner: StandIn,
) -> None:
    import orjson

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.002)
        return web.Response(status=200)

    partner.handler = slow
    ordered = Bulkhead(policy(destination="o", ordered=True, concurrency=4))
    dispatcher = Dispatcher([ordered])
    assert dispatcher.admits("o")
    tasks: list[asyncio.Task[DeliveryResult]] = []

    def start(admission: Admission) -> bool:
        task = asyncio.create_task(admission.send())
        task.add_done_callback(admission.finish)
        tasks.append(task)
        return True

    for i in range(60):
        user = f"u{i % 3}"
        body = f'{{"user":"{user}","seq":{i}}}'.encode()
        assert dispatcher.admit(
            FakeDelivery(f"d{i}", "o", [post(partner.url + "/x", body)], ordering_key=user), start
        )
    assert len(tasks) <= 4  # the rest wait for their turn or a slot, with no task yet
    assert ordered.in_flight == 60
    await all_finished(tasks, 60)
    assert all(t.result().outcome == "delivered" for t in tasks)
    per_user: dict[str, list[int]] = collections.defaultdict(list)
    for _, _, body in partner.seen:
        doc = orjson.loads(body)
        per_user[doc["user"]].append(doc["seq"])
    assert all(seqs == sorted(seqs) and len(seqs) == 20 for seqs in per_user.values())
    assert partner.max_concurrent <= 4
    assert ordered.in_flight == 0 and ordered.limiter.in_use == 0 and dispatcher.keys_waiting == 0
    await dispatcher.close()


async def test_a_delivery_whose_key_turn_comes_goes_ahead_of_those_let_in_after_it(
    partner: StandIn,
) -> None:
    # Offsets become committable in the order deliveries were let in: a key's second delivery
    # must not wait behind every delivery let in after it once its first one is done.
    async def ok(request: web.Request) -> web.Response:
        return web.Response(status=200)

    partner.handler = ok
    ordered = Bulkhead(policy(destination="o", ordered=True, concurrency=1))
    dispatcher = Dispatcher([ordered])
    started: list[asyncio.Task[DeliveryResult]] = []

    def start(admission: Admission) -> bool:
        task = asyncio.create_task(admission.send())
        task.add_done_callback(admission.finish)
        started.append(task)
        return True

    for name, key in (("a1", "a"), ("b1", "b"), ("a2", "a"), ("c1", "c"), ("d1", "d")):
        dispatcher.admit(FakeDelivery(name, "o", [post(partner.url + f"/{name}")], ordering_key=key), start)
    await all_finished(started, 5)
    assert [path for _, path, _ in partner.seen] == ["/a1", "/b1", "/a2", "/c1", "/d1"]
    assert ordered.in_flight == 0 and ordered.limiter.in_use == 0 and dispatcher.keys_waiting == 0
    await dispatcher.close()


async def test_an_admission_given_up_passes_its_turn_and_slot_on(partner: StandIn) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(status=200)

    partner.handler = ok
    ordered = Bulkhead(policy(destination="o", ordered=True, concurrency=1))
    dispatcher = Dispatcher([ordered])
    results: dict[str, DeliveryResult] = {}
    unwanted = {"d1"}
    started: list[asyncio.Task[None]] = []

    def start(admission: Admission) -> bool:
        name = admission.delivery.delivery_id
        if name in unwanted:
            return False  # e.g. its partition was released while it waited

        async def run() -> None:
            results[name] = await admission.send()

        task = asyncio.create_task(run())
        task.add_done_callback(admission.finish)
        started.append(task)
        return True

    for i in range(3):
        dispatcher.admit(FakeDelivery(f"d{i}", "o", [post(partner.url + f"/{i}")], ordering_key="k"), start)
    await all_finished(started, 2)
    assert sorted(results) == ["d0", "d2"] and all(r.outcome == "delivered" for r in results.values())
    assert [path for _, path, _ in partner.seen] == ["/0", "/2"]
    assert ordered.in_flight == 0 and ordered.limiter.in_use == 0 and dispatcher.keys_waiting == 0
    await dispatcher.close()


async def test_a_delivery_waiting_to_retry_is_marked_waiting_and_one_on_the_wire_is_not(
    partner: StandIn,
) -> None:
    # What a partition's release relies on: it cancels the first kind at once (nothing of it is
    # lost) and awaits the second (its answer decides whether it is sent again).
    async def answer(request: web.Request) -> web.Response:
        if request.path == "/slow":
            await asyncio.sleep(0.3)
            return web.Response(status=200)
        return web.Response(status=503)

    partner.handler = answer
    bulkhead = Bulkhead(policy(backoff_initial=30.0, backoff_max=30.0, budget=600.0))
    dispatcher = Dispatcher([bulkhead])
    slow = asyncio.create_task(dispatcher.deliver(FakeDelivery("d1", "p", [post(partner.url + "/slow")])))
    busy = asyncio.create_task(dispatcher.deliver(FakeDelivery("d2", "p", [post(partner.url + "/busy")])))
    for _ in range(100):
        if busy in dispatcher.waiting:
            break
        await asyncio.sleep(0.01)
    assert busy in dispatcher.waiting and slow not in dispatcher.waiting and not slow.done()
    busy.cancel()
    with pytest.raises(asyncio.CancelledError):
        await busy
    assert (await slow).outcome == "delivered"
    assert not dispatcher.waiting and bulkhead.in_flight == 0 and bulkhead.limiter.in_use == 0
    assert sorted(path for _, path, _ in partner.seen) == ["/busy", "/slow"]
    await dispatcher.close()
