"""The one-command demo: a broker, the partner simulator, generated Segment events and a worker, live.

Everything runs in one process and one event loop except the broker: a local Apache Kafka
(streamproc.devtools.broker; Java and the broker's jars), or, where they are missing, librdkafka's
built-in mock cluster. The worker is the real `streamproc run` worker with every destination pointed at the
simulator, so /metrics, dead letters and offsets behave as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TextIO

from streamproc.devtools.broker import start_broker
from streamproc.devtools.demo.display import ProgressDisplay
from streamproc.devtools.demo.events import EventGenerator
from streamproc.devtools.demo.report import (
    DemoSummary,
    dead_letter_error_types,
    metric_totals,
    read_dead_letters,
)
from streamproc.devtools.simulator import Latency, PartnerSimulator

__all__ = ["DEFAULT_CONFIG", "DemoOptions", "run_demo", "write_config"]

DEFAULT_CONFIG = "config.yaml"
"""The demo's configuration, a resource of this package (so an installed copy or the image has it)."""


def _say(out: TextIO, text: str) -> None:
    print(text, file=out, flush=True)


# -- the run ---------------------------------------------------------------------------------------
@dataclass
class DemoOptions:
    """What `streamproc demo` was asked for."""

    events: int | None = None
    duration: float | None = None
    rate: float = 100.0
    bootstrap: str | None = None
    broker: Literal["auto", "local", "mock"] = "auto"
    config: Path | None = None
    """None: the packaged DEFAULT_CONFIG."""
    metrics_port: int = 0
    partitions: int = 3
    seed: int = 7
    poison_every: int = 50
    faults: bool = True
    out: TextIO = field(default_factory=lambda: sys.stderr)
    tty: bool | None = None
    workdir: Path | None = None
    """Where the run's configuration (and the local broker's data) go; None: a new temporary folder."""
    keep: bool = False
    """After the run, keep the broker and the simulator up until a stop signal (to try commands on them)."""


def _partner_weather(simulator: Any) -> None:
    """Real partners are neither instant nor always up: latency everywhere, a TikTok hiccup at first."""
    latency = Latency.uniform(5, 40)
    simulator.fault("stackadapt", latency=latency)
    simulator.fault("seg", latency=latency)
    simulator.fault("tiktok", sequence=[503] * 6 + ["reset", 429], retry_after=1, latency=latency)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Producer:
    """Produces the generated stream from a thread at a steady rate until the bound or a stop."""

    def __init__(self, bootstrap: str, topic: str, gen: EventGenerator, *, rate: float, limit: int | None):
        from confluent_kafka import Producer

        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 5,
                "enable.idempotence": True,
                "client.id": "streamproc-demo-producer",
                # Errors only: a just-started broker answers "coordinator load in progress" for a moment.
                "log_level": 3,
            }
        )
        self.topic, self.gen, self.rate, self.limit = topic, gen, rate, limit
        self.sent = 0
        self.failed = 0
        self.stopping = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="demo-producer", daemon=True)

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed += 1

    def _run(self) -> None:
        try:
            start = time.monotonic()
            while not self.stopping.is_set() and (self.limit is None or self.sent < self.limit):
                key, value = next(self.gen)
                while True:
                    try:
                        self.producer.produce(self.topic, value, key, on_delivery=self._on_delivery)
                        break
                    except BufferError:
                        self.producer.poll(0.05)
                self.sent += 1
                self.producer.poll(0)
                ahead = self.sent / self.rate - (time.monotonic() - start)
                if ahead > 0:
                    self.stopping.wait(ahead)
            self.producer.flush(30)
        finally:
            self.done.set()


def write_config(env: dict[str, str], path: Path) -> None:
    """The packaged demo configuration with every `${VAR}` filled in from `env`, written to `path`."""
    from streamproc.config import interpolate

    text = resources.files("streamproc.devtools.demo").joinpath(DEFAULT_CONFIG).read_text()
    filled, _problems = interpolate(text, env)  # problems surface when the file is loaded
    path.write_text(
        "# The configuration of one `streamproc demo` run, every value filled in: other commands\n"
        "# (dlq inspect, replay, retry inspect, send) can use it as it is.\n" + filled
    )


async def run_demo(options: DemoOptions, on_done: Callable[[DemoSummary], None] | None = None) -> DemoSummary:
    """Run the whole demo until its bound, a stop signal, or Ctrl-C; return the summary.

    `on_done` gets the summary while the broker and the simulator still run (with `keep`, until a
    stop signal after it)."""
    from streamproc.config import load_config
    from streamproc.runs.worker import Worker

    out = options.out
    loop = asyncio.get_running_loop()
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="streamproc-demo-"))
    broker = await loop.run_in_executor(
        None,
        lambda: start_broker(options.bootstrap, mode=options.broker, run_dir=workdir / "kafka", out=out),
    )
    simulator = PartnerSimulator(seed=options.seed)
    worker: Any = None
    producer: _Producer | None = None
    try:
        partner_url = await simulator.start("127.0.0.1", 0)
        if options.faults:
            _partner_weather(simulator)
        run_id = f"{int(time.time())}-{uuid.uuid4().hex[:6]}"
        topic, dlq_topic = f"demo-events-{run_id}", f"demo-events-{run_id}.dlq"
        port = options.metrics_port or _free_port()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "DEMO_TOPIC": topic,
            "DEMO_DLQ_TOPIC": dlq_topic,
            "DEMO_GROUP": f"streamproc-demo-{run_id}",
            "DEMO_PARTNER_URL": partner_url,
            "DEMO_METRICS_PORT": str(port),
        }
        if options.config is not None:
            config_path = options.config
        else:
            config_path = workdir / "config.yaml"
            write_config(env, config_path)
        config = load_config(config_path, env=env)
        await loop.run_in_executor(
            None, lambda: broker.create_topics({topic: options.partitions, dlq_topic: 1})
        )
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        summary = DemoSummary(broker.kind, broker.bootstrap, topic, dlq_topic, metrics_url)
        summary.partner_url = partner_url
        summary.config_path = str(config_path)
        _say(out, f"broker      {broker.bootstrap} ({broker.kind})")
        _say(
            out,
            f"partners    {partner_url} (simulated StackAdapt, TikTok, Seg; see {partner_url}/_sim/stats)",
        )
        parts = "" if broker.kind == "mock" else f" ({options.partitions} partitions)"
        _say(out, f"topics      {topic}{parts} -> dead letters {dlq_topic}")
        _say(out, f"metrics     {metrics_url}   health: http://127.0.0.1:{port}/readyz")
        if options.faults:
            _say(
                out,
                "faults      partners answer in 5-40 ms; TikTok starts with 503s, a reset, a 429 (retried)",
            )
        bound = []
        if options.events is not None:
            bound.append(f"{options.events} events")
        if options.duration is not None:
            bound.append(f"{options.duration:g}s")
        _say(out, f"running     {' or '.join(bound) or 'until Ctrl-C'} at ~{options.rate:g} events/s")

        worker = Worker(config)
        worker_task = asyncio.create_task(worker.run_async(), name="demo-worker")
        gen = EventGenerator(seed=options.seed, poison_every=options.poison_every)
        producer = _Producer(broker.bootstrap, topic, gen, rate=options.rate, limit=options.events)

        stop = asyncio.Event()
        interrupted = False

        def on_signal() -> None:
            nonlocal interrupted
            interrupted = True
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal)
        producer.thread.start()
        started = time.monotonic()
        display = ProgressDisplay(out, options.tty)
        try:
            while not stop.is_set() and not worker_task.done():
                totals = metric_totals(worker.metrics.registry)
                display.update(producer.sent, totals)
                elapsed = time.monotonic() - started
                if options.duration is not None and elapsed >= options.duration:
                    break
                if producer.done.is_set():
                    consumed = sum(totals["consumed"].values())
                    if consumed >= producer.sent and totals["in_flight"]["events"] == 0:
                        # Everything produced was consumed and finished; let one commit interval pass.
                        await asyncio.sleep(config.limits.commit_interval)
                        break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            producer.stopping.set()
            if interrupted:
                _say(
                    out,
                    "\nstopping: draining in-flight deliveries, committing offsets (Ctrl-C again: abort)",
                )
            # A second Ctrl-C during the drain aborts at once.
            loop.add_signal_handler(signal.SIGINT, lambda: worker_task.cancel())
            worker.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await worker_task
            loop.remove_signal_handler(signal.SIGINT)
            await loop.run_in_executor(None, producer.done.wait, 30)

        totals = metric_totals(worker.metrics.registry)
        display.update(producer.sent, totals, final=True)
        summary.seconds = round(time.monotonic() - started, 1)
        summary.interrupted = interrupted
        summary.produced = producer.sent
        summary.produced_by_kind = dict(sorted(gen.counts.items()))
        summary.consumed = sum(totals["consumed"].values())
        summary.delivered = dict(sorted(totals["delivered"].items()))
        summary.dead_lettered = dict(sorted(totals["dead_lettered"].items()))
        summary.skipped = dict(sorted(totals["skipped"].items()))
        summary.partner_requests = dict(sorted(totals["requests"].items()))
        letters = await loop.run_in_executor(None, read_dead_letters, broker.bootstrap, dlq_topic)
        summary.dead_letter_topic_records = len(letters)
        summary.dead_letter_error_types = dead_letter_error_types(letters)
        if not worker_task.cancelled() and worker_task.exception() is not None:
            raise worker_task.exception()  # type: ignore[misc]
        if on_done is not None:
            on_done(summary)
        if options.keep:
            await _until_stopped(loop)
        return summary
    finally:
        if producer is not None:
            producer.stopping.set()
        await simulator.stop()
        # Drop the worker's Kafka clients before the broker goes, so none of them logs a lost broker.
        worker = None
        producer = None
        gc.collect()
        await loop.run_in_executor(None, broker.stop)
        # The broker's data goes; the configuration stays for reference.
        shutil.rmtree(workdir / "kafka", ignore_errors=True)


async def _until_stopped(loop: asyncio.AbstractEventLoop) -> None:
    """Wait for Ctrl-C or SIGTERM."""
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
