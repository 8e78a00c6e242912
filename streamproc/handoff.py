"""The seam between the pipeline and delivery: what each side hands the other.

The pipeline (streamproc.pipeline) hands each delivery of a message to the `Sender` of its
destination, chosen when the run is built (streamproc.senders: direct, admitted; streamproc.parking:
parking), with the `Job` it belongs to. The sender gives one awaitable `DeliveryResult` back
through `Job.start`, at once or once the delivery may go; the pipeline awaits it in the job's
task and acts on it. Both sides import this module and nothing of each other; the record formats
(streamproc.kafka.dlq) read a dead letter or a retry record back into a `Redelivery`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from streamproc.errors import ErrorType

if TYPE_CHECKING:
    from streamproc.kafka.dlq import DeadLetter
    from streamproc.kafka.offsets import OffsetTracker
    from streamproc.router import Delivery

__all__ = ["DeliveryResult", "Failure", "Job", "Lane", "Origin", "ParkedRecord", "Redelivery", "Sender"]


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
    parked: ParkedRecord | None = None
    """A retry record read back: the share it has spent and who parked it (read by parking)."""


class Lane(Protocol):
    """Where a message was read: its topic and partition, the set holding the tasks of its
    deliveries (drained on revoke and at the end), and its offsets' tracker, which also keeps the
    deliveries of an unfinished event that are finished (and those its partition's last owner
    finished: they are not sent again). The consumer loop's `Partition` is one.

    A delivery waiting for its turn or a concurrency slot has no task yet (`dispatch.Admission`);
    once `released` is true, such a delivery is given up instead of started."""

    topic: str
    partition: int
    tasks: set[asyncio.Task[Any]]
    tracker: OffsetTracker

    @property
    def released(self) -> bool: ...


class Job(Protocol):
    """One consumed message with deliveries to make, as a sender sees it."""

    @property
    def lane(self) -> Lane: ...
    @property
    def offset(self) -> int: ...
    @property
    def redelivery(self) -> Redelivery | None: ...

    def letter(self, delivery: Delivery, failure: Failure) -> DeadLetter:
        """The dead letter of `delivery` failing so (what a retry record is made from)."""
        ...

    def start(self, delivery: Delivery, sent: Awaitable[DeliveryResult]) -> asyncio.Task[None]:
        """Start the task that awaits the delivery's result and acts on it (called once per
        delivery: at once, or when it may go; never for one given up since `lane.released`)."""
        ...


class Sender(Protocol):
    """How the deliveries of one destination are sent (one per destination, chosen when a run is
    built): it calls `job.start(delivery, result)` once, with the awaitable result."""

    def send(self, delivery: Delivery, job: Job) -> None: ...

    def unrouted(self, redelivery: Redelivery, lane: Lane, event: Mapping[str, Any]) -> None:
        """A delivery read back (a dead letter, a retry record) that routing no longer makes."""
        ...
