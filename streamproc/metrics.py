"""Prometheus metrics of a worker: one `Metrics` object, made by the composition root and passed down.

Labels are bounded: destination instance id, action, outcome, status class, topic, partition.
Never user data.

The metrics updated once or more per event or request are `LoopCounter` and `LoopHistogram`
families: plain numbers updated on the event loop's thread and turned into samples when the
registry is collected (a scrape), so an update costs an addition, not a lock and a bucket loop.
`labels(...)` is memoised for them: it is the one place the hot path looks up a labelled child.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

__all__ = ["LATENCY_BUCKETS", "LoopCounter", "LoopHistogram", "Metrics", "status_class"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
E2E_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)


def status_class(status: int | None) -> str:
    """`2xx`..`5xx`, or `error` when no HTTP answer came back (timeout, reset)."""
    if status is None:
        return "error"
    return _STATUS_CLASSES.get(status // 100) or f"{status // 100}xx"


_STATUS_CLASSES = {n: f"{n}xx" for n in range(1, 6)}


class _Count:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class _Observations:
    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        # bisect_left: the first bucket whose upper bound is >= amount (Prometheus' `le`).
        self.counts[bisect_left(self._bounds, amount)] += 1
        self.sum += amount


class _LoopFamily:
    """A labelled family whose children are plain objects, exposed by `collect` at scrape time.

    Updated only from the event loop's thread (collect runs there too, in the /metrics handler)."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], object] = {}
        self._memo: dict[tuple[str, ...], object] = {}  # as called (values may be ints) -> child
        registry.register(self)  # type: ignore[arg-type]

    def _child(self, values: tuple[str, ...], kw: dict[str, str]) -> object:
        if kw:
            values = tuple(kw[n] for n in self.labelnames)
        child = self._memo.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes the labels {', '.join(self.labelnames)}")
            key = tuple(str(v) for v in values)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._new()
            self._memo[values] = child
        return child

    def _new(self) -> object:
        raise NotImplementedError

    def describe(self) -> list[Metric]:
        return [self._family()]

    def _family(self) -> Metric:
        raise NotImplementedError


class LoopCounter(_LoopFamily):
    """A counter family (exported as `<name>_total`)."""

    def labels(self, *values: str, **kw: str) -> _Count:
        child = self._memo.get(values) if not kw else None
        return child if child is not None else self._child(values, kw)  # type: ignore[return-value]

    def _new(self) -> _Count:
        return _Count()

    def _family(self) -> Metric:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in list(self._children.items()):
            assert isinstance(child, _Count)
            family.add_metric(key, child.value, created=child.created)
        yield family


class LoopHistogram(_LoopFamily):
    """A histogram family with fixed buckets."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        self.buckets = tuple(float(b) for b in buckets)
        self._les = [*(floatToGoString(b) for b in self.buckets), "+Inf"]
        super().__init__(name, documentation, labelnames, registry)

    def labels(self, *values: str, **kw: str) -> _Observations:
        child = self._memo.get(values) if not kw else None
        return child if child is not None else self._child(values, kw)  # type: ignore[return-value]

    def _new(self) -> _Observations:
        return _Observations(self.buckets)

    def _family(self) -> Metric:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in list(self._children.items()):
            assert isinstance(child, _Observations)
            total = 0
            buckets = []
            for le, count in zip(self._les, child.counts, strict=True):
                total += count
                buckets.append((le, total))
            family.add_metric(key, buckets, child.sum)
        yield family


class Metrics:
    """Every metric streamproc exports, registered in one registry (a fresh one per worker in tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # process_* (CPU seconds, resident memory, open file descriptors, start time): the worker's own
        # registry is not the library's default one, which would have them already.
        ProcessCollector(registry=r)
        self.events_consumed = LoopCounter(
            "streamproc_events_consumed_total", "Messages read from the input topics.", ["topic"], registry=r
        )
        self.events_undecodable = LoopCounter(
            "streamproc_events_undecodable_total",
            "Messages that were not a Segment event (dead-lettered).",
            ["topic"],
            registry=r,
        )
        self.events_filtered = LoopCounter(
            "streamproc_events_filtered_total",
            "Events a destination instance did not receive, by reason: a gate withheld it (consent, "
            "integrations, filter_drop, filter_sample) or none of its triggers matched (no_subscription).",
            ["destination", "reason"],
            registry=r,
        )
        self.events_matched = LoopCounter(
            "streamproc_events_matched_total",
            "Deliveries created: an event matched a subscription.",
            ["destination", "action"],
            registry=r,
        )
        self.deliveries = LoopCounter(
            "streamproc_deliveries_total",
            "Finished deliveries by outcome (delivered, dead_lettered, skipped, parked).",
            ["destination", "action", "outcome"],
            registry=r,
        )
        self.dead_letters = LoopCounter(
            "streamproc_dead_letters_total",
            "Records written to the dead-letter topic, by reason.",
            ["destination", "error_type"],
            registry=r,
        )
        self.retries = LoopCounter(
            "streamproc_delivery_retries_total",
            "Delivery attempts that were retried.",
            ["destination"],
            registry=r,
        )
        self.partner_responses = LoopCounter(
            "streamproc_partner_responses_total",
            "Partner HTTP responses by status class (error = no response).",
            ["destination", "status_class"],
            registry=r,
        )
        self.in_flight_deliveries = Gauge(
            "streamproc_deliveries_in_flight",
            "Deliveries not yet finished, those waiting in an open batch included.",
            ["destination"],
            registry=r,
        )
        self.in_flight_events = Gauge(
            "streamproc_events_in_flight",
            "Consumed events whose deliveries are not all finished.",
            registry=r,
        )
        self.delivery_latency = LoopHistogram(
            "streamproc_delivery_duration_seconds",
            "Consumed to finished, per delivery (includes retries).",
            ["destination"],
            r,
            LATENCY_BUCKETS,
        )
        self.request_latency = LoopHistogram(
            "streamproc_partner_request_duration_seconds",
            "One HTTP request to a partner.",
            ["destination"],
            r,
            LATENCY_BUCKETS,
        )
        self.end_to_end_latency = LoopHistogram(
            "streamproc_end_to_end_latency_seconds",
            "Event timestamp to delivered.",
            ["destination"],
            r,
            E2E_BUCKETS,
        )
        self.circuit_state = Gauge(
            "streamproc_circuit_state",
            "Circuit breaker state per destination: 0 closed, 1 half-open, 2 open.",
            ["destination"],
            registry=r,
        )
        self.concurrency_limit = Gauge(
            "streamproc_destination_concurrency_limit",
            "Requests a destination instance may have in flight: limits.concurrency, or the limit"
            " learned so far when limits.adaptive is on.",
            ["destination"],
            registry=r,
        )
        self.rate_limit_wait = LoopCounter(
            "streamproc_rate_limit_wait_seconds_total",
            "Time deliveries spent waiting for the rate limiter.",
            ["destination"],
            registry=r,
        )
        self.paused_partitions = Gauge(
            "streamproc_paused_partitions", "Partitions paused by backpressure.", registry=r
        )
        self.assigned_partitions = Gauge(
            "streamproc_assigned_partitions", "Partitions assigned to this worker.", registry=r
        )
        self.consumer_lag = Gauge(
            "streamproc_consumer_lag",
            "Messages between the committed position and the end of the partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.commit_latency = Histogram(
            "streamproc_commit_duration_seconds",
            "Offset commit round trips.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rebalances = Counter(
            "streamproc_rebalances_total", "Partition assignments and revocations.", ["kind"], registry=r
        )
        self.parked = Counter(
            "streamproc_parked_total",
            "Deliveries written to their destination's retry topic (parked again included), by reason.",
            ["destination", "reason"],
            registry=r,
        )
        self.retry_outcomes = Counter(
            "streamproc_retry_outcomes_total",
            "Retry records read back when due, by what became of them "
            "(delivered, skipped, parked_again, dead_lettered, unmatched).",
            ["destination", "outcome"],
            registry=r,
        )
        self.retry_pending = Gauge(
            "streamproc_retry_pending",
            "Records of the destination's retry topic not yet finished, on this worker's partitions (lag).",
            ["destination"],
            registry=r,
        )
        self.retry_oldest = Gauge(
            "streamproc_retry_oldest_parked_seconds",
            "Age (since its first attempt) of the oldest parked delivery read back or waiting at a "
            "retry partition's head; 0 when none.",
            ["destination"],
            registry=r,
        )
        self.ready = Gauge(
            "streamproc_ready", "1 when the worker is consuming and can dead-letter.", registry=r
        )
        self.partial_successes = LoopCounter(
            "streamproc_partner_partial_successes_total",
            "Responses delivered that the partner accepted only in part (TikTok code 20001).",
            ["destination"],
            registry=r,
        )
        self.batch_events = Histogram(
            "streamproc_batch_events",
            "Events per batch request sent (destinations with batching on).",
            ["destination"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
