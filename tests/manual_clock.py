"""A clock for tests that moves only when the test sets `now` (monotonic seconds)."""

from __future__ import annotations


class ManualClock:
    """Callable like `time.monotonic`; returns `now` until the test changes it."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
