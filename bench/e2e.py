"""End-to-end worker benchmark: events/s per core and latency through the real broker to the simulator.

    .venv/bin/python bench/e2e.py [--events 20000] [--latency-events 5000] [--rate 1000]
                                  [--mix stackadapt,tiktok] [--bootstrap HOST:PORT]

For each event mix (StackAdapt-heavy: page views and product views; TikTok-heavy: orders and carts)
it prints, measured in the same run on the same machine:
  raw consume+decode   a bare confluent-kafka consumer decoding every message (the input ceiling)
  raw HTTP             one aiohttp session sending the predicted requests to the simulator (output ceiling)
  naive                poll one message, await its POSTs one by one, commit it
  streamproc           `streamproc run` as a process: backlog drain rate, CPU-seconds, and the
                       produce-to-partner latency p50/p99 at a steady produce rate
The simulator runs as its own process (`streamproc simulate`), so it does not share the worker's core.
Without --bootstrap (or KAFKA_BOOTSTRAP_SERVERS) a local broker is started with scripts/kafka-local.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamproc.config import load_config
from streamproc.core.events import decode_json
from streamproc.router import Router

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4

MIXES: dict[str, dict[str, float]] = {
    # weights by event name (track) or call type
    "stackadapt": {
        "page": 6,
        "identify": 2,
        "Product Viewed": 3,
        "Product List Viewed": 2,
        "Order Completed": 0.3,
    },
    "tiktok": {"Order Completed": 5, "Product Added": 4, "Checkout Started": 3, "page": 0.5, "identify": 0.5},
}


# -- inputs ---------------------------------------------------------------------------------------
def templates() -> list[dict[str, Any]]:
    out = []
    for line in (ROOT / "examples" / "events.jsonl").read_bytes().splitlines():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("messageId"):
            out.append(event)
    return out


def make_events(n: int, weights: dict[str, float], seed: int, prefix: str) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    base = templates()
    w = [weights.get(t.get("event") or t["type"], 0.2) for t in base]
    out = []
    for i in range(n):
        event = dict(rnd.choices(base, w)[0])
        event["messageId"] = f"{prefix}-{i}"
        user = f"user-{rnd.randrange(5000)}"
        event["userId"] = user
        event["anonymousId"] = f"anon-{user}"
        out.append(event)
    return out


def write_config(path: Path, bootstrap: str, topic: str, dlq: str, group: str, sim_url: str) -> Path:
    data = yaml.safe_load((ROOT / "examples" / "config.yaml").read_text())
    data["kafka"] = {
        "bootstrap_servers": bootstrap,
        "topics": [topic],
        "group_id": group,
        "dead_letter_topic": dlq,
    }
    data["metrics"] = {"enabled": False}
    data["log"] = {"format": "json", "level": "warning"}
    for dest in data["destinations"]:
        dest["endpoint"] = sim_url
        dest["limits"] = {"concurrency": 64}  # no rate limit: measure the worker, not the configured cap
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# -- kafka ------------------------------------------------------------------------------------------
def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the result is in
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(30)
    time.sleep(1.0)


def produce(
    bootstrap: str, topic: str, values: list[bytes], keys: list[bytes], rate: float | None = None
) -> list[float]:
    """Produce; returns the wall time each message was handed to the producer."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "enable.idempotence": True})
    sent_at: list[float] = []
    started = time.time()
    for i, (value, key) in enumerate(zip(values, keys, strict=True)):
        if rate:
            delay = started + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
        sent_at.append(time.time())
        producer.poll(0)
    producer.flush(60)
    return sent_at


def committed_all(bootstrap: str, group: str, topic: str) -> bool:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = c.committed(tps, timeout=10)
        for tp in committed:
            _, high = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            if tp.offset < high:
                return False
        return True
    finally:
        c.close()


def raw_consume_decode(bootstrap: str, topic: str, n: int) -> float:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen = 0
    started = None
    while seen < n:
        batch = c.consume(500, 1.0)
        if started is None and batch:
            started = time.perf_counter()
        for msg in batch:
            if msg.error() is None:
                decode_json(msg.value())
                seen += 1
    elapsed = time.perf_counter() - (started or time.perf_counter())
    c.close()
    return n / elapsed


# -- HTTP ---------------------------------------------------------------------------------------------
async def raw_http(requests: list[Any], concurrency: int = 64) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = list(reversed(requests))

        async def one_worker() -> None:
            from yarl import URL

            while queue:
                req = queue.pop()
                async with session.request(
                    req.method, URL(req.url, encoded=True), headers=dict(req.headers), data=req.body
                ) as resp:
                    await resp.read()

        started = time.perf_counter()
        await asyncio.gather(*(one_worker() for _ in range(concurrency)))
        return len(requests) / (time.perf_counter() - started)


async def naive(bootstrap: str, topic: str, router: Router, n: int, time_limit: float = 20.0) -> float:
    """Poll one, send its requests one at a time, commit it: the simplest correct worker."""
    from yarl import URL

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"naive-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    done = 0
    started = None
    async with aiohttp.ClientSession() as session:
        while done < n:
            msg = c.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            if started is None:
                started = time.perf_counter()
            for d in router.route(decode_json(msg.value())):
                for req in d.requests:
                    async with session.request(
                        req.method, URL(req.url, encoded=True), headers=dict(req.headers), data=req.body
                    ) as resp:
                        await resp.read()
            c.commit(message=msg, asynchronous=False)
            done += 1
            if time.perf_counter() - started > time_limit:
                break
    c.close()
    return done / (time.perf_counter() - (started or time.perf_counter()))


# -- the worker ---------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sim_stats(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(f"{url}/_sim/stats", timeout=10) as resp:
        return int(orjson.loads(resp.read())["total"])


def sim_requests(url: str, since: int = 0) -> list[dict[str, Any]]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/_sim/requests?since={since}", timeout=60) as resp:
        return orjson.loads(resp.read())  # type: ignore[no-any-return]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_mix(
    name: str, args: argparse.Namespace, bootstrap: str, sim_url: str, sim_pid: int, work: Path
) -> dict[str, Any]:
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    topic, dlq, group = f"bench-{tag}", f"bench-{tag}-dlq", f"bench-{tag}"
    create_topic(bootstrap, topic, PARTITIONS)
    create_topic(bootstrap, dlq, 1)
    events = make_events(args.events, MIXES[name], seed=1, prefix=f"{tag}-b")
    values = [orjson.dumps(e) for e in events]
    keys = [e["userId"].encode() for e in events]
    produce(bootstrap, topic, values, keys)
    config = write_config(work / f"{tag}.yaml", bootstrap, topic, dlq, group, sim_url)
    router = Router(load_config(config))
    requests = [r for e in events for d in router.route(e) for r in d.requests]
    by_partner: dict[str, int] = defaultdict(int)
    for r in requests:
        by_partner[r.url.split("?")[0].split("/")[3]] += 1

    out: dict[str, Any] = {
        "mix": name,
        "events": len(events),
        "requests": len(requests),
        "by_path": dict(by_partner),
    }
    out["raw_consume_decode"] = raw_consume_decode(bootstrap, topic, len(events))
    out["raw_http"] = asyncio.run(raw_http(requests[: min(len(requests), 20000)]))
    out["naive"] = asyncio.run(naive(bootstrap, topic, router, min(2000, len(events))))

    # Backlog drain: the worker starts with every event waiting.
    before = sim_stats(sim_url)
    log = (work / f"{tag}.log").open("ab")
    worker = subprocess.Popen(
        [sys.executable, "-m", "streamproc", "run", "--config", str(config)], stdout=log, stderr=log, cwd=ROOT
    )
    try:
        while sim_stats(sim_url) == before:
            time.sleep(0.01)
        started = time.perf_counter()
        cpu0 = cpu_seconds(worker.pid)
        sim_cpu0 = cpu_seconds(sim_pid)
        while sim_stats(sim_url) < before + len(requests):
            if worker.poll() is not None:
                raise SystemExit(f"worker exited with {worker.returncode}; see {log.name}")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(worker.pid) - cpu0
        out["simulator_cpu_util"] = (cpu_seconds(sim_pid) - sim_cpu0) / elapsed
        out["worker_events_per_s"] = len(events) / elapsed
        out["worker_events_per_cpu_s"] = len(events) / cpu
        out["worker_cpu_util"] = cpu / elapsed

        # Latency at a steady rate: produce-time to the partner receiving the request.
        while not committed_all(bootstrap, group, topic):
            time.sleep(0.2)
        mark = sim_stats(sim_url)
        steady = make_events(args.latency_events, MIXES[name], seed=2, prefix=f"{tag}-l")
        rate = args.rate or max(10.0, out["worker_events_per_s"] / 2)
        out["latency_rate"] = rate
        sent_at = produce(
            bootstrap,
            topic,
            [orjson.dumps(e) for e in steady],
            [e["userId"].encode() for e in steady],
            rate,
        )
        key_time: dict[tuple[str, str, bytes], float] = {}
        expected = 0
        for e, t in zip(steady, sent_at, strict=True):
            for d in router.route(e):
                for r in d.requests:
                    path = "/" + r.url.split("://", 1)[1].split("/", 1)[1]
                    key_time[(r.method, path, r.body or b"")] = t
                    expected += 1
        while sim_stats(sim_url) < mark + expected:
            time.sleep(0.05)
        latencies = []
        for rec in sim_requests(sim_url, since=mark):
            body = base64.b64decode(rec["body_base64"])
            path = rec["path"] + ("?" + rec["query"] if rec["query"] else "")
            t = key_time.get((rec["method"], path, body))
            if t is not None:
                latencies.append(rec["received_at"] - t)
        out["latency_p50_ms"] = percentile(latencies, 0.5) * 1000
        out["latency_p99_ms"] = percentile(latencies, 0.99) * 1000
        out["latency_samples"] = len(latencies)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        log.close()
    return out


def start_broker(work: Path) -> tuple[str, Path | None]:
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        return env, None
    run_dir = work / "kafka"
    proc = subprocess.run(
        # --watch-pid: the broker stops with this process, however it ends.
        [
            str(ROOT / "scripts" / "kafka-local"),
            "start",
            "--dir",
            str(run_dir),
            "--watch-pid",
            str(os.getpid()),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return proc.stdout.strip().splitlines()[-1], run_dir


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20000, help="backlog events per mix")
    parser.add_argument(
        "--latency-events", type=int, default=5000, help="events produced at --rate for latency"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="events/s for the latency phase (default: half the drain rate)",
    )
    parser.add_argument("--mix", default="stackadapt,tiktok")
    parser.add_argument("--bootstrap", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="streamproc-bench-"))
    if args.bootstrap:
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = args.bootstrap
    bootstrap, run_dir = start_broker(work)
    sim = subprocess.Popen(
        [sys.executable, "-m", "streamproc", "simulate", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert sim.stdout is not None
    sim_url = sim.stdout.readline().strip()
    print(f"broker {bootstrap}, simulator {sim_url}, {os.cpu_count()} cores, work dir {work}")
    try:
        for name in args.mix.split(","):
            r = run_mix(name.strip(), args, bootstrap, sim_url, sim.pid, work)
            print(
                f"\n== {r['mix']}-heavy mix: {r['events']} events -> {r['requests']} requests {r['by_path']}"
            )
            print(f"  raw consume+decode   {r['raw_consume_decode']:>9,.0f} events/s")
            print(
                f"  raw HTTP (aiohttp)   {r['raw_http']:>9,.0f} requests/s "
                f"(= {r['raw_http'] * r['events'] / r['requests']:,.0f} events/s at this mix)"
            )
            print(f"  naive poll/POST/commit {r['naive']:>7,.0f} events/s")
            print(
                f"  streamproc run       {r['worker_events_per_s']:>9,.0f} events/s wall, "
                f"{r['worker_events_per_cpu_s']:,.0f} events per CPU-second "
                f"(worker CPU {r['worker_cpu_util']:.0%}, simulator CPU {r['simulator_cpu_util']:.0%})"
            )
            print(
                f"  latency at {r['latency_rate']:,.0f} events/s: p50 {r['latency_p50_ms']:.1f} ms, "
                f"p99 {r['latency_p99_ms']:.1f} ms ({r['latency_samples']} requests)"
            )
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(30)
        if run_dir is not None:
            subprocess.run(
                [str(ROOT / "scripts" / "kafka-local"), "stop", "--dir", str(run_dir)], capture_output=True
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
