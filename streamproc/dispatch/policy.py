"""What dispatch is given: a delivery (`DeliveryLike`), the limits of its destination
(`BulkheadPolicy`) and, for a delivery that may park, what earlier runs spent (`RetryShare`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from streamproc.destinations.base import Request
from streamproc.errors import DeliveryError

__all__ = ["BulkheadPolicy", "DeliveryLike", "RetryShare"]


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
