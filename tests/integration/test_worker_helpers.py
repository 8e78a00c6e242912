"""Shared pieces of the worker's broker tests: events, configs, the predicted requests, a simulator
on its own thread, and the worker as a subprocess. Its own tests check the pieces."""

from __future__ import annotations

import asyncio
import collections
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import yaml
from kafka_helpers import committed_offsets, end_offsets, produce

from streamproc.config import load_config
from streamproc.devtools.simulator import PartnerSimulator, RecordedRequest

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")

RequestKey = tuple[str, str, bytes]
"""(method, path with query, body): what identifies a request for exactness checks."""


def templates() -> list[dict[str, Any]]:
    """The example events that are Segment events (the example file also holds poison lines)."""
    out = []
    for line in (REPO / "examples" / "events.jsonl").read_bytes().splitlines():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("messageId"):
            out.append(event)
    return out


def make_events(
    n: int,
    *,
    seed: int = 1,
    users: int = 200,
    weights: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """`n` events cloned from the example templates with unique messageIds and a pool of users.

    `weights` favours templates by type/event name (e.g. {"Order Completed": 5}).
    """
    rnd = random.Random(seed)
    base = templates()
    w = [(weights or {}).get(t.get("event") or t["type"], 1.0) for t in base]
    out = []
    for i in range(n):
        event = dict(rnd.choices(base, w)[0])
        event["messageId"] = f"m-{seed}-{i}"
        user = f"user-{rnd.randrange(users)}"
        if "userId" in event or rnd.random() < 0.5:
            event["userId"] = user
        event["anonymousId"] = f"anon-{user}"
        out.append(event)
    return out


def user_key(event: dict[str, Any]) -> bytes:
    """Kafka key: the ordering key, so one user's events share a partition."""
    return str(event.get("userId") or event.get("anonymousId")).encode()


def write_config(
    path: Path,
    *,
    bootstrap: str,
    topic: str,
    dlq: str,
    group: str,
    sim_url: str,
    limits: dict[str, Any] | None = None,
    destination_limits: dict[str, dict[str, Any]] | None = None,
    ordering: str = "key",
    metrics_port: int | None = None,
    client: dict[str, str] | None = None,
    destination_extra: dict[str, dict[str, Any]] | None = None,
    kafka_extra: dict[str, Any] | None = None,
) -> Path:
    """The example configuration pointed at the broker and the simulator (`destination_extra`: more
    keys per destination id, e.g. {"tiktok-offline": {"batch": {...}}}; `kafka_extra`: more keys
    of the `kafka` section)."""
    data = yaml.safe_load((REPO / "examples" / "config.yaml").read_text())
    data["kafka"] = {
        "bootstrap_servers": bootstrap,
        "topics": [topic],
        "group_id": group,
        "dead_letter_topic": dlq,
        "client": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500", **(client or {})},
        **(kafka_extra or {}),
    }
    data["limits"] = {"commit_interval": 0.5, "shutdown_timeout": 10, "revoke_timeout": 10, **(limits or {})}
    data["metrics"] = {"enabled": metrics_port is not None, "port": metrics_port or 9464, "host": "127.0.0.1"}
    data["log"] = {"format": "json", "level": "info"}
    for dest in data["destinations"]:
        # Literal settings: the test must not depend on the environment.
        dest["settings"] = {k: _env_default(v) for k, v in dest["settings"].items()}
        dest["endpoint"] = sim_url
        # The example caps TikTok at 200 requests/s; tests replace every destination's limits.
        dest["limits"] = (destination_limits or {}).get(dest["id"], {"concurrency": 64})
        if dest["id"] == "seg":
            dest["ordering"] = ordering
        dest.update((destination_extra or {}).get(dest["id"], {}))
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _env_default(value: Any) -> Any:
    if isinstance(value, str):
        m = re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-(.*)\}", value)
        if m:
            return m.group(1)
    return value


def request_key(method: str, url: str, body: bytes | None) -> RequestKey:
    rest = url.split("://", 1)[1]
    path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return method, path, body or b""


def predictor(config_path: Path) -> Callable[[dict[str, Any]], list[RequestKey]]:
    """The requests `streamproc send` predicts for one event, with the routing compiled once."""
    from streamproc.router import Router

    router = Router(load_config(config_path))

    def requests_of(event: dict[str, Any]) -> list[RequestKey]:
        return [
            request_key(req.method, req.url, req.body)
            for delivery in router.route(event)
            for req in delivery.requests
        ]

    return requests_of


def predict(config_path: Path, events: Iterable[dict[str, Any]]) -> collections.Counter[RequestKey]:
    """The requests `streamproc send` predicts for these events: what a clean run must send."""
    requests_of = predictor(config_path)
    out: collections.Counter[RequestKey] = collections.Counter()
    for event in events:
        out.update(requests_of(event))
    return out


def recorded(requests: Iterable[RecordedRequest]) -> collections.Counter[RequestKey]:
    return collections.Counter((r.method, r.raw_path, r.body) for r in requests)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    workers: list[WorkerProcess],
    interval: float = 0.5,
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {w.log} ---\n" + w.log_text()[-3000:] for w in workers)
            raise AssertionError(f"{what} not reached within {timeout}s\n{tails}")
        for w in workers:
            if not w.alive() and w.proc.returncode not in (0, -9):
                raise AssertionError(f"worker exited with {w.proc.returncode}\n{w.log_text()[-3000:]}")
        time.sleep(interval)


def fully_committed(bootstrap: str, group: str, topic: str) -> Callable[[], bool]:
    ends = end_offsets(bootstrap, topic)
    return lambda: committed_offsets(bootstrap, group, topic) == ends


def produce_events(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    produce(bootstrap, topic, [orjson.dumps(e) for e in events], keys=[user_key(e) for e in events])


class SimulatorThread:
    """A PartnerSimulator on its own event loop thread, so a test can drive subprocess workers."""

    def __init__(self, seed: int = 1) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="simulator", daemon=True)
        self._thread.start()
        self.sim: PartnerSimulator = self.call(self._make(seed))
        self.url: str = self.call(self.sim.start())

    @staticmethod
    async def _make(seed: int) -> PartnerSimulator:
        return PartnerSimulator(seed=seed)

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def run(self, fn: Callable[[], T]) -> T:
        async def wrapper() -> T:
            return fn()

        return self.call(wrapper())  # type: ignore[no-any-return]

    def requests(self) -> list[RecordedRequest]:
        return self.run(lambda: list(self.sim.requests))

    def count(self) -> int:
        return self.run(lambda: len(self.sim.requests))

    def take_requests(self) -> list[RecordedRequest]:
        """What the simulator recorded since the last take (its record is then cleared)."""

        def take() -> list[RecordedRequest]:
            batch = list(self.sim.requests)
            self.sim.clear_requests()
            return batch

        return self.run(take)

    def fault(self, partner: str, **kw: Any) -> None:
        self.run(lambda: self.sim.fault(partner, **kw))

    def clear_faults(self) -> None:
        self.run(self.sim.clear_faults)

    def stop(self) -> None:
        self.call(self.sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class WorkerProcess:
    """`python -m streamproc run --config FILE` as a child process, its stderr in a log file;
    `source`: the checkout whose `streamproc` it runs (another revision, for a comparison); `env`:
    more environment variables."""

    def __init__(
        self, config: Path, log: Path, source: Path = REPO, env: dict[str, str] | None = None
    ) -> None:
        self.log = log
        self.log_start = log.stat().st_size if log.exists() else 0
        self._log_file = log.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        if source != REPO:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamproc", "run", "--config", str(config)],
            stdout=self._log_file,
            stderr=self._log_file,
            env=env,
            cwd=source,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._log_file.close()

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log_file.close()
        return code

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def own_log(self) -> str:
        """What this process wrote to the log (a log file may hold earlier runs of the same slot)."""
        with self.log.open("rb") as f:
            f.seek(self.log_start)
            return f.read().decode(errors="replace")


def test_generated_events_are_unique_and_use_the_templates() -> None:
    events = make_events(300, seed=3)
    assert len({e["messageId"] for e in events}) == 300
    kinds = {e["type"] for e in events}
    assert {"track", "page", "identify"} <= kinds


def test_request_key_keeps_the_raw_query() -> None:
    assert request_key("GET", "http://127.0.0.1:1/saq_pxl?a=%2F&b=1", None) == (
        "GET",
        "/saq_pxl?a=%2F&b=1",
        b"",
    )
