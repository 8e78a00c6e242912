"""Segment's gates in a real worker on the real broker: one stream, three destination instances with
different consent, integrations-object and filter settings. Each partner receives exactly its subset,
the filtered counter matches per instance and reason, nothing withheld is dead-lettered, and every
offset is committed."""

from __future__ import annotations

import collections
import random
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_helpers import read_all, unique_name
from prometheus_client.parser import text_string_to_metric_families
from test_worker_helpers import (
    SimulatorThread,
    WorkerProcess,
    free_port,
    fully_committed,
    make_events,
    predict,
    produce_events,
    recorded,
    wait_for,
    write_config,
)

from streamproc.config import load_config
from streamproc.core.filters import consistent_fraction
from streamproc.core.js import UNDEFINED
from streamproc.router import Router

pytestmark = pytest.mark.kafka

GATES: dict[str, dict[str, Any]] = {
    "stackadapt": {"consent_categories": ["C0004"]},
    "tiktok-offline": {
        "integrations": "ignore",
        "filters": [
            {"if": "all", "sample": {"percent": 0.5, "path": "userId"}},
            {"if": "properties.revenue < 50", "drop": True},
        ],
    },
    "seg": {
        "filters": [
            {"if": "type = 'page'", "drop": True},
            {"if": "type = 'identify'", "drop_properties": ["traits.gender"]},
        ]
    },
}


def with_gates_input(events: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Some events carry an integrations object, some consent preferences."""
    rng = random.Random(seed)
    for event in events:
        x = rng.random()
        if x < 0.15:
            event["integrations"] = {"All": False, "Seg": True}  # as Engage sends an audience to one tool
        elif x < 0.25:
            event["integrations"] = {"StackAdapt": False}
        elif x < 0.35:
            event["integrations"] = {"Tiktok Offline Conversions": False, "Seg": {"option": 1}}
        if rng.random() < 0.4:
            context = event.setdefault("context", {})
            context["consent"] = {"categoryPreferences": {"C0004": rng.random() < 0.5, "C0001": True}}
    return events


def expected_withheld(event: dict[str, Any]) -> dict[str, str]:
    """Which instances a gate withholds the event from, and why, by the rules as Segment states them."""
    out: dict[str, str] = {}
    integrations = event.get("integrations") or {}
    prefs = event.get("context", {}).get("consent", {}).get("categoryPreferences")
    if prefs is not None and prefs.get("C0004") is not True:
        out["stackadapt"] = "consent"
    elif integrations.get("StackAdapt") is False or (integrations.get("All") is False):
        out["stackadapt"] = "integrations"
    if integrations.get("All") is False and "Seg" not in integrations:
        out["seg"] = "integrations"
    elif event.get("type") == "page":
        out["seg"] = "filter_drop"
    revenue = event.get("properties", {}).get("revenue")
    if consistent_fraction(event.get("userId", UNDEFINED)) >= 0.5:
        out["tiktok-offline"] = "filter_sample"
    elif isinstance(revenue, int | float) and not isinstance(revenue, bool) and revenue < 50:
        out["tiktok-offline"] = "filter_drop"
    return out


def scrape(port: int) -> dict[tuple[str, str], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "streamproc_events_filtered":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[(sample.labels["destination"], sample.labels["reason"])] = sample.value
    return counts


def test_each_partner_receives_exactly_what_the_gates_let_through(
    kafka_bootstrap: str, topic: Any, tmp_path: Path
) -> None:
    sim = SimulatorThread()
    try:
        src, dlq, group = topic("events"), topic("dlq", partitions=1), unique_name("gates")
        events = with_gates_input(make_events(1500, seed=13, users=300), seed=13)
        port = free_port()
        config = write_config(
            tmp_path / "config.yaml",
            bootstrap=kafka_bootstrap,
            topic=src,
            dlq=dlq,
            group=group,
            sim_url=sim.url,
            metrics_port=port,
            destination_extra=GATES,
        )
        router = Router(load_config(config))
        want: collections.Counter[tuple[str, str]] = collections.Counter()
        no_subscription: collections.Counter[tuple[str, str]] = collections.Counter()
        for event in events:
            withheld = expected_withheld(event)
            want.update(withheld.items())
            deliveries, reported = router.routed(event)
            assert {d: r for d, r in reported if r != "no_subscription"} == withheld, event
            assert all(d.error is None for d in deliveries)
            no_subscription.update(w for w in reported if w[1] == "no_subscription")
            for d in deliveries:
                assert d.destination not in withheld
        assert {reason for _, reason in want} == {"consent", "integrations", "filter_drop", "filter_sample"}
        expected = predict(config, events)

        produce_events(kafka_bootstrap, src, events)
        worker = WorkerProcess(config, tmp_path / "worker.log")
        # Offsets commit once an event's deliveries are finished: then every request has arrived.
        wait_for(fully_committed(kafka_bootstrap, group, src), 180, "all offsets committed", [worker])
        counts = scrape(port)
        assert worker.terminate() == 0

        assert recorded(sim.requests()) == expected
        assert {k: v for k, v in counts.items() if k[1] != "no_subscription"} == dict(want)
        assert {k: v for k, v in counts.items() if k[1] == "no_subscription"} == dict(no_subscription)
        assert read_all(kafka_bootstrap, dlq, timeout=5) == []
        # seg's identify calls are built from its own copy, without traits.gender
        assert any(e["type"] == "identify" and "gender" in e.get("traits", {}) for e in events)
        identifies = [orjson.loads(r.body) for r in sim.requests() if r.raw_path.endswith("/identify")]
        assert identifies
        assert not any("Gender" in b or "gender" in b.get("Traits", {}) for b in identifies)
    finally:
        sim.stop()
