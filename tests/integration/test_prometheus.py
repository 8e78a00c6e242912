"""A real Prometheus server scrapes a worker running on the real broker; every Grafana panel query and
every alert rule shipped in deploy/ is evaluated against what it collected.

Needs the `prometheus` binary (Debian package `prometheus`): installed here when missing and
possible (root with apt-get), otherwise the test is skipped.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from kafka_helpers import async_wait_until, committed_offsets, end_offsets, produce, unique_name
from ops_helpers import make_events, write_config
from test_worker_helpers import free_port

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "streamproc.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
RATE_WINDOW = "1m"


def _install_prometheus() -> str | None:
    found = shutil.which("prometheus")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300, check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
            env=env,
            capture_output=True,
            timeout=600,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return shutil.which("prometheus")


class Prometheus:
    """A Prometheus server in a temporary directory, and its HTTP query API."""

    def __init__(self, binary: str, workdir: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        rules = workdir / "alerts.yaml"
        shutil.copy(ALERTS, rules)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "streamproc", "static_configs": [{"targets": [target]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=self.log,
        )
        self.workdir = workdir

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as resp:
            return json.loads(resp.read())

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self.get("/api/v1/query", query=expr)
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    binary = _install_prometheus()
    if binary is None:
        pytest.skip("prometheus is not installed and cannot be installed here (apt-get install prometheus)")
    return binary


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels") or [])

    out = []
    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if expr:
                out.append((panel.get("title", "?"), expr))
    return out


def substitute(expr: str) -> str:
    """Grafana's variables as a dashboard user with 'All' destinations sees them."""
    return (
        expr.replace("${destination}", ".*")
        .replace("$destination", ".*")
        .replace("$__rate_interval", RATE_WINDOW)
        .replace("$__interval", "15s")
    )


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bstreamproc_[a-z_]+\b", expr))


async def test_dashboard_and_alert_queries_answer_plausibly(
    prometheus_binary: str, kafka_bootstrap: str, topic, sims, tmp_path: Path
) -> None:
    assert DASHBOARD.is_file() and ALERTS.is_file()
    source = topic("prom", partitions=3)
    dlq = topic("prom-dlq", partitions=1)
    group = unique_name("prom")
    a, b = sims
    metrics_port = free_port()
    cfg = write_config(
        tmp_path / "config.yaml",
        bootstrap=kafka_bootstrap,
        topic=source,
        dlq=dlq,
        group=group,
        url_a=a.base_url,
        url_b=b.base_url,
        metrics_port=metrics_port,
        attempts_a=10,  # more attempts than injected 503s: seg-a's deliveries all succeed in the end
    )
    # seg-a parks what its first attempt does not deliver, so the parking panels have data too.
    doc = yaml.safe_load(cfg.read_text())
    doc["destinations"][0]["limits"]["retry"].update(park_after_attempts=1, park_delay=0.5, park_delay_max=1)
    # Orders also go to TikTok in batches, and its first answers are partial successes: the batch panels.
    doc["destinations"].append(
        {
            "id": "tiktok",
            "type": "tiktok-offline-conversions",
            "settings": {"accessToken": "prom-token", "eventSetID": "7312"},
            "endpoint": a.base_url,
            "presets": False,
            "batch": {"max_events": 20, "max_wait_ms": 50},
            # withholds what TikTok would not match anyway, so the gates' panels have a filter's data
            "filters": [{"if": "event != 'Order Completed'", "drop": True}],
            "subscriptions": [
                {
                    "name": "Orders",
                    "trigger": 'event = "Order Completed"',
                    "action": "reportOfflineEvent",
                    "mapping": {"event": "CompletePayment"},
                }
            ],
        }
    )
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    a.fault("seg", sequence=[503] * 5, latency=2)  # a few retried server errors, then normal answers
    a.fault("tiktok", sequence=[{"status": 200, "code": 20001}] * 2)
    b.fault("seg", down=400, latency=2)  # every seg-b delivery is dead-lettered

    prom = Prometheus(prometheus_binary, tmp_path, f"127.0.0.1:{metrics_port}")
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamproc",
        "run",
        "--config",
        str(cfg),
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        await async_wait_until(prom.ready, timeout=60, interval=0.2, message="prometheus did not start")
        await async_wait_until(
            lambda: prom.value('up{job="streamproc"}') == 1,
            timeout=60,
            interval=0.5,
            message="prometheus cannot scrape the worker",
        )
        # Two waves of traffic with scrapes in between, so rates and quantiles have data to work on.
        injected = 0
        for wave in range(2):
            events = make_events(150, prefix=f"w{wave}")
            values = [orjson.dumps(e) for e in events] + [b"not json", b"[]"]
            produce(kafka_bootstrap, source, values, keys=[e["userId"] for e in events] + [None, None])
            injected += sum(1 for e in events if e["event"] == "Order Completed") + 2
            ends = end_offsets(kafka_bootstrap, source)
            await async_wait_until(
                lambda ends=ends: committed_offsets(kafka_bootstrap, group, source) == ends,
                timeout=90,
                interval=0.3,
                message="the worker did not finish the wave",
            )
            if wave == 0:
                await async_wait_until(
                    lambda: (prom.value("sum(streamproc_events_consumed_total)") or 0) >= 152,
                    timeout=30,
                    interval=0.5,
                )
                a.fault("seg", sequence=[503] * 5, latency=2)
        await asyncio.sleep(3)  # a few more scrapes of the final values

        # Panels: every query answers, with finite values.
        answers: dict[str, list[float]] = {}
        for title, expr in panel_queries():
            result = prom.query(substitute(expr))
            assert result, f"panel {title!r}: no data for {expr}"
            values = [float(r["value"][1]) for r in result]
            assert all(math.isfinite(v) for v in values), f"panel {title!r}: {values} for {expr}"
            answers.setdefault(title, []).extend(values)

        assert max(answers["Events consumed /s"]) > 0
        assert max(answers["Delivered /s per destination"]) > 0
        for title, values in answers.items():
            if "latency" in title.lower():
                assert all(0 < v <= 300 for v in values), (title, values)
        assert prom.value("sum(streamproc_dead_letters_total)") == injected
        assert prom.value(
            'sum(streamproc_deliveries_total{destination="seg-b", outcome="dead_lettered"})'
        ) == (injected - 4)
        assert answers["Workers ready"] == [1.0, 1.0]  # sum and count: the one worker is ready
        assert prom.value("sum(streamproc_assigned_partitions)") == 3
        assert prom.value('sum(streamproc_partner_responses_total{status_class="5xx"})') >= 10
        assert prom.value("sum(streamproc_partner_partial_successes_total)") == 2
        orders = 2 * 50  # every third event of each wave
        assert prom.value('sum(streamproc_batch_events_sum{destination="tiktok"})') == orders
        assert 0 < (prom.value('sum(streamproc_batch_events_count{destination="tiktok"})') or 0) < orders
        others = 2 * 150 - orders
        assert prom.value(
            'sum(streamproc_events_filtered_total{destination="tiktok", reason="filter_drop"})'
        ) == (others)

        # Alerts: every rule evaluates cleanly, its metrics exist, and the healthy-worker ones are quiet.
        series = {
            m["__name__"]
            for m in prom.get("/api/v1/series", **{"match[]": '{__name__=~"streamproc_.*"}'})["data"]
        }
        rules = alert_rules()
        assert rules
        for rule in rules:
            prom.query(rule["expr"])
            missing = metric_names(rule["expr"]) - series
            assert not missing, f"alert {rule['alert']} uses metrics the worker does not export: {missing}"
        for name in (
            "StreamprocWorkerNotReady",
            "StreamprocNoConsumption",
            "StreamprocConsumerLagGrowing",
            "StreamprocCircuitOpen",
        ):
            rule = next((r for r in rules if r["alert"] == name), None)
            if rule is not None:
                assert prom.query(rule["expr"]) == [], f"{name} fires for a healthy worker"
        loaded = prom.get("/api/v1/rules")["data"]["groups"]
        health = {r["name"]: (r["health"], r.get("lastError")) for g in loaded for r in g["rules"]}
        assert {r["alert"] for r in rules} <= set(health)
        assert all(h == "ok" for h, _err in health.values()), health
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(worker.wait(), 30)
            except TimeoutError:
                worker.kill()
        prom.stop()
