"""Groups single-event deliveries into batch requests for partners that take several events at once.

A `Batcher` serves one destination instance, one action and one batch configuration. Each
delivery it is given waits in the open batch of its group (the action's `Batching.key`: for
TikTok the access token, event set and event source) until the batch is full (`max_events`, or
`max_bytes` of combined body), or `max_wait_ms` after the batch opened, or `flush()`. The batch
then goes out as one request through the destination's bulkhead (concurrency, rate, retries,
breaker), and every delivery in it gets the batch's outcome: delivered together, or each
dead-lettered with the same failure once the batch's retries are spent. A delivery the action says
must go alone (a TikTok test event), or one too big for a batch, is sent as it is.

Each delivery still awaits its own result, so an event's offset is complete only when every
batch holding one of its deliveries has finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from streamproc.destinations.base import Batching, Request
from streamproc.metrics import Metrics

if TYPE_CHECKING:  # types only: a batch goes out through its destination's bulkhead
    from streamproc.dispatch import Bulkhead, DeliveryLike
    from streamproc.handoff import DeliveryResult

__all__ = ["BatchOptions", "Batcher", "batchers_for"]


class BatchOptions:
    """The limits of one batcher (from a subscription's `batch` configuration)."""

    __slots__ = ("max_bytes", "max_events", "max_wait")

    def __init__(self, max_events: int, max_bytes: int, max_wait_ms: float) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_wait = max_wait_ms / 1000.0

    @classmethod
    def from_config(cls, config: Any) -> BatchOptions:
        """From a `config.BatchConfig` (max_events, max_bytes, max_wait_ms)."""
        return cls(config.max_events, config.max_bytes, config.max_wait_ms)


class _OpenBatch:
    __slots__ = ("requests", "size", "timer", "waiters")

    def __init__(self, size: int) -> None:
        self.requests: list[Request] = []
        self.waiters: list[asyncio.Future[DeliveryResult]] = []
        self.size = size
        self.timer: asyncio.TimerHandle | None = None


class Batcher:
    """Open batches of one destination action, by group key, sent through that destination's bulkhead."""

    def __init__(
        self,
        bulkhead: Bulkhead,
        batching: Batching,
        options: BatchOptions,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self._bulkhead = bulkhead
        bulkhead.batchers.append(self)
        self._key = batching.key
        self._combine = batching.combine
        self._max_events = max(1, min(options.max_events, batching.max_events))
        self._max_bytes = options.max_bytes
        self._max_wait = options.max_wait
        self._open: dict[Hashable, _OpenBatch] = {}
        self._sending: set[asyncio.Task[None]] = set()
        m = metrics if metrics is not None else Metrics()
        self._m_events = m.batch_events.labels(bulkhead.policy.destination)

    @property
    def waiting(self) -> int:
        """Deliveries in batches not sent yet."""
        return sum(len(b.requests) for b in self._open.values())

    async def deliver(self, delivery: DeliveryLike) -> DeliveryResult:
        """The delivery's outcome, sent in a batch with others of its group when it can be."""
        requests = delivery.requests
        if delivery.error is not None or delivery.skipped is not None or len(requests) != 1:
            return await self._bulkhead.deliver(delivery)
        request = requests[0]
        found = self._key(request)
        size = len(request.body or b"")
        if found is None or size > self._max_bytes:
            return await self._bulkhead.deliver(delivery)
        key, added = found
        batch = self._open.get(key)
        if batch is not None and batch.size + added > self._max_bytes:
            self._flush(key, batch)
            batch = None
        loop = asyncio.get_running_loop()
        if batch is None:
            batch = self._open[key] = _OpenBatch(size)
            batch.timer = loop.call_later(self._max_wait, self._flush, key, batch)
        else:
            batch.size += added
        waiter: asyncio.Future[DeliveryResult] = loop.create_future()
        batch.requests.append(request)
        batch.waiters.append(waiter)
        if len(batch.requests) >= self._max_events or batch.size >= self._max_bytes:
            self._flush(key, batch)
        return await waiter

    def flush(self) -> None:
        """Send every open batch now (a drain must not wait for `max_wait_ms`)."""
        for key, batch in list(self._open.items()):
            self._flush(key, batch)

    def _flush(self, key: Hashable, batch: _OpenBatch) -> None:
        if self._open.get(key) is not batch:
            return  # already sent (a timer that fired after the batch filled up)
        del self._open[key]
        if batch.timer is not None:
            batch.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: _OpenBatch) -> None:
        # A delivery cancelled while it waited (its partition revoked) is left out: its event is
        # not committed, so whoever owns the partition now sends it.
        live = [(r, w) for r, w in zip(batch.requests, batch.waiters, strict=True) if not w.done()]
        if not live:
            return
        requests = [r for r, _ in live]
        waiters = [w for _, w in live]
        try:
            self._m_events.observe(len(requests))
            result = await self._bulkhead.deliver_combined(self._combine(requests), len(waiters))
        except asyncio.CancelledError:
            for w in waiters:
                w.cancel()
            raise
        except Exception as exc:  # a bug, not partner trouble: each delivery sees it and stops the worker
            for w in waiters:
                if not w.done():
                    w.set_exception(exc)
            return
        for w in waiters:
            if not w.done():
                w.set_result(result)

    async def close(self) -> None:
        """Cancel what is still open or being sent (its events are not committed, so nothing is lost)."""
        for batch in self._open.values():
            if batch.timer is not None:
                batch.timer.cancel()
            for w in batch.waiters:
                w.cancel()
        self._open.clear()
        tasks = list(self._sending)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def batchers_for(
    destination: Any, batching: Mapping[str, Batching], bulkhead: Bulkhead, metrics: Metrics | None = None
) -> dict[tuple[str, str], Batcher]:
    """Batchers of one `config.DestinationConfig`, keyed by (destination id, subscription name).

    Subscriptions of one action with the same batch configuration share a batcher; `batching` is
    the destination type's `Batching` of each action that has one."""
    shared: dict[tuple[str, Any], Batcher] = {}
    out: dict[tuple[str, str], Batcher] = {}
    for sub in _batched(destination.subscriptions):
        spec = batching.get(sub.action)
        if spec is None:
            continue
        group = (sub.action, sub.batch)
        batcher = shared.get(group)
        if batcher is None:
            batcher = shared[group] = Batcher(
                bulkhead, spec, BatchOptions.from_config(sub.batch), metrics=metrics
            )
        out[(destination.id, sub.name)] = batcher
    return out


def _batched(subscriptions: Iterable[Any]) -> Iterable[Any]:
    return (s for s in subscriptions if s.enabled and getattr(s, "batch", None) is not None)
