"""A destination's circuit breaker: stops sending to a partner that keeps failing, then probes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from enum import IntEnum

__all__ = ["CircuitBreaker", "CircuitState"]


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
