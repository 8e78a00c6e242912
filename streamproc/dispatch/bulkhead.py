"""A destination's bulkhead: sends each delivery request by request, with retries, and says how it ended.

Each destination instance gets its own `Bulkhead`, so a slow or broken partner holds only its own
deliveries. A request is retried while the destination's `classify` says RETRY (or no answer came
back), with exponential backoff and full jitter that honours Retry-After, until `max_attempts` or
the time budget runs out. `_attempt` sends one request and returns the partner's verdict;
`send_requests` is the retry loop and `_after_failure` decides, after a failed attempt, whether to
retry, park or give up; what the attempts spent is kept in a `_Spent`, which builds the failure.

With a `RetryShare` (the worker's parking sender) a destination with
`park_after_attempts`/`park_after_seconds` spends only that share in memory (none at all while its
circuit is open) and returns "parked" with the time of its next attempt, instead of holding its
event's offset for the whole budget. Without a share (replay, redrive) nothing parks.

Requests go out through the bulkhead's `HttpClient` (streamproc.client), the one seam to HTTP.
The per-request bookkeeping has fast paths for the common case (circuit closed, no rate limit, a
free concurrency slot), since it runs as often as the client itself.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from streamproc.client import DEFAULT_CLIENT, HttpClient, SendError, make_client
from streamproc.destinations.base import ClassifyFn, Outcome, Request, Verdict, classify_http
from streamproc.dispatch.breaker import CircuitBreaker, CircuitState
from streamproc.dispatch.limits import ConcurrencyLimit, TokenBucket
from streamproc.dispatch.policy import BulkheadPolicy, DeliveryLike, RetryShare
from streamproc.errors import ErrorType
from streamproc.handoff import DeliveryResult, Failure
from streamproc.metrics import Metrics, status_class

if TYPE_CHECKING:
    from streamproc.batching import Batcher
    from streamproc.dispatch.dispatcher import Admission

__all__ = ["Bulkhead", "waited"]

log = structlog.get_logger("streamproc.dispatch")

T = TypeVar("T")

RESPONSE_BODY_LIMIT = 2048
"""Bytes of a partner's error response kept for the dead letter."""


async def waited(waiting: set[asyncio.Task[Any]], awaitable: Awaitable[T]) -> T:
    """Await a wait (not a send) with the current task in `waiting` meanwhile."""
    task = asyncio.current_task()
    assert task is not None
    waiting.add(task)
    try:
        return await awaitable
    finally:
        waiting.discard(task)


class _Spent:
    """What one delivery's attempts have spent (with what earlier runs spent, for a parked one),
    and the last answer of the request being sent: what its failure is built from."""

    __slots__ = ("attempts", "body", "first_at", "last", "last_at", "prior")

    def __init__(self, share: RetryShare | None) -> None:
        self.prior = share.attempts if share is not None else 0
        """Attempts of earlier runs (a delivery read back from its retry topic)."""
        self.attempts = 0
        """Attempts of this run, over all of the delivery's requests."""
        self.first_at: float | None = share.first_attempt_at if share is not None else None
        self.last_at: float | None = None
        self.last: Outcome | None = None
        """The last answer to the request being sent (None before its first)."""
        self.body: str | None = None
        """The start of that answer's body, unless it was delivered."""

    @property
    def total(self) -> int:
        return self.prior + self.attempts

    def last_error(self) -> str:
        return f"; last error: {self.last.message}" if self.last is not None else ""

    def failure(self, kind: ErrorType, message: str) -> Failure:
        status = self.last.status if self.last is not None else None
        return Failure(kind, message, status, self.body, self.total, self.first_at, self.last_at)

    def failed(self, kind: ErrorType, message: str) -> DeliveryResult:
        """The delivery is dead-lettered with this failure."""
        return DeliveryResult("dead_lettered", self.failure(kind, message), attempts=self.total)


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
        first goes straight to the retry loop (`send_requests`), without a coroutine in between."""
        if share is not None and not self.policy.parks:
            share = None
        if share is None and delivery.error is None and delivery.skipped is None and delivery.requests:
            return self.send_requests(delivery.requests)
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
            return self._park(share, _Spent(share), ErrorType.PARKED_BEHIND, reason)
        return await self.send_requests(delivery.requests, share)

    def deliver_combined(self, request: Request, deliveries: int) -> Coroutine[Any, Any, DeliveryResult]:
        """Send one request that carries `deliveries` deliveries (a batch), retried as one delivery."""
        return self.send_requests((request,), None, deliveries)

    async def send_requests(
        self,
        requests: Sequence[Request],
        share: RetryShare | None = None,
        deliveries: int = 1,
        admitted: Admission | None = None,
    ) -> DeliveryResult:
        """The retry loop of one delivery's requests (or of one batch request carrying
        `deliveries`): each request is attempted until it is delivered, or `_after_failure` ends
        the delivery. An `admitted` delivery (streamproc.dispatch.dispatcher.Admission) is counted
        in flight by its admission (`deliveries` 0) and holds a concurrency slot already, which its
        first attempt uses."""
        self.in_flight += deliveries
        try:
            p = self.policy
            breaker = self.breaker
            started = self._clock()
            deadline = started + p.budget
            if share is not None and share.deadline_at is not None:
                deadline = started + (share.deadline_at - time.time())
            spent = _Spent(share)
            for request in requests:
                attempt = 0
                spent.last = spent.body = None
                while True:
                    probe: bool | None
                    if share is not None:
                        # Parking step: an open circuit parks at once instead of holding the offset.
                        allowed, probe = breaker.try_acquire()
                        if not allowed:
                            if self._clock() < deadline:
                                message = f"circuit of {p.destination} open{spent.last_error()}"
                                return self._park(share, spent, ErrorType.CIRCUIT_OPEN, message)
                            probe = None
                    elif breaker.state is CircuitState.CLOSED:
                        probe = False  # no coroutine to enter: the common case
                    else:
                        if admitted is not None and admitted.holds:
                            admitted.give_back()  # no slot held while the circuit is open
                        probe = await waited(self.waiting, breaker.acquire(deadline))
                    if probe is None:
                        return spent.failed(
                            ErrorType.CIRCUIT_OPEN,
                            f"circuit of {p.destination} open until the retry budget of {p.budget:g}s "
                            f"ended{spent.last_error()}",
                        )
                    outcome: Outcome | None = None
                    try:
                        outcome = await self._attempt(request, spent, admitted)
                    finally:
                        if outcome is None:
                            breaker.release(probe)
                    attempt += 1
                    verdict = outcome.verdict
                    if verdict is Verdict.RETRY and self.limiter.adaptive and _throttled(outcome):
                        # "Slower", not "down": the adaptive limit answers it; the circuit stays out.
                        breaker.release(probe)
                    else:
                        breaker.record(verdict is not Verdict.RETRY, probe)
                    spent.last = outcome
                    if verdict is Verdict.DELIVERED:
                        break
                    after = self._after_failure(outcome, attempt, spent, share, started, deadline)
                    if isinstance(after, DeliveryResult):
                        return after
                    self._m_retries.inc()
                    await waited(self.waiting, asyncio.sleep(after))
            total = spent.prior + spent.attempts
            if total == 1:
                return _DELIVERED_ONCE
            return DeliveryResult("delivered", attempts=total)
        finally:
            self.in_flight -= deliveries

    async def _attempt(self, request: Request, spent: _Spent, admitted: Admission | None) -> Outcome:
        """Send one request: with a concurrency slot (the one an admitted delivery holds, else one
        waited for) and a rate token; returns the partner's verdict (RETRY when no answer came)."""
        limiter = self.limiter
        if admitted is not None and admitted.holds:
            admitted.holds = False  # its slot is this attempt's now
        elif not limiter.try_acquire():
            await waited(self.waiting, limiter.acquire())
        try:
            if self._bucket is not None:
                wait = self._bucket.reserve()
                if wait > 0:
                    await waited(self.waiting, asyncio.sleep(wait))
                    self._m_rate_wait.inc(wait)
            spent.attempts += 1
            spent.last_at = time.time()
            if spent.first_at is None:
                spent.first_at = spent.last_at
            ticket = limiter.started
            clock = self._clock
            sent = clock()
            try:
                status, headers, body = await self._client.send(request, self.policy.timeout)
            except SendError as exc:
                spent.body = None
                return self._no_answer(exc, clock() - sent, ticket)
            outcome, spent.body = self._answered(status, headers, body, clock() - sent, ticket)
            return outcome
        finally:
            limiter.release()

    def _after_failure(
        self,
        outcome: Outcome,
        attempt: int,
        spent: _Spent,
        share: RetryShare | None,
        started: float,
        deadline: float,
    ) -> DeliveryResult | float:
        """After the `attempt`-th failed attempt at a request: the seconds to wait before the next,
        or how the delivery ends (dead-lettered, or parked when its in-memory share is spent)."""
        p = self.policy
        if outcome.verdict is Verdict.FAIL:
            return spent.failed(ErrorType.PERMANENT, outcome.message)
        tried = spent.prior + attempt
        if tried >= p.max_attempts:
            return spent.failed(ErrorType.RETRYABLE, f"gave up after {tried} attempts: {outcome.message}")
        delay = self._backoff(attempt, outcome.retry_after)
        now = self._clock()
        if now + delay > deadline:
            return spent.failed(
                ErrorType.RETRYABLE,
                f"retry budget of {p.budget:g}s spent after {tried} attempts: {outcome.message}",
            )
        if share is not None and (
            (p.park_after_attempts is not None and attempt >= p.park_after_attempts)
            or (p.park_after_seconds is not None and now + delay - started > p.park_after_seconds)
        ):
            # Parking step: the in-memory share is spent; the retry topic waits instead.
            return self._park(share, spent, ErrorType.RETRYABLE, outcome.message, delay)
        return delay

    def _park(
        self, share: RetryShare, spent: _Spent, kind: ErrorType, message: str, delay: float = 0.0
    ) -> DeliveryResult:
        """ "parked", due after the park wait (never before Retry-After or the backoff just drawn);
        dead-lettered instead when the budget ends before that."""
        p = self.policy
        now = time.time()
        deadline_at = share.deadline_at if share.deadline_at is not None else now + p.budget
        # Parked behind a key's earlier delivery: due at once, the retry topic's order holds it back.
        due = now if kind is ErrorType.PARKED_BEHIND else now + max(delay, p.park_wait(share.parks + 1))
        if due >= deadline_at:
            return spent.failed(
                ErrorType.RETRYABLE,
                f"retry budget of {p.budget:g}s ends before the next attempt "
                f"after {spent.total} attempts: {message}",
            )
        failure = spent.failure(kind, message)
        return DeliveryResult(
            "parked", failure, attempts=failure.attempts, next_attempt_at=due, deadline_at=deadline_at
        )
