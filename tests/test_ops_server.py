"""The operations server: Prometheus exposition, liveness from the heartbeat, readiness from the worker."""

from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yaml
from manual_clock import ManualClock
from prometheus_client.parser import text_string_to_metric_families

from streamproc.metrics import Metrics
from streamproc.ops_server import Health, OpsServer, Readiness


@dataclass(frozen=True)
class MetricsConfig:
    host: str = "127.0.0.1"
    port: int = 0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(100.0)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def server(metrics: Metrics, clock: ManualClock) -> AsyncIterator[OpsServer]:
    readiness = Readiness(clock=clock, gauge=metrics.ready)
    srv = OpsServer(MetricsConfig(), metrics.registry, readiness, Health(clock=clock))
    await srv.start()
    yield srv
    await srv.stop()


async def get(srv: OpsServer, path: str, **headers: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as s, s.get(f"{srv.url}{path}", headers=headers) as r:
        return r.status, r.headers["Content-Type"], await r.text()


async def test_metrics_exposes_the_worker_registry(server: OpsServer, metrics: Metrics) -> None:
    metrics.events_consumed.labels(topic="events").inc(3)
    metrics.deliveries.labels(destination="seg-1", action="track", outcome="delivered").inc()
    status, ctype, body = await get(server, "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body)}
    consumed = families["streamproc_events_consumed"].samples
    assert any(s.labels == {"topic": "events"} and s.value == 3 for s in consumed)
    assert "streamproc_deliveries" in families


async def test_metrics_speaks_openmetrics_when_asked(server: OpsServer) -> None:
    status, ctype, body = await get(server, "/metrics", Accept="application/openmetrics-text; version=1.0.0")
    assert status == 200
    assert ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")


async def test_healthz_follows_the_heartbeat(server: OpsServer, clock: ManualClock) -> None:
    assert (await get(server, "/healthz"))[0] == 200
    clock.now += 30  # no heartbeat for 30 s: the loop is stuck
    status, _, body = await get(server, "/healthz")
    assert status == 503 and "heartbeat" in body
    server.health.beat()
    assert (await get(server, "/healthz"))[0] == 200


async def test_healthz_fails_after_a_long_block_or_a_fatal_error(server: OpsServer) -> None:
    server.health.beat(lag=25.0)
    assert (await get(server, "/healthz"))[0] == 503
    server.health.beat(lag=0.0)
    server.health.fail("consumer loop stopped")
    status, _, body = await get(server, "/healthz")
    assert status == 503 and "consumer loop stopped" in body


async def test_heartbeat_task_keeps_ticking() -> None:
    health = Health(interval=0.01)
    task = asyncio.create_task(health.run())
    before = health.last_beat
    await asyncio.sleep(0.1)
    task.cancel()
    assert health.last_beat > before


async def test_readyz_needs_assignment_polling_and_dead_letter_producer(
    server: OpsServer, clock: ManualClock, metrics: Metrics
) -> None:
    r = server.readiness
    status, _, body = await get(server, "/readyz")
    assert status == 503 and "assignment" in body
    r.set_assignment(3)
    r.polled()
    status, _, body = await get(server, "/readyz")
    assert status == 200 and '"assigned_partitions": 3' in body
    assert metrics.ready._value.get() == 1

    r.set_dlq(False, "dead-letter topic not writable")
    status, _, body = await get(server, "/readyz")
    assert status == 503 and "not writable" in body
    assert metrics.ready._value.get() == 0
    r.set_dlq(True)

    clock.now += 60  # consumer stopped polling
    assert (await get(server, "/readyz"))[0] == 503
    r.polled()
    assert (await get(server, "/readyz"))[0] == 200
    r.set_stopping()
    assert (await get(server, "/readyz"))[0] == 503


async def test_an_empty_assignment_still_counts_as_joined(server: OpsServer) -> None:
    # More workers than partitions: an idle member must not block a rolling deploy.
    server.readiness.set_assignment(0)
    server.readiness.polled()
    assert (await get(server, "/readyz"))[0] == 200


async def test_ready_gauge_follows_polling_without_anyone_asking(
    clock: ManualClock, metrics: Metrics
) -> None:
    r = Readiness(clock=clock, gauge=metrics.ready)
    r.set_assignment(2)
    assert metrics.ready._value.get() == 0  # joined, but not consuming yet
    r.polled()
    assert metrics.ready._value.get() == 1
    clock.now += 60
    r._publish()  # what the heartbeat does every second
    assert metrics.ready._value.get() == 0


async def test_a_blocked_event_loop_fails_the_liveness_probe_with_an_answer(
    server: OpsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The probe is answered on the server's own thread even while the loop is stuck (CPU-bound
    # work), so Kubernetes sees a 503 rather than a hung connection; the loop answers again after.
    monkeypatch.setattr(OpsServer, "ANSWER_TIMEOUT", 0.2)
    answers: list[int] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(f"{server.url}/healthz", timeout=10)
            answers.append(200)
        except urllib.error.HTTPError as exc:
            answers.append(exc.code)

    prober = threading.Thread(target=probe)
    prober.start()
    prober.join(10)  # a synchronous wait: the event loop is blocked until the probe is answered
    assert answers == [503]
    assert (await get(server, "/healthz"))[0] == 200
    assert (await get(server, "/nothing-here"))[0] == 404


async def test_a_head_request_gets_the_status_without_a_body(server: OpsServer, clock: ManualClock) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.head(f"{server.url}/healthz") as r:
            assert r.status == 200 and await r.read() == b""
        clock.now += 30
        async with s.head(f"{server.url}/healthz") as r:
            assert r.status == 503


def test_a_blocked_loop_is_answered_within_the_charts_probe_timeouts() -> None:
    # Otherwise the kubelet gives up first and sees a timeout, not the 503 that says why.
    values = yaml.safe_load((Path(__file__).parents[1] / "deploy/helm/streamproc/values.yaml").read_text())
    for probe in ("livenessProbe", "readinessProbe"):
        assert values[probe]["timeoutSeconds"] > OpsServer.ANSWER_TIMEOUT
