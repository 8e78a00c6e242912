"""The senders of runs that do not park: direct (through the dispatcher, at once) and admitted
(let in without a task while the delivery waits for its key's turn and a concurrency slot).

`senders_for` picks one per destination when a run is built: admitted for a destination whose
deliveries have no batch, direct for one that batches (its key order is kept by the dispatcher).
The worker's destinations that park get a `streamproc.parking.ParkingSender` instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any, Protocol

from streamproc.dispatch import Admission, Dispatcher
from streamproc.handoff import Job, Lane, Redelivery, Sender
from streamproc.router import Delivery

__all__ = ["AdmittedSender", "DirectSender", "MarkingSender", "Marks", "marking", "senders_for"]


class DirectSender:
    """Hands each delivery to the dispatcher at once: its task awaits the dispatcher's coroutine."""

    __slots__ = ("_dispatcher",)

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    def send(self, delivery: Delivery, job: Job) -> None:
        job.start(delivery, self._dispatcher.deliver(delivery))

    def unrouted(self, redelivery: Redelivery, lane: Lane, event: Mapping[str, Any]) -> None:
        pass


class AdmittedSender:
    """Lets each delivery in through `Dispatcher.admit`: it waits for its key's turn and a slot as
    an `Admission`, and gets its task only then (none at all if its partition is released first).
    A delivery with an error takes no turn and goes to the dispatcher at once."""

    __slots__ = ("_dispatcher",)

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    def send(self, delivery: Delivery, job: Job) -> None:
        dispatcher = self._dispatcher
        if not dispatcher.admit(delivery, partial(_admitted, job, delivery)):
            job.start(delivery, dispatcher.deliver(delivery))

    def unrouted(self, redelivery: Redelivery, lane: Lane, event: Mapping[str, Any]) -> None:
        pass


def _admitted(job: Job, delivery: Delivery, admission: Admission) -> bool:
    """Start an admitted delivery's task (False: its partition was released, it is given up)."""
    if job.lane.released:
        return False
    job.start(delivery, admission.send()).add_done_callback(admission.finish)
    return True


def senders_for(dispatcher: Dispatcher, destinations: Iterable[str]) -> dict[str, Sender]:
    """A sender for each destination: admitted unless its deliveries have a batch (a destination's
    deliveries all go one way, since its key order is fixed by either)."""
    direct, admitted = DirectSender(dispatcher), AdmittedSender(dispatcher)
    return {d: admitted if dispatcher.admits(d) else direct for d in destinations}


class Marks(Protocol):
    """Where a record whose delivery was made is noted (redrive's markers)."""

    def note(self, partition: int, offset: int) -> None: ...


class MarkingSender:
    """Notes the record each delivery is made from, then sends it as `inner` does (redrive: the
    dead letter whose delivery routing found again owes a marker)."""

    __slots__ = ("_inner", "_marks")

    def __init__(self, inner: Sender, marks: Marks) -> None:
        self._inner = inner
        self._marks = marks

    def send(self, delivery: Delivery, job: Job) -> None:
        self._marks.note(job.lane.partition, job.offset)
        self._inner.send(delivery, job)

    def unrouted(self, redelivery: Redelivery, lane: Lane, event: Mapping[str, Any]) -> None:
        self._inner.unrouted(redelivery, lane, event)


def marking(senders: Mapping[str, Sender], marks: Marks) -> dict[str, Sender]:
    """`senders`, each noting the markers its deliveries owe."""
    return {dest: MarkingSender(sender, marks) for dest, sender in senders.items()}
