"""The hot-path metric families scrape like prometheus-client's own: names, labels, buckets, sums."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

from streamproc.metrics import LoopCounter, LoopHistogram, Metrics


def test_a_counter_scrapes_its_total_per_label_set() -> None:
    registry = CollectorRegistry()
    c = LoopCounter("demo_things_total", "Things.", ["destination", "outcome"], registry=registry)
    c.labels("a", "ok").inc()
    c.labels("a", "ok").inc(2)
    c.labels(destination="b", outcome="failed").inc()
    assert c.labels("a", "ok") is c.labels(destination="a", outcome="ok")  # one child per label set
    get = registry.get_sample_value
    assert get("demo_things_total", {"destination": "a", "outcome": "ok"}) == 3
    assert get("demo_things_total", {"destination": "b", "outcome": "failed"}) == 1
    # The same lines as prometheus-client's own Counter (its creation times aside).
    reference = CollectorRegistry()
    ref = Counter("demo_things_total", "Things.", ["destination", "outcome"], registry=reference)
    ref.labels("a", "ok").inc(3)
    ref.labels("b", "failed").inc()

    def lines(r: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(r).decode().splitlines() if "_created" not in line]

    assert lines(registry) == lines(reference)
    assert 'demo_things_created{destination="a",outcome="ok"}' in generate_latest(registry).decode()


def test_labels_given_as_other_types_are_the_same_child() -> None:
    registry = CollectorRegistry()
    c = LoopCounter("demo_parts_total", "Parts.", ["partition"], registry=registry)
    c.labels(3).inc()  # type: ignore[arg-type]
    c.labels("3").inc()
    assert registry.get_sample_value("demo_parts_total", {"partition": "3"}) == 2


def test_a_histogram_counts_each_value_in_the_first_bucket_at_or_above_it() -> None:
    registry = CollectorRegistry()
    h = LoopHistogram("demo_seconds", "Durations.", ["destination"], registry, (0.1, 1.0, 10.0))
    for value in (0.05, 0.1, 0.5, 1.0, 20.0):
        h.labels("a").observe(value)
    get = registry.get_sample_value
    buckets = {
        le: get("demo_seconds_bucket", {"destination": "a", "le": le})
        for le in ("0.1", "1.0", "10.0", "+Inf")
    }
    assert buckets == {"0.1": 2, "1.0": 4, "10.0": 4, "+Inf": 5}  # cumulative, `le` inclusive
    assert get("demo_seconds_count", {"destination": "a"}) == 5
    assert get("demo_seconds_sum", {"destination": "a"}) == 21.65


def test_the_worker_metrics_register_under_their_exported_names() -> None:
    m = Metrics()
    m.deliveries.labels("seg", "track", "delivered").inc()
    m.request_latency.labels("seg").observe(0.02)
    text = generate_latest(m.registry).decode()
    assert 'streamproc_deliveries_total{action="track",destination="seg",outcome="delivered"} 1.0' in text
    assert 'streamproc_partner_request_duration_seconds_bucket{destination="seg",le="0.025"} 1.0' in text


def test_the_worker_registry_exports_process_metrics() -> None:
    text = generate_latest(Metrics().registry).decode()
    samples = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line[:1] != "#"}
    assert samples["process_cpu_seconds_total"] > 0
    assert samples["process_resident_memory_bytes"] > 1_000_000
    assert samples["process_open_fds"] >= 3
    assert samples["process_start_time_seconds"] > 1_600_000_000
