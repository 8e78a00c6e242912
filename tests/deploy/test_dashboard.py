"""The Grafana dashboard and alert rules only query metrics the worker exports, under their exported names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streamproc.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NAME = re.compile(r"\bstreamproc_[a-z_]+")


def exported_names() -> set[str]:
    """Every sample name a scrape of a worker can show, including _bucket/_sum/_count and _total."""
    registry = CollectorRegistry()
    Metrics(registry)
    # Labelled metrics show no samples before a child exists, so a scrape of a fresh registry would
    # miss them; the registry's own name table has every name (it has no public accessor).
    names: set[str] = set()
    for collector_names in registry._collector_to_names.values():
        names.update(collector_names)
    return names


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "streamproc.json").read_text())


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_dashboard_has_the_promised_panels_and_a_destination_variable() -> None:
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["destination"]["includeAll"] and variables["destination"]["allValue"] == ".*"
    exprs = " ".join(dashboard_exprs())
    for metric in (
        "streamproc_deliveries_total",
        "streamproc_delivery_duration_seconds_bucket",
        "streamproc_end_to_end_latency_seconds_bucket",
        "streamproc_consumer_lag",
        "streamproc_dead_letters_total",
        "streamproc_delivery_retries_total",
        "streamproc_partner_responses_total",
        "streamproc_circuit_state",
        "streamproc_deliveries_in_flight",
        "streamproc_destination_concurrency_limit",
        "streamproc_paused_partitions",
        "streamproc_parked_total",
        "streamproc_retry_pending",
        "streamproc_retry_oldest_parked_seconds",
        "streamproc_retry_outcomes_total",
        "streamproc_batch_events_bucket",
        "streamproc_partner_partial_successes_total",
        "streamproc_events_filtered_total",
    ):
        assert metric in exprs, metric
    assert exprs.count("histogram_quantile(") >= 6


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_queried_metric_is_exported(source: str) -> None:
    exprs = dashboard_exprs() if source == "dashboard" else alert_exprs()
    used = {name for e in exprs for name in NAME.findall(e)}
    unknown = used - exported_names()
    assert not unknown, f"{source} queries metrics the worker does not export: {sorted(unknown)}"


def test_query_list_matches_the_dashboard() -> None:
    listed = json.loads((DEPLOY / "grafana" / "queries.json").read_text())["queries"]
    assert [q["expr"] for q in listed] == dashboard_exprs()


def test_panels_that_filter_by_destination_use_the_variable_not_a_fixed_name() -> None:
    for e in dashboard_exprs():
        for value in re.findall(r'destination=~?"([^"]*)"', e):
            assert value == "$destination", e


def test_chart_ships_the_same_alert_rules() -> None:
    chart_copy = DEPLOY / "helm" / "streamproc" / "files" / "alerts.yaml"
    ours = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    assert yaml.safe_load(chart_copy.read_text()) == ours


def test_every_query_is_scoped_to_the_chosen_namespace_and_job() -> None:
    # Two deployments scraped by one Prometheus must never add up in a panel.
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    for name in ("namespace", "job"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*", name
    for e in dashboard_exprs():
        for selector in re.findall(r"\bstreamproc_[a-z_]+(\{[^}]*\})?", e):
            assert 'namespace=~"$namespace"' in selector and 'job=~"$job"' in selector, e
