"""The worker's side of parking: sends the deliveries of destinations that park, writes the retry
records of those that park, and keeps the per-key order of `ordering: key` destinations.

The `EventProcessor` (streamproc.pipeline) calls `Parking.deliver` for a delivery of such a
destination, live or read back from its retry topic (a `Redelivery` whose `parked` is set, made by
`Parking.redelivery`), and `Parking.settled` with the outcome of a read-back one. A parked delivery
is written (idempotent, acks=all, as dead letters) at its turn in the dispatcher, before the same
key's next delivery may go, and its event's offset is finished only after that. A read-back record
is routed again with exactly the subscription it names, sent with the attempts and budget it
carries, and then delivered, parked again at the end of its retry partition, or dead-lettered with
its original topic/partition/offset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from streamproc.core.events import ordering_key
from streamproc.dispatch import Dispatcher, RetryShare
from streamproc.errors import ErrorType
from streamproc.handoff import DeliveryResult, Failure, Redelivery
from streamproc.kafka.dlq import DeadLetter, RetryView
from streamproc.kafka.producer import DeadLetterProducer
from streamproc.kafka.retry import KeyRef, ParkedKeys
from streamproc.metrics import Metrics
from streamproc.router import Delivery

__all__ = ["Parking"]

log = structlog.get_logger("streamproc.parking")

BEHIND = "parked behind an earlier parked delivery of the same key"

LetterFn = Callable[[Failure], DeadLetter]
"""The dead letter of the delivery for a failure (what a retry record is made from)."""


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
        self.producer: DeadLetterProducer | None = None
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

    def redelivery(self, msg: Any) -> Redelivery | None:
        """What a retry record asks for; None when it names no delivery."""
        view = RetryView.of(msg)
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

    # -- delivering --------------------------------------------------------------------------------
    async def deliver(
        self, partition: int, delivery: Delivery, redelivery: Redelivery | None, letter: LetterFn
    ) -> DeliveryResult:
        """Dispatch a delivery that may park; a parked one is written before this returns.

        `partition`: the input partition it was consumed from (the retry partition it parks to)."""
        parked = redelivery.parked if redelivery is not None else None
        ref = self._ref(delivery, partition)
        keys = self.keys
        if parked is None:
            share = RetryShare()

            def behind() -> RetryShare | None:
                if ref is not None and keys.holds(ref):
                    return RetryShare(park_now=True, reason=BEHIND)
                return None

        else:
            share = RetryShare(
                attempts=parked.attempts,
                first_attempt_at=parked.first_attempt_at,
                deadline_at=parked.deadline_at,
                parks=parked.parks,
                reason=parked.reason,
            )
            retry_share = share

            def behind() -> RetryShare | None:
                if ref is not None and keys.must_follow(ref, parked.retry_offset, parked.original_offset):
                    return dataclasses.replace(retry_share, park_now=True, reason=BEHIND)
                return None

        too_large: list[Failure] = []

        async def write(result: DeliveryResult) -> None:
            assert result.failure is not None
            record = letter(result.failure)
            try:
                if not await self._write(record, delivery, result, partition, ref, parked):
                    too_large.append(result.failure)
            except BaseException:
                # Not written, not delivered: the key's later deliveries must not overtake it.
                if ref is not None and parked is None:
                    keys.parked(ref, True, record.offset, -1, False)
                raise

        result = await self.dispatcher.deliver(delivery, share, behind=behind, on_parked=write)
        if too_large:
            # A retry record cut to fit its topic could never be delivered: dead-letter it now.
            return DeliveryResult("dead_lettered", too_large[0])
        return result

    async def _write(
        self,
        letter: DeadLetter,
        delivery: Delivery,
        result: DeliveryResult,
        partition: int,
        ref: KeyRef | None,
        parked: Any,
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
    def settled(self, partition: int, delivery: Delivery, redelivery: Redelivery, outcome: str) -> None:
        """A read-back delivery ended: delivered, skipped, parked again or dead-lettered."""
        parked = redelivery.parked
        assert parked is not None
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
