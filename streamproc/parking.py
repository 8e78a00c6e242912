"""Parking: the sender of the worker's destinations that park, writing the retry records of the
deliveries that park and keeping the per-key order of `ordering: key` destinations.

A `ParkingSender` sends a delivery of such a destination, live or read back from its retry topic
(a `Redelivery` whose `parked` is set, made by `Parking.redelivery`). A delivery that parks has its
retry record written (idempotent, acks=all, as dead letters) at its key's turn, before the same
key's next delivery may go, and its result (so its event's offset) is handed back only after that.
A read-back record is routed again with exactly the subscription it names, sent with the attempts
and budget it carries, and then delivered, parked again at the end of its retry partition, or
dead-lettered with its original topic/partition/offset; its outcome is counted here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Mapping
from functools import partial
from typing import Any

import structlog

from streamproc.core.events import ordering_key
from streamproc.dispatch import Dispatcher, RetryShare
from streamproc.errors import ErrorType
from streamproc.handoff import DeliveryResult, Job, Lane, ParkedRecord, Redelivery
from streamproc.kafka.dlq import DeadLetter, RetryView
from streamproc.kafka.producer import AckedProducer
from streamproc.metrics import Metrics
from streamproc.router import Delivery

__all__ = ["KeyRef", "ParkedKeys", "Parking", "ParkingSender"]

log = structlog.get_logger("streamproc.parking")

BEHIND = "parked behind an earlier parked delivery of the same key"


KeyRef = tuple[str, int, str]
"""(destination, partition, ordering key)."""


class ParkedKeys:
    """Which keys of `ordering: key` destinations have deliveries parked in the retry topic.

    A live delivery of such a key parks behind them, so a key's deliveries reach the partner in
    offset order. The counts cover the records this worker run wrote (`parked_by == run_id`) and
    the ones it adopted by parking them again; records left by an earlier owner of a partition are
    covered by a barrier instead: from the assignment of input partition p until the retry
    consumer has passed the end its retry partition had then, every delivery of that destination
    from p parks behind. Memory: one entry per key with parked deliveries, per destination.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._count: dict[KeyRef, int] = {}
        self._moved: dict[KeyRef, tuple[int, int]] = {}
        """key -> (latest original offset parked again, the retry offset it went to)."""
        self._barrier: dict[tuple[str, int], int | None] = {}
        """(destination, partition) -> retry end offset to pass (None: not known yet)."""

    def __len__(self) -> int:
        return len(self._count)

    def holds(self, ref: KeyRef) -> bool:
        """Whether a live delivery of this key must park behind earlier ones."""
        return (ref[0], ref[1]) in self._barrier or ref in self._count

    def must_follow(self, ref: KeyRef, retry_offset: int, original_offset: int) -> bool:
        """Whether a retry record must park again because an earlier delivery of its key was parked
        again to a later position (it must stay behind that one)."""
        moved = self._moved.get(ref)
        return moved is not None and moved[1] > retry_offset and moved[0] < original_offset

    def parked(self, ref: KeyRef, new: bool, original_offset: int, retry_offset: int, again: bool) -> None:
        """A record for `ref` was written at `retry_offset`; `new`: not counted yet."""
        if new:
            self._count[ref] = self._count.get(ref, 0) + 1
        if again:
            self._moved[ref] = (original_offset, retry_offset)

    def finished(self, ref: KeyRef, parked_by: str | None) -> None:
        """A retry record for `ref` was delivered or dead-lettered."""
        if parked_by != self.run_id:
            return
        left = self._count.get(ref, 0) - 1
        if left > 0:
            self._count[ref] = left
        else:
            self._count.pop(ref, None)
            self._moved.pop(ref, None)

    def block(self, destination: str, partition: int) -> None:
        """Input partition newly assigned: park its ordered keys until `barrier` says how far."""
        self._barrier[(destination, partition)] = None

    def pending(self) -> list[tuple[str, int]]:
        """Blocked partitions whose barrier is not known yet."""
        return [k for k, end in self._barrier.items() if end is None]

    def barrier(self, destination: str, partition: int, end: int, position: int) -> None:
        """The retry partition held `end` records at assignment, of which `position` are done."""
        if position >= end:
            self._barrier.pop((destination, partition), None)
        else:
            self._barrier[(destination, partition)] = end

    def passed(self, destination: str, partition: int, watermark: int) -> None:
        end = self._barrier.get((destination, partition), -1)
        if end is not None and 0 <= end <= watermark:
            del self._barrier[(destination, partition)]

    def drop(self, partition: int) -> None:
        """Forget a partition this worker no longer owns."""
        for table in (self._count, self._moved):
            for ref in [r for r in table if r[1] == partition]:
                del table[ref]
        for key in [k for k in self._barrier if k[1] == partition]:
            del self._barrier[key]


class Parking:
    """Retry records for the destinations that park, with the per-key order of ordered ones."""

    def __init__(
        self,
        topics: Mapping[str, str],
        ordered: frozenset[str],
        *,
        dispatcher: Dispatcher,
        metrics: Metrics,
        run_id: str,
    ) -> None:
        self.topics = dict(topics)
        self.ordered = ordered
        self.dispatcher = dispatcher
        self.keys = ParkedKeys(run_id)
        self.run_id = run_id
        self.producer: AckedProducer | None = None
        """Set before the first message (the worker creates it once the topics are checked)."""
        self._m = metrics
        self._m_parked: dict[tuple[str, str], Any] = {}
        self._m_outcome: dict[tuple[str, str], Any] = {}

    def parks(self, destination: str) -> bool:
        return destination in self.topics

    def _ref(self, delivery: Delivery, partition: int) -> KeyRef | None:
        key = delivery.ordering_key
        if key is None or delivery.destination not in self.ordered:
            return None
        return delivery.destination, partition, key

    def redelivery(self, view: RetryView) -> Redelivery | None:
        """What a retry record asks for; None when it names no delivery."""
        dest, sub = view.destination, view.subscription
        if not dest or not sub:
            return None
        parked = view.parked()
        # Attempts stay in `parked` (dispatch adds them up); the first attempt is the delivery's.
        return Redelivery(dest, sub, view.letter.origin(), 0, parked.first_attempt_at, parked=parked)

    def assigned(self, partitions: list[int]) -> None:
        """Input partitions newly owned: their ordered keys park behind what earlier owners left."""
        for dest in self.ordered:
            for p in partitions:
                self.keys.block(dest, p)

    def sender(self) -> ParkingSender:
        """The sender of the destinations that park (the same one for the live and the retry lane)."""
        return ParkingSender(self)

    # -- delivering --------------------------------------------------------------------------------
    async def deliver(self, delivery: Delivery, job: Job) -> DeliveryResult:
        """Dispatch a delivery that may park; a parked one is written before this returns, and a
        read-back one's outcome is counted (and its key's bookkeeping updated).

        The job's input partition is the retry partition it parks to."""
        redelivery = job.redelivery
        parked = redelivery.parked if redelivery is not None else None
        partition = job.lane.partition
        ref = self._ref(delivery, partition)
        share = RetryShare() if parked is None else _share_of(parked)
        dispatcher = self.dispatcher
        if ref is not None and delivery.error is None:
            # At the key's turn: whether it must park behind, and its retry record, both in order.
            result = await dispatcher.in_turn(
                (delivery.destination, ref[2]),
                partial(self._in_turn, delivery, job, share, ref, parked),
            )
        else:
            result = await self._park_if_asked(delivery, job, dispatcher.send(delivery, share), None, parked)
        if parked is not None:
            self._settled(partition, delivery, parked, result.outcome)
        return result

    async def _in_turn(
        self, delivery: Delivery, job: Job, share: RetryShare, ref: KeyRef, parked: ParkedRecord | None
    ) -> DeliveryResult:
        if not self.dispatcher.batches(delivery):
            keys = self.keys
            if parked is None:
                if keys.holds(ref):
                    share = RetryShare(park_now=True, reason=BEHIND)
            elif keys.must_follow(ref, parked.retry_offset, parked.original_offset):
                share = dataclasses.replace(share, park_now=True, reason=BEHIND)
        return await self._park_if_asked(delivery, job, self.dispatcher.send(delivery, share), ref, parked)

    async def _park_if_asked(
        self,
        delivery: Delivery,
        job: Job,
        sent: Awaitable[DeliveryResult],
        ref: KeyRef | None,
        parked: ParkedRecord | None,
    ) -> DeliveryResult:
        """The result of `sent`; a "parked" one once its retry record is acknowledged, or
        dead-lettered when the record would not fit its retry topic (it could never be delivered)."""
        result = await sent
        if result.outcome != "parked":
            return result
        failure = result.failure
        assert failure is not None
        record = job.letter(delivery, failure)
        try:
            written = await self._write(record, delivery, result, job.lane.partition, ref, parked)
        except BaseException:
            # Not written, not delivered: the key's later deliveries must not overtake it.
            if ref is not None and parked is None:
                self.keys.parked(ref, True, record.offset, -1, False)
            raise
        return result if written else DeliveryResult("dead_lettered", failure)

    async def _write(
        self,
        letter: DeadLetter,
        delivery: Delivery,
        result: DeliveryResult,
        partition: int,
        ref: KeyRef | None,
        parked: ParkedRecord | None,
    ) -> bool:
        """Write the retry record; False (nothing written) when it does not fit the retry topic."""
        failure = result.failure
        assert failure is not None and self.producer is not None
        parks = parked.parks if parked is not None else 0
        record = dataclasses.replace(
            letter,
            attempts=failure.attempts,
            next_attempt_at=result.next_attempt_at,
            deadline_at=result.deadline_at,
            parks=parks + (0 if failure.type is ErrorType.PARKED_BEHIND else 1),
            parked_by=self.run_id,
        )
        topic = self.topics[delivery.destination]
        if not self.producer.fits(record):
            log.warning(
                "parking_too_large",
                destination=delivery.destination,
                topic=topic,
                partition=partition,
                offset=letter.offset,
                max_record_bytes=self.producer.max_record_bytes,
            )
            return False
        written = await self.producer.send(record, topic=topic, partition=partition)
        if ref is not None:
            new = parked is None or parked.parked_by != self.run_id
            self.keys.parked(ref, new, letter.offset, written, again=parked is not None)
        key = (delivery.destination, failure.type)
        counter = self._m_parked.get(key)
        if counter is None:
            counter = self._m_parked[key] = self._m.parked.labels(*key)
        counter.inc()
        return True

    # -- outcomes of records read back ------------------------------------------------------------
    def _settled(self, partition: int, delivery: Delivery, parked: ParkedRecord, outcome: str) -> None:
        """A read-back delivery ended: delivered, skipped, parked again or dead-lettered."""
        if outcome == "parked":
            self._outcome(delivery.destination, "parked_again")
            return
        self._outcome(delivery.destination, outcome)
        ref = self._ref(delivery, partition)
        if ref is not None:
            self.keys.finished(ref, parked.parked_by)

    def unmatched(self, redelivery: Redelivery, partition: int, event: Mapping[str, Any]) -> None:
        """A read-back record whose subscription no longer matches its event: nothing to send."""
        dest = redelivery.destination
        self._outcome(dest, "unmatched")
        key = ordering_key(event)
        if dest in self.ordered and key is not None and redelivery.parked is not None:
            self.keys.finished((dest, partition, key), redelivery.parked.parked_by)

    def _outcome(self, destination: str, outcome: str) -> None:
        key = (destination, outcome)
        counter = self._m_outcome.get(key)
        if counter is None:
            counter = self._m_outcome[key] = self._m.retry_outcomes.labels(*key)
        counter.inc()


def _share_of(parked: ParkedRecord) -> RetryShare:
    """What a retry record read back has spent: attempts, budget, parks, and why it parked."""
    return RetryShare(
        attempts=parked.attempts,
        first_attempt_at=parked.first_attempt_at,
        deadline_at=parked.deadline_at,
        parks=parked.parks,
        reason=parked.reason,
    )


class ParkingSender:
    """The sender of a destination that parks: each delivery's task awaits `Parking.deliver`."""

    __slots__ = ("_parking",)

    def __init__(self, parking: Parking) -> None:
        self._parking = parking

    def send(self, delivery: Delivery, job: Job) -> None:
        job.start(delivery, self._parking.deliver(delivery, job))

    def unrouted(self, redelivery: Redelivery, lane: Lane, event: Mapping[str, Any]) -> None:
        if redelivery.parked is not None:
            self._parking.unmatched(redelivery, redelivery.origin.partition, event)
