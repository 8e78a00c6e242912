"""The dispatcher: each delivery to its destination's bulkhead, in per-key order where asked, and
the admission of deliveries that wait without a task."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from functools import partial
from typing import Any, TypeVar

from streamproc.batching import Batcher
from streamproc.dispatch.bulkhead import Bulkhead, waited
from streamproc.dispatch.ordering import KeySequencer, Turn
from streamproc.dispatch.policy import DeliveryLike, RetryShare
from streamproc.handoff import DeliveryResult

__all__ = ["Admission", "Dispatcher"]

T = TypeVar("T")


class Admission:
    """A delivery let in without a task while it waits: it takes its key's turn (ordered
    destinations) and then a concurrency slot, and only then is `start(admission)` called, which
    runs `send()` in a task and makes `finish` that task's done callback. A backlog of thousands of
    deliveries then waits as these small objects instead of as tasks, coroutines and futures.

    `start` returns False when the delivery is no longer wanted (its partition was released):
    it is given up, and what it holds (its turn, its slot) goes on to the next in line."""

    __slots__ = ("_bulkhead", "_key", "_open", "_sequencer", "_start", "_turn", "delivery", "holds")

    def __init__(
        self,
        bulkhead: Bulkhead,
        delivery: DeliveryLike,
        start: Callable[[Admission], bool],
        sequencer: KeySequencer,
    ) -> None:
        self._bulkhead = bulkhead
        self.delivery = delivery
        self._start = start
        self._sequencer = sequencer
        self._key: Any = None
        self._turn: Turn | None = None
        self.holds = False
        """Whether it holds a concurrency slot not yet used by an attempt."""
        self._open = True
        bulkhead.in_flight += 1

    def send(self) -> Coroutine[Any, Any, DeliveryResult]:
        """The delivery's sending loop (its first attempt uses the slot held)."""
        delivery = self.delivery
        if delivery.requests and delivery.skipped is None:
            return self._bulkhead.send_requests(delivery.requests, None, 0, self)
        return self._bulkhead.deliver(delivery)  # skipped: it only had to wait for its turn

    def give_back(self) -> None:
        """Release the slot held without using it."""
        if self.holds:
            self.holds = False
            self._bulkhead.limiter.release()

    def finish(self, _task: object = None) -> None:
        """The delivery is over (or given up): give back its slot if unused, let its key's next go."""
        if not self._open:
            return
        self._open = False
        self.give_back()
        self._bulkhead.in_flight -= 1
        if self._turn is not None:
            turn, self._turn = self._turn, None
            self._sequencer.done(self._key, turn)

    def take_turn(self, key: Any) -> None:
        """Join `key`'s queue now (the order is fixed here), and queue for a slot once it is first."""
        prev, self._turn = self._sequencer.turn(key)
        self._key = key
        if prev is None or prev.finished:
            self.queue()
        else:
            KeySequencer.then(prev, self._turn_came)

    def queue(self, first: bool = False) -> None:
        """Wait for a concurrency slot (a delivery with nothing to send starts without one);
        `first`: ahead of those waiting for one."""
        if self.delivery.requests and self.delivery.skipped is None:
            self._bulkhead.limiter.when_free(self._started, first=first)
        elif not self._start(self):
            self.finish()

    def _turn_came(self) -> None:
        # Its predecessor of the same key is done: it goes ahead of the deliveries waiting for a
        # slot, which were mostly let in after it. At the back of the line it would wait for all
        # of them, its event holding its partition's watermark (and the in-flight window) that
        # long: on a backlog the window would stay full until the work ran out.
        self.queue(first=True)

    def _started(self) -> bool:
        self.holds = True
        if self._start(self):
            return True
        self.holds = False  # the limiter takes the slot back
        self.finish()
        return False


class Dispatcher:
    """Routes each delivery to its destination's bulkhead, keeping per-key order where asked."""

    def __init__(
        self, bulkheads: Iterable[Bulkhead], batchers: Mapping[tuple[str, str], Batcher] | None = None
    ) -> None:
        self.bulkheads: dict[str, Bulkhead] = {b.policy.destination: b for b in bulkheads}
        self.waiting: set[asyncio.Task[Any]] = set()
        """Tasks of deliveries that wait rather than send: a retry backoff, a concurrency slot, a
        rate token, an open circuit, their key's turn. Cancelling one loses nothing it has sent."""
        for bulkhead in self.bulkheads.values():
            bulkhead.waiting = self.waiting
        self._sequencer = KeySequencer()
        self._batchers: Mapping[tuple[str, str], Batcher] = batchers or {}
        """(destination, subscription) -> the batcher its deliveries go through, when batching is on."""
        self._batched = frozenset(d for d, _ in self._batchers)

    def not_before(self, destination: str) -> float:
        """Unix time before which a delivery to `destination` would only meet its open circuit
        (0 when it may go now): the retry consumer leaves parked records in the topic till then."""
        wait = self.bulkheads[destination].breaker.closed_for()
        return time.time() + wait if wait > 0 else 0.0

    @property
    def keys_waiting(self) -> int:
        return len(self._sequencer)

    def admits(self, destination: str) -> bool:
        """Whether `admit` takes the deliveries of `destination`: every one that has no batch.
        Take all of a destination's deliveries one way (its key order is fixed by either)."""
        return destination not in self._batched

    def admit(self, delivery: DeliveryLike, start: Callable[[Admission], bool]) -> bool:
        """Let a delivery in without a task while it waits (see `Admission`): `start` is called
        once it has its key's turn and a slot. For a destination that `admits`, with deliveries
        that never park; False (nothing done) for a delivery with an error, which takes no turn
        and goes straight to `deliver`."""
        if delivery.error is not None:
            return False
        bulkhead = self.bulkheads[delivery.destination]
        admission = Admission(bulkhead, delivery, start, self._sequencer)
        key = delivery.ordering_key
        if bulkhead.policy.ordered and key is not None:
            admission.take_turn((delivery.destination, key))
        else:
            admission.queue()
        return True

    def deliver(self, delivery: DeliveryLike) -> Awaitable[DeliveryResult]:
        """Send one delivery, in its key's order for an ordered destination: the coroutine to
        await. Per-key order is fixed when that coroutine starts, so start them in offset order
        (the first await comes after the delivery has taken its place)."""
        bulkhead = self.bulkheads[delivery.destination]
        if bulkhead.policy.ordered and delivery.ordering_key is not None and delivery.error is None:
            return self.in_turn((delivery.destination, delivery.ordering_key), partial(self.send, delivery))
        # The common case: the bulkhead's own coroutine, nothing wrapped around it.
        return self.send(delivery)

    def send(self, delivery: DeliveryLike, share: RetryShare | None = None) -> Awaitable[DeliveryResult]:
        """Send one delivery now, without waiting for its key's turn: with its batch when its
        subscription batches (a batched delivery never parks), else through its bulkhead (which
        may park it, given a `share`)."""
        if self._batchers:
            batcher = self._batchers.get((delivery.destination, delivery.subscription))
            if batcher is not None:
                return batcher.deliver(delivery)
        return self.bulkheads[delivery.destination].deliver(delivery, share)

    def batches(self, delivery: DeliveryLike) -> bool:
        """Whether the delivery goes out with a batch (and so never parks)."""
        return (delivery.destination, delivery.subscription) in self._batchers

    async def in_turn(self, key: Any, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work` at `key`'s turn: after the work of every earlier turn of the key has ended,
        and before any later one starts. The turn is taken when this coroutine starts."""
        prev, mine = self._sequencer.turn(key)
        try:
            if prev is not None and not prev.finished:
                await waited(self.waiting, self._sequencer.wait(prev))
            return await work()
        finally:
            self._sequencer.done(key, mine)

    def flush(self) -> None:
        """Send every open batch now, without waiting for its `max_wait_ms` (revoke and shutdown drains)."""
        for batcher in set(self._batchers.values()):
            batcher.flush()

    async def close(self) -> None:
        for batcher in set(self._batchers.values()):
            await batcher.close()
        for bulkhead in self.bulkheads.values():
            await bulkhead.close()
