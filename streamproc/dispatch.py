"""Per-destination bulkheads that send deliveries: concurrency, rate limit, retries, circuit breaker, order.

Each destination instance gets its own `Bulkhead`, so a slow or broken partner holds only its own
deliveries. A delivery is sent request by request; a request is retried while the destination's
`classify` says RETRY (or no answer came back), with exponential backoff and full jitter that
honours Retry-After, until `max_attempts` or the time budget runs out. The outcome of every
delivery is a `DeliveryResult`: delivered, skipped, or to be dead-lettered with a `Failure`.

A caller that can park deliveries in a retry topic (the worker) passes a `RetryShare`: a destination
with `park_after_attempts`/`park_after_seconds` then spends only that share in memory (none at all
while its circuit is open) and returns "parked" with the time of its next attempt, instead of
holding its event's offset for the whole budget. Without a share (replay, redrive) nothing parks.

Requests go out through the bulkhead's `HttpClient` (streamproc.client), the one seam to HTTP.
The per-request bookkeeping has fast paths for the common case (circuit closed, no rate limit, a
free concurrency slot, unordered), since it runs as often as the client itself. The worker lets
deliveries in through `Dispatcher.admit`: a delivery waiting for its key's turn or a concurrency
slot is a callback in a queue (an `Admission`), and gets its task only once it may send, so a
backlog of thousands of deliveries costs no tasks, coroutines or futures while it waits.

A delivery task that waits rather than sends (a retry backoff, a concurrency slot, a rate token,
an open circuit, its key's turn) is in `Dispatcher.waiting` meanwhile: a partition being released
cancels those at once (they stay unfinished, for the partition's next owner) and awaits only the
ones on the wire. Only the slow paths pay for that bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal, Protocol, TypeVar

import structlog

from streamproc.batching import Batcher, batchers_for
from streamproc.client import DEFAULT_CLIENT, HttpClient, SendError, make_client
from streamproc.destinations import registry
from streamproc.destinations.base import ClassifyFn, Outcome, Request, Verdict, classify_http
from streamproc.errors import DeliveryError, ErrorType
from streamproc.metrics import Metrics, status_class

__all__ = [
    "Bulkhead",
    "BulkheadPolicy",
    "CircuitBreaker",
    "CircuitState",
    "ConcurrencyLimit",
    "DeliveryLike",
    "DeliveryResult",
    "Dispatcher",
    "Failure",
    "KeySequencer",
    "RetryShare",
    "TokenBucket",
]

log = structlog.get_logger("streamproc.dispatch")

T = TypeVar("T")

RESPONSE_BODY_LIMIT = 2048
"""Bytes of a partner's error response kept for the dead letter."""


async def _waited(waiting: set[asyncio.Task[Any]], awaitable: Awaitable[T]) -> T:
    """Await a wait (not a send) with the current task in `waiting` meanwhile."""
    task = asyncio.current_task()
    assert task is not None
    waiting.add(task)
    try:
        return await awaitable
    finally:
        waiting.discard(task)


class DeliveryLike(Protocol):
    """What dispatch reads from a router `Delivery`."""

    @property
    def delivery_id(self) -> str: ...
    @property
    def destination(self) -> str: ...
    @property
    def subscription(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def requests(self) -> Sequence[Request]: ...
    @property
    def error(self) -> DeliveryError | None: ...
    @property
    def skipped(self) -> str | None: ...
    @property
    def ordering_key(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a delivery is dead-lettered: what a redrive or a person needs to decide what to do."""

    type: ErrorType
    message: str
    status: int | None = None
    response_body: str | None = None
    attempts: int = 0
    first_attempt_at: float | None = None
    """Unix time of the first HTTP attempt (None when nothing was sent)."""
    last_attempt_at: float | None = None


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The finished state of one delivery (for "parked": finished in memory, to be retried later)."""

    outcome: Literal["delivered", "skipped", "dead_lettered", "parked"]
    failure: Failure | None = None
    """Why it was dead-lettered, or for "parked" the last error (attempts and times are totals)."""
    attempts: int = 0
    next_attempt_at: float | None = None
    """"parked": Unix time before which it must not be tried again."""
    deadline_at: float | None = None
    """"parked": Unix time at which its retry budget ends (then it is dead-lettered)."""


@dataclass(frozen=True, slots=True)
class RetryShare:
    """What a delivery brings with it when it may be parked: what earlier runs spent (zero for a
    fresh delivery), and whether it must park at once without trying (it is behind a parked
    delivery of the same key, for an `ordering: key` destination)."""

    attempts: int = 0
    first_attempt_at: float | None = None
    deadline_at: float | None = None
    """Unix time at which the total budget ends; None: `budget` seconds from now."""
    parks: int = 0
    """How many times it was parked already (each park waits longer)."""
    park_now: bool = False
    reason: str | None = None
    """Why it parks at once (the message of its parked "failure")."""


@dataclass(frozen=True)
class BulkheadPolicy:
    """The limits of one destination instance (built from its `DestinationConfig`)."""

    destination: str
    ordered: bool = False
    concurrency: int = 64
    adaptive: bool = False
    latency_factor: float = 2.0
    """Adaptive only: latency past this many times its recent floor counts as overload."""
    rate: float | None = None
    timeout: float = 10.0
    max_attempts: int = 8
    budget: float = 300.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    failure_ratio: float = 0.5
    min_requests: int = 20
    window: float = 30.0
    open_for: float = 10.0
    park_after_attempts: int | None = None
    park_after_seconds: float | None = None
    park_delay: float = 5.0
    park_delay_max: float = 300.0

    @property
    def parks(self) -> bool:
        """Whether deliveries may leave memory for the retry topic (a share is configured)."""
        return self.park_after_attempts is not None or self.park_after_seconds is not None

    def park_wait(self, parks: int) -> float:
        """Seconds a delivery parked for the `parks`-th time (1, 2, ...) waits: doubling, capped."""
        return min(self.park_delay_max, self.park_delay * (2 ** max(0, parks - 1)))

    @classmethod
    def from_config(cls, destination: Any) -> BulkheadPolicy:
        """From a `config.DestinationConfig` (id, ordering, limits.{retry,breaker})."""
        limits = destination.limits
        return cls(
            destination=destination.id,
            ordered=destination.ordering == "key",
            concurrency=limits.concurrency,
            adaptive=limits.adaptive,
            rate=limits.rate,
            timeout=limits.timeout,
            max_attempts=limits.retry.max_attempts,
            budget=limits.retry.budget,
            backoff_initial=limits.retry.backoff_initial,
            backoff_max=limits.retry.backoff_max,
            failure_ratio=limits.breaker.failure_ratio,
            min_requests=limits.breaker.min_requests,
            window=limits.breaker.window,
            open_for=limits.breaker.open_for,
            park_after_attempts=limits.retry.park_after_attempts,
            park_after_seconds=limits.retry.park_after_seconds,
            park_delay=limits.retry.park_delay,
            park_delay_max=limits.retry.park_delay_max,
        )


class TokenBucket:
    """A rate limit of `rate` requests per second with a burst of about one second's worth.

    Tokens may go negative: each caller reserves its slot at once and sleeps until it comes, so
    waiters are served in arrival order and nobody polls.
    """

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self._tokens = self.capacity
        self._clock = clock
        self._updated = clock()

    def reserve(self) -> float:
        """Take one token; returns how long the caller must wait before using it."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def acquire(self) -> float:
        """Wait for a token; returns the seconds waited."""
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)
        return delay


class CircuitState(IntEnum):
    """Values are what the `streamproc_circuit_state` gauge shows."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Opens when the failure ratio over a sliding window passes a threshold (with a minimum of
    requests), stays open for `open_for` seconds, then lets `probes` requests through one at a
    time: a success closes it, a failure opens it again.

    The window is kept as ten time buckets, so recording costs O(1) whatever the request rate.
    """

    BUCKETS = 10

    def __init__(
        self,
        *,
        failure_ratio: float = 0.5,
        min_requests: int = 20,
        window: float = 30.0,
        open_for: float = 10.0,
        probes: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitState], None] | None = None,
    ) -> None:
        self.failure_ratio = failure_ratio
        self.min_requests = max(1, min_requests)
        self.window = window
        self.open_for = open_for
        self.probes = probes
        self._clock = clock
        self._on_change = on_change
        self._bucket_width = window / self.BUCKETS
        self._buckets: deque[list[int]] = deque()  # [bucket id, requests, failures]
        self._total = 0
        self._failures = 0
        self.state = CircuitState.CLOSED
        self._opened_at = 0.0
        self._probes_out = 0
        self._probe_successes = 0
        self._changed = asyncio.Event()

    # -- state -------------------------------------------------------------------------------
    def _set(self, state: CircuitState) -> None:
        if state is self.state:
            return
        self.state = state
        if state is CircuitState.OPEN:
            self._opened_at = self._clock()
        if state is not CircuitState.CLOSED:
            self._buckets.clear()
            self._total = self._failures = 0
        self._probes_out = 0
        self._probe_successes = 0
        # Wake every waiter so each re-reads the state; a fresh Event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()
        if self._on_change is not None:
            self._on_change(state)

    def _expire(self, now: float) -> int:
        current = int(now / self._bucket_width)
        buckets = self._buckets
        while buckets and buckets[0][0] <= current - self.BUCKETS:
            _, total, failures = buckets.popleft()
            self._total -= total
            self._failures -= failures
        return current

    def allows(self) -> bool:
        """Whether a request may go now without waiting (does not reserve a probe)."""
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN:
            return self._clock() >= self._opened_at + self.open_for
        return self._probes_out < self.probes

    def closed_for(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when a request may go now)."""
        if self.state is CircuitState.OPEN:
            return max(0.0, self._opened_at + self.open_for - self._clock())
        return 0.0

    def try_acquire(self) -> tuple[bool, bool]:
        """(allowed, is_probe). A probe must be reported with `record` or `release`."""
        if self.state is CircuitState.CLOSED:
            return True, False
        if self.state is CircuitState.OPEN and self._clock() >= self._opened_at + self.open_for:
            self._set(CircuitState.HALF_OPEN)
        if self.state is CircuitState.HALF_OPEN and self._probes_out < self.probes:
            self._probes_out += 1
            return True, True
        return False, False

    async def acquire(self, deadline: float) -> bool | None:
        """Wait until a request may go; returns whether it is a probe, or None if `deadline`
        (monotonic) passed first."""
        while True:
            allowed, probe = self.try_acquire()
            if allowed:
                return probe
            now = self._clock()
            if now >= deadline:
                return None
            wake = deadline
            if self.state is CircuitState.OPEN:
                wake = min(deadline, self._opened_at + self.open_for)
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), max(0.0, wake - now) + 0.001)

    def release(self, probe: bool) -> None:
        """Give back a probe that ended without an answer worth judging (cancelled)."""
        if probe and self.state is CircuitState.HALF_OPEN and self._probes_out > 0:
            self._probes_out -= 1
            self._changed.set()
            self._changed = asyncio.Event()

    def record(self, success: bool, probe: bool = False) -> None:
        """Report one finished request."""
        if self.state is CircuitState.HALF_OPEN:
            if not probe:
                return  # a request admitted before the circuit opened says nothing about now
            if not success:
                self._set(CircuitState.OPEN)
                return
            self._probes_out -= 1
            self._probe_successes += 1
            if self._probe_successes >= self.probes:
                self._set(CircuitState.CLOSED)
            else:
                self._changed.set()
                self._changed = asyncio.Event()
            return
        if self.state is CircuitState.OPEN:
            return
        now = self._clock()
        current = self._expire(now)
        buckets = self._buckets
        if not buckets or buckets[-1][0] != current:
            buckets.append([current, 0, 0])
        bucket = buckets[-1]
        bucket[1] += 1
        self._total += 1
        if not success:
            bucket[2] += 1
            self._failures += 1
            if self._total >= self.min_requests and self._failures >= self.failure_ratio * self._total:
                self._set(CircuitState.OPEN)


class _Turn:
    """One place in a key's queue; the future to wait on is made only when someone does wait
    (a task), and an admission waiting for it leaves a callback instead (`KeySequencer.then`)."""

    __slots__ = ("finished", "then", "waiter")

    def __init__(self) -> None:
        self.finished = False
        self.waiter: asyncio.Future[None] | None = None
        self.then: Callable[[], None] | None = None


class KeySequencer:
    """Runs work for one key one at a time, in the order `turn` was called, while other keys proceed.

    Only the tail of each key's chain is kept, so memory is bounded by the work in flight; a key
    with nothing ahead of it costs no future.
    """

    def __init__(self) -> None:
        self._tails: dict[Any, _Turn] = {}

    def __len__(self) -> int:
        return len(self._tails)

    def turn(self, key: Any) -> tuple[_Turn | None, _Turn]:
        """Join the queue for `key` now (synchronously, to fix the order): (predecessor, mine)."""
        mine = _Turn()
        prev = self._tails.get(key)
        self._tails[key] = mine
        return prev, mine

    async def wait(self, prev: _Turn) -> None:
        """Until the predecessor is done."""
        if prev.finished:
            return
        if prev.waiter is None:
            prev.waiter = asyncio.get_running_loop().create_future()
        # shield: our cancellation must not cancel the predecessor's marker.
        await asyncio.shield(prev.waiter)

    @staticmethod
    def then(prev: _Turn, go: Callable[[], None]) -> None:
        """Call `go` once the predecessor is done (at once if it is), without a task waiting."""
        if prev.finished:
            go()
        else:
            prev.then = go

    def done(self, key: Any, mine: _Turn) -> None:
        """Let the next one for `key` go."""
        mine.finished = True
        if mine.waiter is not None and not mine.waiter.done():
            mine.waiter.set_result(None)
        if mine.then is not None:
            # From the loop, not from here: a key's chain of admissions given up at a revoke would
            # otherwise run as one deep recursion.
            asyncio.get_running_loop().call_soon(mine.then)
            mine.then = None
        if self._tails.get(key) is mine:
            del self._tails[key]


class ConcurrencyLimit:
    """At most `limit` requests at once, waiters served in arrival order; fixed at `maximum`, or
    learned between 1 and `maximum` by AIMD when `adaptive`.

    AIMD, as TCP does it: the limit starts at `initial` and, until the first sign of overload,
    grows by one per success (doubling each round of requests); after that each success adds
    1/limit (about one per round). A sign of overload multiplies it by `backoff`: a 429 or an
    in-band throttle answer, a timeout, or latency grown past `latency_factor` times its recent
    floor. Growth counts only successes of requests that found the limit at least half used, and
    one round of requests cuts once: only a request admitted after the last cut can cut again, so
    a burst of 429s from requests sent together is one cut, not many.
    """

    def __init__(
        self,
        maximum: int,
        *,
        adaptive: bool = False,
        initial: int = 8,
        backoff: float = 0.8,
        latency_factor: float = 2.0,
    ) -> None:
        if maximum < 1:
            raise ValueError("maximum must be at least 1")
        self.maximum = maximum
        self.adaptive = adaptive
        self.backoff = backoff
        self.latency_factor = latency_factor
        start = max(1, min(maximum, initial)) if adaptive else maximum
        self._estimate = float(start)
        self.limit = start
        self.in_use = 0
        self.started = 0
        """Requests admitted so far; read right after acquiring, it is the ticket for `record`."""
        self._slow_start = True
        self._cut_at = 0
        self._floor = 0.0
        self._recent = 0.0
        self._waiters: deque[asyncio.Future[None] | Callable[[], bool]] = deque()
        """In arrival order: futures of waiting tasks, and admissions' starters (`when_free`)."""

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits (no await: the common case)."""
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            self.started += 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a slot."""
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            raise

    def when_free(self, start: Callable[[], bool], *, first: bool = False) -> None:
        """Call `start` holding a slot: now if one is free and nobody waits, else in turn, with no
        future and no task while it waits. `start` returns False when it no longer wants the
        slot (the slot goes on to the next in line); otherwise the slot is its to release.
        `first`: ahead of everyone waiting (a delivery let in before them that waited for its key)."""
        if self.in_use < self.limit and (first or not self._waiters):
            self.in_use += 1
            self.started += 1
            if not start():
                self.release()
            return
        if first:
            self._waiters.appendleft(start)
        else:
            self._waiters.append(start)

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters and self.in_use < self.limit:
            waiter = waiters.popleft()
            if isinstance(waiter, asyncio.Future):
                if not waiter.done():
                    self.in_use += 1
                    self.started += 1
                    waiter.set_result(None)
            else:
                self.in_use += 1
                self.started += 1
                if not waiter():
                    self.in_use -= 1

    def drop_waiting(self) -> int:
        """Forget the admissions still waiting for a slot (the bulkhead is closing); how many."""
        starters = [w for w in self._waiters if not isinstance(w, asyncio.Future)]
        self._waiters = deque(w for w in self._waiters if isinstance(w, asyncio.Future))
        return len(starters)

    def record(self, ticket: int, latency: float | None, overloaded: bool) -> None:
        """Report a finished request, while it still holds its slot: its ticket, its latency when an
        answer came, and whether the answer was a sign of overload (429, throttle, timeout)."""
        if not self.adaptive:
            return
        if latency is not None and not overloaded:
            floor = self._floor
            # The floor drifts up slowly, so a partner that got slower for good is relearned.
            self._floor = latency if floor == 0.0 or latency < floor else floor * 1.002
            self._recent = latency if self._recent == 0.0 else self._recent * 0.9 + latency * 0.1
            overloaded = self._recent > self.latency_factor * self._floor
        if overloaded:
            if ticket > self._cut_at:
                self._cut_at = self.started
                self._slow_start = False
                self._estimate = max(1.0, self._estimate * self.backoff)
                self._recent = 0.0
                self.limit = int(self._estimate)
            return
        if latency is None or self.in_use * 2 < self.limit or self._estimate >= self.maximum:
            return
        step = 1.0 if self._slow_start else 1.0 / self._estimate
        self._estimate = min(float(self.maximum), self._estimate + step)
        limit = int(self._estimate)
        if limit != self.limit:
            self.limit = limit
            self._wake()


_DELIVERED_ONCE = DeliveryResult("delivered", attempts=1)


def _throttled(outcome: Outcome) -> bool:
    """The partner asked for fewer requests: a 429, or its in-band throttle code."""
    return outcome.status == 429 or outcome.throttled


class Bulkhead:
    """Everything that limits and protects calls to one destination instance."""

    def __init__(
        self,
        policy: BulkheadPolicy,
        *,
        classify: ClassifyFn = classify_http,
        metrics: Metrics | None = None,
        client: HttpClient | str | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        """`client`: an HttpClient (shared, not closed here), or the name of one to make and own."""
        self.policy = policy
        self.classify = classify
        self._metrics = metrics if metrics is not None else Metrics()
        if client is None or isinstance(client, str):
            self._client = make_client(client or DEFAULT_CLIENT, max_connections=policy.concurrency)
            self._owns_client = True
        else:
            self._client = client
            self._owns_client = False
        self._clock = clock
        self._rng = rng or random.Random()
        self.limiter = ConcurrencyLimit(
            policy.concurrency, adaptive=policy.adaptive, latency_factor=policy.latency_factor
        )
        self._bucket = TokenBucket(policy.rate, clock=clock) if policy.rate else None
        self.in_flight = 0
        """Deliveries of this destination not finished yet (those waiting in an open batch aside)."""
        self.batchers: list[Batcher] = []
        """The batchers sending through this bulkhead: their open batches' deliveries are in flight too."""
        self.waiting: set[asyncio.Task[Any]] = set()
        """Tasks waiting rather than sending (the dispatcher shares one set among its bulkheads)."""
        dest = policy.destination
        m = self._metrics
        self._m_circuit = m.circuit_state.labels(dest)
        self._m_circuit.set(0)
        self.breaker = CircuitBreaker(
            failure_ratio=policy.failure_ratio,
            min_requests=policy.min_requests,
            window=policy.window,
            open_for=policy.open_for,
            clock=clock,
            on_change=self._on_circuit_change,
        )
        self._m_retries = m.retries.labels(dest)
        self._m_request_latency = m.request_latency.labels(dest)
        self._m_rate_wait = m.rate_limit_wait.labels(dest)
        self._m_partial = m.partial_successes.labels(dest)
        # Gauges read when scraped: nothing to update per delivery.
        m.in_flight_deliveries.labels(dest).set_function(
            lambda: self.in_flight + sum(b.waiting for b in self.batchers)
        )
        m.concurrency_limit.labels(dest).set_function(lambda: self.limiter.limit)
        self._m_responses = m.partner_responses
        self._m_by_status: dict[int, Any] = {}
        """Status -> its status class's response counter (a handful of statuses per partner)."""
        self._m_no_answer = m.partner_responses.labels(dest, status_class(None))

    def _on_circuit_change(self, state: CircuitState) -> None:
        self._m_circuit.set(int(state))
        log.warning("circuit_state", destination=self.policy.destination, state=state.name.lower())

    async def close(self) -> None:
        self.limiter.drop_waiting()
        if self._owns_client:
            await self._client.close()

    def _answered(
        self, status: int, headers: Mapping[str, str], body: bytes, latency: float, ticket: int
    ) -> tuple[Outcome, str | None]:
        """The partner's verdict on one answer and, unless delivered, the start of its body."""
        self._m_request_latency.observe(latency)
        counter = self._m_by_status.get(status)
        if counter is None:
            counter = self._m_by_status[status] = self._m_responses.labels(
                self.policy.destination, status_class(status)
            )
        counter.inc()
        outcome = self.classify(status, headers, body)
        limiter = self.limiter
        if outcome.verdict is Verdict.DELIVERED:
            if outcome.partial:
                self._m_partial.inc()
            limiter.record(ticket, latency, outcome.throttled)
            return outcome, None
        limiter.record(ticket, latency, _throttled(outcome))
        if body:
            return outcome, body[:RESPONSE_BODY_LIMIT].decode("utf-8", "replace")
        return outcome, None

    def _no_answer(self, exc: SendError, latency: float, ticket: int) -> Outcome:
        """The verdict on an attempt that got no answer (timeout, refused, reset): RETRY."""
        self._m_request_latency.observe(latency)
        self._m_no_answer.inc()
        self.limiter.record(ticket, None, exc.kind == "timeout")
        return Outcome(Verdict.RETRY, None, str(exc))

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter: uniform in [0, min(max, initial * 2^(attempt-1))], never less than Retry-After."""
        p = self.policy
        ceiling = min(p.backoff_max, p.backoff_initial * (2 ** (attempt - 1)))
        delay = self._rng.uniform(0.0, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def deliver(
        self, delivery: DeliveryLike, share: RetryShare | None = None
    ) -> Coroutine[Any, Any, DeliveryResult]:
        """Send every request of a delivery; never raises for partner trouble (it is the outcome).

        With a `share` and a policy that parks, the delivery may come back "parked" (see `_park`).
        Returns the coroutine to await: a delivery with requests to send and nothing to check
        first goes straight to the sending loop, without a coroutine in between."""
        if share is not None and not self.policy.parks:
            share = None
        if share is None and delivery.error is None and delivery.skipped is None and delivery.requests:
            return self._deliver(delivery.requests)
        return self._deliver_checked(delivery, share)

    async def _deliver_checked(self, delivery: DeliveryLike, share: RetryShare | None) -> DeliveryResult:
        if delivery.error is not None:
            err = delivery.error
            return DeliveryResult(
                "dead_lettered", Failure(ErrorType.of(err), err.message, err.status, err.body)
            )
        if delivery.skipped is not None or not delivery.requests:
            return DeliveryResult("skipped")
        if share is not None and share.deadline_at is not None and time.time() >= share.deadline_at:
            return DeliveryResult(
                "dead_lettered",
                Failure(
                    ErrorType.RETRYABLE,
                    f"retry budget of {self.policy.budget:g}s ended while parked, after {share.attempts} "
                    "attempts" + (f": {share.reason}" if share.reason else ""),
                    attempts=share.attempts,
                    first_attempt_at=share.first_attempt_at,
                ),
                attempts=share.attempts,
            )
        if share is not None and share.park_now:
            reason = share.reason or "parked behind an earlier parked delivery of the same key"
            return self._park(
                share, ErrorType.PARKED_BEHIND, reason, None, None, 0, share.first_attempt_at, None
            )
        return await self._deliver(delivery.requests, share)

    def deliver_combined(self, request: Request, deliveries: int) -> Coroutine[Any, Any, DeliveryResult]:
        """Send one request that carries `deliveries` deliveries (a batch), retried as one delivery."""
        return self._deliver((request,), None, deliveries)

    async def _deliver(
        self,
        requests: Sequence[Request],
        share: RetryShare | None = None,
        deliveries: int = 1,
        admitted: Admission | None = None,
    ) -> DeliveryResult:
        """The sending loop of one delivery (or of one batch request carrying `deliveries`); an
        `admitted` one holds a slot already, which its first attempt uses."""
        self.in_flight += deliveries
        try:
            p = self.policy
            breaker = self.breaker
            limiter = self.limiter
            client = self._client
            clock = self._clock
            started = clock()
            prior = share.attempts if share is not None else 0
            deadline = started + p.budget
            if share is not None and share.deadline_at is not None:
                deadline = started + (share.deadline_at - time.time())
            attempts_total = 0
            first_at: float | None = share.first_attempt_at if share is not None else None
            last_at: float | None = None
            for request in requests:
                attempt = 0
                last: Outcome | None = None
                last_body: str | None = None
                while True:
                    probe: bool | None
                    if share is not None:
                        # Parking step: an open circuit parks at once instead of holding the offset.
                        allowed, probe = breaker.try_acquire()
                        if not allowed:
                            if self._clock() >= deadline:
                                probe = None
                            else:
                                return self._park(
                                    share,
                                    ErrorType.CIRCUIT_OPEN,
                                    f"circuit of {p.destination} open"
                                    + (f"; last error: {last.message}" if last else ""),
                                    last,
                                    last_body,
                                    attempts_total,
                                    first_at,
                                    last_at,
                                )
                    elif breaker.state is CircuitState.CLOSED:
                        probe = False  # no coroutine to enter: the common case
                    else:
                        if admitted is not None and admitted.holds:
                            admitted.give_back()  # no slot held while the circuit is open
                        probe = await _waited(self.waiting, breaker.acquire(deadline))
                    if probe is None:
                        return self._failed(
                            ErrorType.CIRCUIT_OPEN,
                            f"circuit of {p.destination} open until the retry budget of {p.budget:g}s ended"
                            + (f"; last error: {last.message}" if last else ""),
                            last,
                            last_body,
                            prior + attempts_total,
                            first_at,
                            last_at,
                        )
                    outcome: Outcome | None = None
                    try:
                        if admitted is not None and admitted.holds:
                            admitted.holds = False  # its slot is this attempt's now
                        elif not limiter.try_acquire():
                            await _waited(self.waiting, limiter.acquire())
                        try:
                            if self._bucket is not None:
                                wait = self._bucket.reserve()
                                if wait > 0:
                                    await _waited(self.waiting, asyncio.sleep(wait))
                                    self._m_rate_wait.inc(wait)
                            attempt += 1
                            attempts_total += 1
                            last_at = time.time()
                            if first_at is None:
                                first_at = last_at
                            # One attempt (the client is awaited here, not in a coroutine of its own).
                            ticket = limiter.started
                            sent = clock()
                            try:
                                status, headers, body = await client.send(request, p.timeout)
                            except SendError as exc:
                                outcome, last_body = self._no_answer(exc, clock() - sent, ticket), None
                            else:
                                outcome, last_body = self._answered(
                                    status, headers, body, clock() - sent, ticket
                                )
                        finally:
                            limiter.release()
                    finally:
                        if outcome is None:
                            breaker.release(probe)
                    verdict = outcome.verdict
                    if verdict is Verdict.RETRY and limiter.adaptive and _throttled(outcome):
                        # "Slower", not "down": the adaptive limit answers it; the circuit stays out.
                        breaker.release(probe)
                    else:
                        breaker.record(verdict is not Verdict.RETRY, probe)
                    last = outcome
                    if verdict is Verdict.DELIVERED:
                        break
                    if verdict is Verdict.FAIL:
                        return self._failed(
                            ErrorType.PERMANENT,
                            outcome.message,
                            outcome,
                            last_body,
                            prior + attempts_total,
                            first_at,
                            last_at,
                        )
                    if prior + attempt >= p.max_attempts:
                        return self._failed(
                            ErrorType.RETRYABLE,
                            f"gave up after {prior + attempt} attempts: {outcome.message}",
                            outcome,
                            last_body,
                            prior + attempts_total,
                            first_at,
                            last_at,
                        )
                    delay = self._backoff(attempt, outcome.retry_after)
                    if self._clock() + delay > deadline:
                        return self._failed(
                            ErrorType.RETRYABLE,
                            f"retry budget of {p.budget:g}s spent after {prior + attempt} attempts: "
                            f"{outcome.message}",
                            outcome,
                            last_body,
                            prior + attempts_total,
                            first_at,
                            last_at,
                        )
                    if share is not None and (
                        (p.park_after_attempts is not None and attempt >= p.park_after_attempts)
                        or (
                            p.park_after_seconds is not None
                            and self._clock() + delay - started > p.park_after_seconds
                        )
                    ):
                        # Parking step: the in-memory share is spent; the retry topic waits instead.
                        return self._park(
                            share,
                            ErrorType.RETRYABLE,
                            outcome.message,
                            outcome,
                            last_body,
                            attempts_total,
                            first_at,
                            last_at,
                            delay,
                        )
                    self._m_retries.inc()
                    await _waited(self.waiting, asyncio.sleep(delay))
            if prior + attempts_total == 1:
                return _DELIVERED_ONCE
            return DeliveryResult("delivered", attempts=prior + attempts_total)
        finally:
            self.in_flight -= deliveries

    def _park(
        self,
        share: RetryShare,
        kind: ErrorType,
        message: str,
        outcome: Outcome | None,
        body: str | None,
        attempts: int,
        first_at: float | None,
        last_at: float | None,
        delay: float = 0.0,
    ) -> DeliveryResult:
        """ "parked", due after the park wait (never before Retry-After or the backoff just drawn);
        dead-lettered instead when the budget ends before that."""
        p = self.policy
        now = time.time()
        deadline_at = share.deadline_at if share.deadline_at is not None else now + p.budget
        # Parked behind a key's earlier delivery: due at once, the retry topic's order holds it back.
        due = now if kind is ErrorType.PARKED_BEHIND else now + max(delay, p.park_wait(share.parks + 1))
        total = share.attempts + attempts
        if due >= deadline_at:
            return self._failed(
                ErrorType.RETRYABLE,
                f"retry budget of {p.budget:g}s ends before the next attempt "
                f"after {total} attempts: {message}",
                outcome,
                body,
                total,
                first_at,
                last_at,
            )
        status = outcome.status if outcome is not None else None
        return DeliveryResult(
            "parked",
            Failure(kind, message, status, body, total, first_at, last_at),
            attempts=total,
            next_attempt_at=due,
            deadline_at=deadline_at,
        )

    @staticmethod
    def _failed(
        kind: ErrorType,
        message: str,
        outcome: Outcome | None,
        body: str | None,
        attempts: int,
        first_at: float | None,
        last_at: float | None,
    ) -> DeliveryResult:
        status = outcome.status if outcome is not None else None
        return DeliveryResult(
            "dead_lettered",
            Failure(kind, message, status, body, attempts, first_at, last_at),
            attempts=attempts,
        )


class Admission:
    """A delivery let in without a task while it waits: it takes its key's turn (ordered
    destinations) and then a concurrency slot, and only then is `start(admission)` called, which
    runs `send()` in a task and makes `finish` that task's done callback. A backlog of thousands of
    deliveries then waits as these small objects instead of as tasks, coroutines and futures.

    `start` returns False when the delivery is no longer wanted (its partition was released):
    it is given up, and what it holds (its turn, its slot) goes on to the next in line."""

    __slots__ = ("_bulkhead", "_key", "_open", "_sequencer", "_start", "_turn", "delivery", "holds")

    def __init__(
        self,
        bulkhead: Bulkhead,
        delivery: DeliveryLike,
        start: Callable[[Admission], bool],
        sequencer: KeySequencer,
    ) -> None:
        self._bulkhead = bulkhead
        self.delivery = delivery
        self._start = start
        self._sequencer = sequencer
        self._key: Any = None
        self._turn: _Turn | None = None
        self.holds = False
        """Whether it holds a concurrency slot not yet used by an attempt."""
        self._open = True
        bulkhead.in_flight += 1

    def send(self) -> Coroutine[Any, Any, DeliveryResult]:
        """The delivery's sending loop (its first attempt uses the slot held)."""
        if self.delivery.requests and self.delivery.skipped is None:
            return self._bulkhead._deliver(self.delivery.requests, None, 0, self)
        return self._bulkhead.deliver(self.delivery)  # skipped: it only had to wait for its turn

    def give_back(self) -> None:
        """Release the slot held without using it."""
        if self.holds:
            self.holds = False
            self._bulkhead.limiter.release()

    def finish(self, _task: object = None) -> None:
        """The delivery is over (or given up): give back its slot if unused, let its key's next go."""
        if not self._open:
            return
        self._open = False
        self.give_back()
        self._bulkhead.in_flight -= 1
        if self._turn is not None:
            turn, self._turn = self._turn, None
            self._sequencer.done(self._key, turn)

    def take_turn(self, key: Any) -> None:
        """Join `key`'s queue now (the order is fixed here), and queue for a slot once it is first."""
        prev, self._turn = self._sequencer.turn(key)
        self._key = key
        if prev is None or prev.finished:
            self.queue()
        else:
            KeySequencer.then(prev, self._turn_came)

    def queue(self, first: bool = False) -> None:
        """Wait for a concurrency slot (a delivery with nothing to send starts without one);
        `first`: ahead of those waiting for one."""
        if self.delivery.requests and self.delivery.skipped is None:
            self._bulkhead.limiter.when_free(self._started, first=first)
        elif not self._start(self):
            self.finish()

    def _turn_came(self) -> None:
        # Its predecessor of the same key is done: it goes ahead of the deliveries waiting for a
        # slot, which were mostly let in after it. At the back of the line it would wait for all
        # of them, its event holding its partition's watermark (and the in-flight window) that
        # long: on a backlog the window would stay full until the work ran out.
        self.queue(first=True)

    def _started(self) -> bool:
        self.holds = True
        if self._start(self):
            return True
        self.holds = False  # the limiter takes the slot back
        self.finish()
        return False


class Dispatcher:
    """Routes each delivery to its destination's bulkhead, keeping per-key order where asked."""

    def __init__(
        self, bulkheads: Iterable[Bulkhead], batchers: Mapping[tuple[str, str], Batcher] | None = None
    ) -> None:
        self.bulkheads: dict[str, Bulkhead] = {b.policy.destination: b for b in bulkheads}
        self.waiting: set[asyncio.Task[Any]] = set()
        """Tasks of deliveries that wait rather than send: a retry backoff, a concurrency slot, a
        rate token, an open circuit, their key's turn. Cancelling one loses nothing it has sent."""
        for bulkhead in self.bulkheads.values():
            bulkhead.waiting = self.waiting
        self._sequencer = KeySequencer()
        self._batchers: Mapping[tuple[str, str], Batcher] = batchers or {}
        """(destination, subscription) -> the batcher its deliveries go through, when batching is on."""
        self._batched = frozenset(d for d, _ in self._batchers)

    @classmethod
    def from_config(
        cls, destinations: Iterable[tuple[Any, ClassifyFn]], metrics: Metrics, *, client: str = DEFAULT_CLIENT
    ) -> Dispatcher:
        """From (`DestinationConfig`, the destination type's `classify`) pairs; `client` is
        `http.client` of the configuration (each bulkhead gets its own client of that kind)."""
        pairs = list(destinations)
        bulkheads = [
            Bulkhead(BulkheadPolicy.from_config(cfg), classify=classify, metrics=metrics, client=client)
            for cfg, classify in pairs
        ]
        return cls(bulkheads, _batchers_of(pairs, bulkheads, metrics))

    def not_before(self, destination: str) -> float:
        """Unix time before which a delivery to `destination` would only meet its open circuit
        (0 when it may go now): the retry consumer leaves parked records in the topic till then."""
        wait = self.bulkheads[destination].breaker.closed_for()
        return time.time() + wait if wait > 0 else 0.0

    @property
    def keys_waiting(self) -> int:
        return len(self._sequencer)

    def admits(self, destination: str) -> bool:
        """Whether `admit` takes the deliveries of `destination`: every one that has no batch.
        Take all of a destination's deliveries one way (its key order is fixed by either)."""
        return destination not in self._batched

    def admit(self, delivery: DeliveryLike, start: Callable[[Admission], bool]) -> bool:
        """Let a delivery in without a task while it waits (see `Admission`): `start` is called
        once it has its key's turn and a slot. For a destination that `admits`, with deliveries
        that never park; False (nothing done) for a delivery with an error, which takes no turn
        and goes straight to `deliver`."""
        if delivery.error is not None:
            return False
        bulkhead = self.bulkheads[delivery.destination]
        admission = Admission(bulkhead, delivery, start, self._sequencer)
        key = delivery.ordering_key
        if bulkhead.policy.ordered and key is not None:
            admission.take_turn((delivery.destination, key))
        else:
            admission.queue()
        return True

    def deliver(
        self,
        delivery: DeliveryLike,
        share: RetryShare | None = None,
        *,
        behind: Callable[[], RetryShare | None] | None = None,
        on_parked: Callable[[DeliveryResult], Awaitable[None]] | None = None,
    ) -> Coroutine[Any, Any, DeliveryResult]:
        """Send one delivery: the coroutine to await. Per-key order is fixed when that coroutine
        starts, so start them in offset order (the first await comes after the delivery has taken
        its place).

        For an ordered destination, `behind` is asked at the delivery's turn whether its key has a
        parked delivery (it answers with a share that parks at once, or None), and a "parked"
        result is handed to `on_parked` (which writes the retry record) before the key's next
        delivery may go: a key's parked deliveries reach the retry topic in offset order."""
        bulkhead = self.bulkheads[delivery.destination]
        batcher = None
        if self._batchers:
            batcher = self._batchers.get((delivery.destination, delivery.subscription))
        if bulkhead.policy.ordered and delivery.ordering_key is not None and delivery.error is None:
            return self._in_order(bulkhead, batcher, delivery, share, behind, on_parked)
        if batcher is not None:
            return batcher.deliver(delivery)  # a batched delivery goes out with its batch and never parks
        if share is not None and on_parked is not None and bulkhead.policy.parks:
            return self._then_parked(bulkhead.deliver(delivery, share), on_parked)
        # The common case: the bulkhead's own coroutine, nothing wrapped around it.
        return bulkhead.deliver(delivery, share)

    @staticmethod
    async def _then_parked(
        sent: Awaitable[DeliveryResult], on_parked: Callable[[DeliveryResult], Awaitable[None]]
    ) -> DeliveryResult:
        result = await sent
        if result.outcome == "parked":
            await on_parked(result)
        return result

    async def _in_order(
        self,
        bulkhead: Bulkhead,
        batcher: Batcher | None,
        delivery: DeliveryLike,
        share: RetryShare | None,
        behind: Callable[[], RetryShare | None] | None,
        on_parked: Callable[[DeliveryResult], Awaitable[None]] | None,
    ) -> DeliveryResult:
        if batcher is not None:
            share = None  # a batched delivery goes out with its batch and never parks
        seq_key = (delivery.destination, delivery.ordering_key)
        prev, mine = self._sequencer.turn(seq_key)
        try:
            if prev is not None and not prev.finished:
                await _waited(self.waiting, self._sequencer.wait(prev))
            if share is not None and behind is not None:
                share = behind() or share
            result = await (
                batcher.deliver(delivery) if batcher is not None else bulkhead.deliver(delivery, share)
            )
            if result.outcome == "parked" and on_parked is not None:
                await on_parked(result)
            return result
        finally:
            self._sequencer.done(seq_key, mine)

    def flush(self) -> None:
        """Send every open batch now, without waiting for its `max_wait_ms` (revoke and shutdown drains)."""
        for batcher in set(self._batchers.values()):
            batcher.flush()

    async def close(self) -> None:
        for batcher in set(self._batchers.values()):
            await batcher.close()
        for bulkhead in self.bulkheads.values():
            await bulkhead.close()


def _batchers_of(
    pairs: Sequence[tuple[Any, ClassifyFn]], bulkheads: Sequence[Bulkhead], metrics: Metrics
) -> dict[tuple[str, str], Batcher]:
    """The batchers of every destination whose configuration turns batching on for a subscription."""
    out: dict[tuple[str, str], Batcher] = {}
    for (cfg, _), bulkhead in zip(pairs, bulkheads, strict=True):
        if not any(getattr(sub, "batch", None) is not None for sub in cfg.subscriptions):
            continue
        actions = registry.get(cfg.type).actions
        specs = {key: a.batching for key, a in actions.items() if a.batching is not None}
        out.update(batchers_for(cfg, specs, bulkhead, metrics))
    return out
