"""Sending deliveries to partners: one bulkhead per destination instance, with its limits, retries,
circuit breaker and per-key order.

    policy.py      what dispatch is given: a delivery, its destination's limits, a retry share
    limits.py      token bucket (rate) and concurrency limit (fixed, or learned by AIMD)
    breaker.py     circuit breaker
    ordering.py    key sequencer: one delivery of a key at a time, in the order taken in
    bulkhead.py    one destination: one attempt, the retry loop, parking, the failure
    dispatcher.py  every destination: per-key order, admission of deliveries without a task

The worker lets deliveries in through `Dispatcher.admit`: a delivery waiting for its key's turn or
a concurrency slot is a callback in a queue (an `Admission`), and gets its task only once it may
send, so a backlog of thousands of deliveries costs no tasks, coroutines or futures while it waits.

A delivery task that waits rather than sends (a retry backoff, a concurrency slot, a rate token,
an open circuit, its key's turn) is in `Dispatcher.waiting` meanwhile: a partition being released
cancels those at once (they stay unfinished, for the partition's next owner) and awaits only the
ones on the wire. Only the slow paths pay for that bookkeeping.
"""

from streamproc.dispatch.breaker import CircuitBreaker, CircuitState
from streamproc.dispatch.bulkhead import Bulkhead
from streamproc.dispatch.dispatcher import Admission, Dispatcher
from streamproc.dispatch.limits import ConcurrencyLimit, TokenBucket
from streamproc.dispatch.ordering import KeySequencer
from streamproc.dispatch.policy import BulkheadPolicy, DeliveryLike, RetryShare

__all__ = [
    "Admission",
    "Bulkhead",
    "BulkheadPolicy",
    "CircuitBreaker",
    "CircuitState",
    "ConcurrencyLimit",
    "DeliveryLike",
    "Dispatcher",
    "KeySequencer",
    "RetryShare",
    "TokenBucket",
]
