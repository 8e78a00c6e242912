"""What the pipeline and delivery hand each other: a delivery's result, its failure, and where a
message being delivered again came from.

Both sides import this module and nothing of each other: the pipeline (streamproc.pipeline) acts
on a `DeliveryResult`, dispatch (streamproc.dispatch) and parking make one, and the record formats
(streamproc.kafka.dlq) read a dead letter or a retry record back into a `Redelivery`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from streamproc.errors import ErrorType

__all__ = ["DeliveryResult", "Failure", "Origin", "ParkedRecord", "Redelivery"]


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
class Origin:
    """Where a message was first consumed, as its dead letters name it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    headers: Sequence[tuple[str, bytes | None]]
    unreadable_headers: int = 0
    """Headers of the message that could not be read (names that are not UTF-8) and are not kept."""


@dataclass(frozen=True, slots=True)
class ParkedRecord:
    """What a retry record carries into its next delivery: the spent share, and who parked it."""

    attempts: int
    first_attempt_at: float | None
    deadline_at: float | None
    parks: int
    parked_by: str | None
    original_offset: int
    retry_offset: int
    reason: str | None


@dataclass(frozen=True, slots=True)
class Redelivery:
    """A dead letter being delivered again: the one subscription it names, and the history that a
    new dead letter of it carries on (first origin, first attempt, attempts so far)."""

    destination: str
    subscription: str
    origin: Origin
    attempts: int = 0
    first_attempt_at: float | None = None
    on_routed: Callable[[], None] | None = None
    """Called when routing finds the delivery again (redrive then owes the record a marker)."""
    parked: ParkedRecord | None = None
    """A retry record read back: the attempts and budget it has spent, and who parked it."""
