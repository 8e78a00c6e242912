"""The limits of one destination's requests: a token bucket for the rate, and a concurrency limit,
fixed or learned by AIMD."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

__all__ = ["ConcurrencyLimit", "TokenBucket"]


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

    def try_acquire(self, *, first: bool = False) -> bool:
        """Take a slot if one is free and nobody waits (no await: the common case); `first`: even
        if some wait."""
        if self.in_use < self.limit and (first or not self._waiters):
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
        if self.try_acquire(first=first):
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
