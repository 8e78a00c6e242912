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
# Grafana's $__rate_interval as the test sets it: wide enough to hold all of the test's traffic, so a
# destination whose last delivery came early (its deliveries all finished in the first wave, on a busy
# machine more than a minute before the queries) still has a rate, and its quantiles are numbers,
# not the NaN of a quantile over no observations.
RATE_WINDOW = "10m"


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
    """A Prometheus server in a temporary directory, and its HTTP query API.

    `jobs`: job name -> (target, namespace): each a deployment as the Prometheus Operator labels it."""

    def __init__(self, binary: str, workdir: Path, jobs: dict[str, tuple[str, str]]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        rules = workdir / "alerts.yaml"
        shutil.copy(ALERTS, rules)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [{"targets": [target], "labels": {"namespace": namespace}}],
                }
                for job, (target, namespace) in jobs.items()
            ],
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


def substitute(expr: str, namespace: str = ".*", job: str = ".*") -> str:
    """Grafana's variables as a dashboard user sees them: one deployment chosen (or All), all
    destinations."""
    return (
        expr.replace("${destination}", ".*")
        .replace("$destination", ".*")
        .replace("$namespace", namespace)
        .replace("$job", job)
        .replace("$__rate_interval", RATE_WINDOW)
        .replace("$__interval", "15s")
    )


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bstreamproc_[a-z_]+\b", expr))


# Two deployments scraped by one Prometheus, as the Prometheus Operator labels them.
JOB_A, NS_A = "streamproc-a", "data-a"
JOB_B, NS_B = "streamproc-b", "data-b"


async def start_worker(cfg: Path, log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamproc",
        "run",
        "--config",
        str(cfg),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


async def test_dashboard_and_alert_queries_answer_plausibly_and_keep_deployments_apart(
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
    # The second deployment: its own topic, group and destination, a little traffic of its own.
    source_b = topic("prom-b", partitions=1)
    dlq_b = topic("prom-b-dlq", partitions=1)
    group_b = unique_name("prom-b")
    metrics_port_b = free_port()
    doc_b = yaml.safe_load(cfg.read_text())
    doc_b["kafka"].update(topics=[source_b], dead_letter_topic=dlq_b, group_id=group_b)
    doc_b["metrics"]["port"] = metrics_port_b
    seg_c = dict(doc_b["destinations"][0], id="seg-c")
    seg_c["limits"] = {**seg_c["limits"], "retry": {"max_attempts": 10}}
    doc_b["destinations"] = [seg_c]
    cfg_b = tmp_path / "config-b.yaml"
    cfg_b.write_text(yaml.safe_dump(doc_b, sort_keys=False))
    # Input and dead-letter topics, and the retry topics (<group>.retry.<destination>) of each.
    topics = {JOB_A: ({source, dlq}, f"{group}.retry."), JOB_B: ({source_b, dlq_b}, f"{group_b}.retry.")}
    destinations = {JOB_A: {"seg-a", "seg-b", "tiktok", ""}, JOB_B: {"seg-c", ""}}

    a.fault("seg", sequence=[503] * 5, latency=2)  # a few retried server errors, then normal answers
    a.fault("tiktok", sequence=[{"status": 200, "code": 20001}] * 2)
    b.fault("seg", down=400, latency=2)  # every seg-b delivery is dead-lettered

    prom = Prometheus(
        prometheus_binary,
        tmp_path,
        {JOB_A: (f"127.0.0.1:{metrics_port}", NS_A), JOB_B: (f"127.0.0.1:{metrics_port_b}", NS_B)},
    )
    worker = await start_worker(cfg, tmp_path / "worker.log")
    worker_b = await start_worker(cfg_b, tmp_path / "worker-b.log")
    try:
        await async_wait_until(prom.ready, timeout=60, interval=0.2, message="prometheus did not start")
        await async_wait_until(
            lambda: prom.value(f'up{{job="{JOB_A}"}}') == 1 and prom.value(f'up{{job="{JOB_B}"}}') == 1,
            timeout=60,
            interval=0.5,
            message="prometheus cannot scrape the workers",
        )
        events_b = make_events(30, prefix="b")
        values_b = [orjson.dumps(e) for e in events_b] + [b"not json"]
        produce(kafka_bootstrap, source_b, values_b)
        ends_b = end_offsets(kafka_bootstrap, source_b)
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
                    lambda: (
                        (prom.value(f'sum(streamproc_events_consumed_total{{job="{JOB_A}"}})') or 0) >= 152
                    ),
                    timeout=30,
                    interval=0.5,
                )
                a.fault("seg", sequence=[503] * 5, latency=2)
        await async_wait_until(
            lambda: committed_offsets(kafka_bootstrap, group_b, source_b) == ends_b,
            timeout=90,
            interval=0.3,
            message="the second deployment did not finish its events",
        )
        await asyncio.sleep(3)  # a few more scrapes of the final values

        # Panels: every query answers for the first deployment, with finite values; scoped to one
        # deployment, no series of the other shows (its topics and destinations differ).
        answers: dict[str, list[float]] = {}
        for title, expr in panel_queries():
            result = prom.query(substitute(expr, NS_A, JOB_A))
            assert result, f"panel {title!r}: no data for {expr}"
            values = [float(r["value"][1]) for r in result]
            assert all(math.isfinite(v) for v in values), f"panel {title!r}: {values} for {expr}"
            answers.setdefault(title, []).extend(values)
            for job, namespace in ((JOB_A, NS_A), (JOB_B, NS_B)):
                for series in prom.query(substitute(expr, namespace, job)):
                    labels = series["metric"]
                    names, retry_prefix = topics[job]
                    if "topic" in labels:
                        assert labels["topic"] in names or labels["topic"].startswith(retry_prefix), (
                            title,
                            job,
                            labels,
                        )
                    assert labels.get("destination", "") in destinations[job], (title, job, labels)
        # Per deployment, the answers are that deployment's own; all deployments together add up.
        ready = next(expr for title, expr in panel_queries() if title == "Workers ready")
        assert [float(r["value"][1]) for r in prom.query(substitute(ready, NS_B, JOB_B))] == [1.0]
        assert prom.value(substitute(ready)) == 2.0
        dead_letters = 'sum(streamproc_dead_letters_total{namespace=~"$namespace", job=~"$job"})'
        assert prom.value(substitute(dead_letters, NS_B, JOB_B)) == 1
        assert prom.value(substitute(dead_letters)) == prom.value(substitute(dead_letters, NS_A, JOB_A)) + 1

        assert max(answers["Events consumed /s"]) > 0
        assert max(answers["Delivered /s per destination"]) > 0
        for title, values in answers.items():
            if "latency" in title.lower():
                assert all(0 < v <= 300 for v in values), (title, values)
        assert prom.value(f'sum(streamproc_dead_letters_total{{job="{JOB_A}"}})') == injected
        assert prom.value(
            'sum(streamproc_deliveries_total{destination="seg-b", outcome="dead_lettered"})'
        ) == (injected - 4)
        assert answers["Workers ready"] == [1.0, 1.0]  # sum and count: the deployment's one worker is ready
        assert prom.value(f'sum(streamproc_assigned_partitions{{job="{JOB_A}"}})') == 3
        # The worker's process metrics are exported too.
        assert (prom.value(f'process_resident_memory_bytes{{job="{JOB_A}"}}') or 0) > 10_000_000
        assert (prom.value(f'rate(process_cpu_seconds_total{{job="{JOB_A}"}}[{RATE_WINDOW}])') or 0) > 0
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
        for w in (worker, worker_b):
            if w.returncode is None:
                w.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(w.wait(), 30)
                except TimeoutError:
                    w.kill()
        prom.stop()
