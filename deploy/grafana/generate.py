"""Writes the streamproc Grafana dashboard (streamproc.json) and its flat query list (queries.json)."""

# Run: python3 deploy/grafana/generate.py  (stdlib only; the JSON files are committed).
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
D = 'destination=~"$destination"'
RI = "$__rate_interval"
# Every metric a panel reads is scoped to the chosen deployment(s): two deployments scraped by one
# Prometheus (their `namespace` and `job` labels differ) never add up in one panel.
SCOPE = 'namespace=~"$namespace", job=~"$job"'
_METRIC = re.compile(r"\b(streamproc_[a-z_]+)(\{)?")


def scoped(expr: str) -> str:
    """`expr` with the namespace and job selectors in every metric reference."""

    def add(m: re.Match[str]) -> str:
        return f"{m.group(1)}{{{SCOPE}, " if m.group(2) else f"{m.group(1)}{{{SCOPE}}}"

    return _METRIC.sub(add, expr)


_panels: list[dict[str, Any]] = []
_y = 0
_x = 0
_id = 0


def _next_id() -> int:
    global _id
    _id += 1
    return _id


def row(title: str) -> None:
    global _y, _x
    if _x:
        _y += 8
        _x = 0
    _panels.append(
        {
            "type": "row",
            "title": title,
            "id": _next_id(),
            "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": _y},
            "panels": [],
        }
    )
    _y += 1


def panel(
    title: str,
    targets: list[tuple[str, str]],
    *,
    unit: str = "short",
    kind: str = "timeseries",
    width: int = 8,
    description: str = "",
    mappings: list[dict[str, Any]] | None = None,
    stack: bool = False,
) -> None:
    global _x, _y
    if _x + width > 24:
        _x = 0
        _y += 8
    defaults: dict[str, Any] = {"unit": unit}
    if kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        }
    if mappings:
        defaults["mappings"] = mappings
    p: dict[str, Any] = {
        "type": kind,
        "title": title,
        "id": _next_id(),
        "datasource": DS,
        "gridPos": {"h": 8, "w": width, "x": _x, "y": _y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [
            {"datasource": DS, "expr": scoped(expr), "legendFormat": legend, "refId": chr(ord("A") + i)}
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    if description:
        p["description"] = description
    _panels.append(p)
    _x += width


def quantiles(metric: str, by: str, selector: str) -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by ({by}le) (rate({metric}_bucket{{{selector}}}[{RI}])))",
            f"p{int(q * 100)}" + (" {{destination}}" if by else ""),
        )
        for q in (0.5, 0.95, 0.99)
    ]


row("Throughput")
panel(
    "Events consumed /s",
    [(f"sum by (topic) (rate(streamproc_events_consumed_total[{RI}]))", "{{topic}}")],
    unit="ops",
)
panel(
    "Deliveries matched /s",
    [(f"sum by (destination) (rate(streamproc_events_matched_total{{{D}}}[{RI}]))", "{{destination}}")],
    unit="ops",
    description="Deliveries created: an event matched a subscription.",
)
panel(
    "Delivered /s per destination",
    [
        (
            f'sum by (destination) (rate(streamproc_deliveries_total{{{D}, outcome="delivered"}}[{RI}]))',
            "{{destination}}",
        )
    ],
    unit="ops",
)
panel(
    "Delivery outcomes /s",
    [
        (
            f"sum by (destination, outcome) (rate(streamproc_deliveries_total{{{D}}}[{RI}]))",
            "{{destination}} {{outcome}}",
        )
    ],
    unit="ops",
    width=12,
    stack=True,
)
panel(
    "Deliveries /s per action",
    [
        (
            f"sum by (destination, action) (rate(streamproc_deliveries_total{{{D}}}[{RI}]))",
            "{{destination}} {{action}}",
        )
    ],
    unit="ops",
    width=12,
)

row("Latency")
panel(
    "Delivery latency (consumed → finished)",
    quantiles("streamproc_delivery_duration_seconds", "destination, ", D),
    unit="s",
)
panel(
    "End-to-end latency (event timestamp → delivered)",
    quantiles("streamproc_end_to_end_latency_seconds", "destination, ", D),
    unit="s",
)
panel(
    "Partner request latency",
    quantiles("streamproc_partner_request_duration_seconds", "destination, ", D),
    unit="s",
)

row("Kafka")
panel(
    "Consumer lag per topic",
    [("sum by (topic) (streamproc_consumer_lag)", "{{topic}}")],
    description="Messages between the committed position and the end of each partition.",
)
panel(
    "Consumer lag per partition",
    [("max by (topic, partition) (streamproc_consumer_lag)", "{{topic}}/{{partition}}")],
)
panel(
    "Partitions: assigned and paused",
    [
        ("sum(streamproc_assigned_partitions)", "assigned"),
        ("sum(streamproc_paused_partitions)", "paused (backpressure)"),
    ],
)
panel("Offset commit latency", quantiles("streamproc_commit_duration_seconds", "", ""), unit="s")
panel("Rebalances", [(f"sum by (kind) (increase(streamproc_rebalances_total[{RI}]))", "{{kind}}")])
panel("Workers ready", [("sum(streamproc_ready)", "ready"), ("count(streamproc_ready)", "workers")])

row("Failures")
panel(
    "Dead letters /s",
    [
        (
            f"sum by (destination, error_type) (rate(streamproc_dead_letters_total{{{D}}}[{RI}]))",
            "{{destination}} {{error_type}}",
        )
    ],
    unit="ops",
    description="An empty destination is input that could not be decoded.",
)
panel(
    "Retries /s",
    [(f"sum by (destination) (rate(streamproc_delivery_retries_total{{{D}}}[{RI}]))", "{{destination}}")],
    unit="ops",
)
panel(
    "Undecodable messages /s",
    [(f"sum by (topic) (rate(streamproc_events_undecodable_total[{RI}]))", "{{topic}}")],
    unit="ops",
)
panel(
    "Partner responses by status class /s",
    [
        (
            f"sum by (destination, status_class) (rate(streamproc_partner_responses_total{{{D}}}[{RI}]))",
            "{{destination}} {{status_class}}",
        )
    ],
    unit="ops",
    width=12,
    stack=True,
)
panel(
    "Partner error ratio (5xx + no response)",
    [
        (
            # `or ... * 0`: a destination without errors shows 0, not a gap.
            "(sum by (destination) (rate(streamproc_partner_responses_total"
            f'{{{D}, status_class=~"5xx|error"}}[{RI}]))'
            f" or sum by (destination) (rate(streamproc_partner_responses_total{{{D}}}[{RI}])) * 0)"
            f" / sum by (destination) (rate(streamproc_partner_responses_total{{{D}}}[{RI}]))",
            "{{destination}}",
        )
    ],
    unit="percentunit",
    width=12,
)

row("Flow control")
panel(
    "Circuit state",
    [(f"max by (destination) (streamproc_circuit_state{{{D}}})", "{{destination}}")],
    kind="state-timeline",
    mappings=[
        {
            "type": "value",
            "options": {
                "0": {"text": "closed", "color": "green", "index": 0},
                "1": {"text": "half-open", "color": "yellow", "index": 1},
                "2": {"text": "open", "color": "red", "index": 2},
            },
        }
    ],
)
panel(
    "In flight",
    [
        (f"sum by (destination) (streamproc_deliveries_in_flight{{{D}}})", "deliveries {{destination}}"),
        ("sum(streamproc_events_in_flight)", "events"),
    ],
)
panel(
    "Rate limiter wait (s/s)",
    [
        (
            f"sum by (destination) (rate(streamproc_rate_limit_wait_seconds_total{{{D}}}[{RI}]))",
            "{{destination}}",
        )
    ],
    unit="s",
)
panel(
    "Concurrency limit per destination",
    [
        (f"max by (destination) (streamproc_destination_concurrency_limit{{{D}}})", "limit {{destination}}"),
        (f"sum by (destination) (streamproc_deliveries_in_flight{{{D}}})", "in flight {{destination}}"),
    ],
    width=12,
    description="Requests a destination may have in flight: limits.concurrency, or the limit learned"
    " so far (AIMD) when limits.adaptive is on. A limit well below limits.concurrency means the partner"
    " answers 429s, times out or slows down at more.",
)

row("Parked deliveries")
panel(
    "Parked /s (retry topic writes)",
    [
        (
            f"sum by (destination, reason) (rate(streamproc_parked_total{{{D}}}[{RI}]))",
            "{{destination}} {{reason}}",
        )
    ],
    unit="ops",
    description="Deliveries that spent their in-memory retry share (or met an open circuit) and went to "
    "their destination's retry topic; parked again included.",
)
panel(
    "Waiting in the retry topics",
    [(f"sum by (destination) (streamproc_retry_pending{{{D}}})", "{{destination}}")],
    description="Retry-topic records not yet delivered, parked again or dead-lettered (retry-topic lag).",
)
panel(
    "Oldest parked delivery",
    [(f"max by (destination) (streamproc_retry_oldest_parked_seconds{{{D}}})", "{{destination}}")],
    unit="s",
    description="Since its first attempt. It is dead-lettered when its retry budget ends.",
)
panel(
    "Retry outcomes /s",
    [
        (
            f"sum by (destination, outcome) (rate(streamproc_retry_outcomes_total{{{D}}}[{RI}]))",
            "{{destination}} {{outcome}}",
        )
    ],
    unit="ops",
    width=24,
    stack=True,
)

row("Gates: events a destination did not receive")
panel(
    "Withheld /s by reason",
    [
        (
            f"sum by (reason) (rate(streamproc_events_filtered_total{{{D}}}[{RI}]))",
            "{{reason}}",
        )
    ],
    unit="ops",
    stack=True,
    description="Per destination instance an event did not reach: consent (its categories not all "
    "true), integrations (the event's integrations object), filter_drop / filter_sample (destination "
    "filters), no_subscription (passed the gates, no trigger matched). Never an error, never a dead letter.",
)
panel(
    "Withheld /s per destination",
    [
        (
            f"sum by (destination, reason) (rate(streamproc_events_filtered_total{{{D}}}[{RI}]))",
            "{{destination}} {{reason}}",
        )
    ],
    unit="ops",
    width=16,
    stack=True,
    description="`streamproc send` shows, for sample events, which instance withholds which event and why.",
)

row("Batched requests")
panel(
    "Events per batch request",
    quantiles("streamproc_batch_events", "destination, ", D),
    description="Destinations with `batch:` on (TikTok): events in each request sent. Well below "
    "batch.max_events under load means max_wait_ms or max_bytes closes the batches first.",
)
panel(
    "Batch requests /s and events batched /s",
    [
        (
            f"sum by (destination) (rate(streamproc_batch_events_count{{{D}}}[{RI}]))",
            "requests {{destination}}",
        ),
        (f"sum by (destination) (rate(streamproc_batch_events_sum{{{D}}}[{RI}]))", "events {{destination}}"),
    ],
    unit="ops",
)
panel(
    "Partial successes /s",
    [
        (
            f"sum by (destination) (rate(streamproc_partner_partial_successes_total{{{D}}}[{RI}]))",
            "{{destination}}",
        )
    ],
    unit="ops",
    description="Responses the partner accepted only in part (TikTok code 20001): counted as delivered; "
    "the partner's message says which items it dropped.",
)

def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    """A multi-value label variable whose "All" matches series without the label too (plain Prometheus
    without Kubernetes service discovery has no `namespace`)."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": 0,
    }


dashboard = {
    "uid": "streamproc",
    "title": "streamproc",
    "description": "Kafka → partner API delivery: throughput, latency, lag, failures, flow control.",
    "tags": ["streamproc", "kafka"],
    "timezone": "utc",
    "schemaVersion": 39,
    "version": 1,
    "editable": True,
    "graphTooltip": 1,
    "refresh": "30s",
    "time": {"from": "now-3h", "to": "now"},
    "annotations": {"list": []},
    "links": [],
    "templating": {
        "list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "refresh": 1,
            },
            _variable("namespace", "Namespace", "label_values(streamproc_ready, namespace)"),
            _variable("job", "Job", 'label_values(streamproc_ready{namespace=~"$namespace"}, job)'),
            _variable(
                "destination",
                "Destination",
                f"label_values(streamproc_events_matched_total{{{SCOPE}}}, destination)",
            ),
        ]
    },
    "panels": _panels,
}

queries = {
    "note": "Every expr of streamproc.json. To evaluate outside Grafana, substitute the variables.",
    "variables": {"$namespace": ".*", "$job": ".*", "$destination": ".*", "$__rate_interval": "1m"},
    "queries": [
        {"panel": p["title"], "refId": t["refId"], "expr": t["expr"]}
        for p in _panels
        if p["type"] != "row"
        for t in p["targets"]
    ],
}

(HERE / "streamproc.json").write_text(json.dumps(dashboard, indent=2) + "\n")
(HERE / "queries.json").write_text(json.dumps(queries, indent=2) + "\n")
print(f"{len(queries['queries'])} queries in {sum(p['type'] != 'row' for p in _panels)} panels")
