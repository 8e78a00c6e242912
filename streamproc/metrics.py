"""Prometheus metrics of a worker: one `Metrics` object, made by the composition root and passed down.

Labels are bounded: destination instance id, action, outcome, status class, topic, partition.
Never user data."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["LATENCY_BUCKETS", "Metrics", "status_class"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
E2E_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)


def status_class(status: int | None) -> str:
    """`2xx`..`5xx`, or `error` when no HTTP answer came back (timeout, reset)."""
    if status is None:
        return "error"
    return f"{status // 100}xx"


class Metrics:
    """Every metric streamproc exports, registered in one registry (a fresh one per worker in tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "streamproc_events_consumed_total", "Messages read from the input topics.", ["topic"], registry=r
        )
        self.events_undecodable = Counter(
            "streamproc_events_undecodable_total",
            "Messages that were not a Segment event (dead-lettered).",
            ["topic"],
            registry=r,
        )
        self.events_matched = Counter(
            "streamproc_events_matched_total",
            "Deliveries created: an event matched a subscription.",
            ["destination", "action"],
            registry=r,
        )
        self.deliveries = Counter(
            "streamproc_deliveries_total",
            "Finished deliveries by outcome (delivered, dead_lettered, skipped, parked).",
            ["destination", "action", "outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "streamproc_dead_letters_total",
            "Records written to the dead-letter topic, by reason.",
            ["destination", "error_type"],
            registry=r,
        )
        self.retries = Counter(
            "streamproc_delivery_retries_total",
            "Delivery attempts that were retried.",
            ["destination"],
            registry=r,
        )
        self.partner_responses = Counter(
            "streamproc_partner_responses_total",
            "Partner HTTP responses by status class (error = no response).",
            ["destination", "status_class"],
            registry=r,
        )
        self.in_flight_deliveries = Gauge(
            "streamproc_deliveries_in_flight", "Deliveries not yet finished.", ["destination"], registry=r
        )
        self.in_flight_events = Gauge(
            "streamproc_events_in_flight",
            "Consumed events whose deliveries are not all finished.",
            registry=r,
        )
        self.delivery_latency = Histogram(
            "streamproc_delivery_duration_seconds",
            "Consumed to finished, per delivery (includes retries).",
            ["destination"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_latency = Histogram(
            "streamproc_partner_request_duration_seconds",
            "One HTTP request to a partner.",
            ["destination"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end_latency = Histogram(
            "streamproc_end_to_end_latency_seconds",
            "Event timestamp to delivered.",
            ["destination"],
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.circuit_state = Gauge(
            "streamproc_circuit_state",
            "Circuit breaker state per destination: 0 closed, 1 half-open, 2 open.",
            ["destination"],
            registry=r,
        )
        self.rate_limit_wait = Counter(
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
        self.partial_successes = Counter(
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
