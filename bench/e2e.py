"""End-to-end worker benchmark: events and requests per worker CPU-second beside the same run's raw limits.

    .venv/bin/python -m bench.e2e [--events 20000] [--latency-events 5000] [--rate N]
                                  [--mix stackadapt,tiktok] [--bootstrap HOST:PORT]
                                  [--baseline REV|PATH] [--http-client aiohttp,pyreqwest]
                                  [--tiktok-batch N] [--one-destination] [--rounds N] [--json PATH|-]

For each event mix (StackAdapt-heavy: page views and product views, one GET each; TikTok-heavy:
orders and carts) it prints, measured in the same run on the same machine:
  raw consume+decode   a bare confluent-kafka consumer decoding every message (the input ceiling)
  raw HTTP             a bare client (aiohttp; pyreqwest when installed) sending the requests the
                       worker sends, 64 in flight, in its own process on the worker's core: requests/s
                       and CPU per request (the output ceiling)
  naive                poll one message, await its requests one by one, commit it
  streamproc           `streamproc run` as a process: backlog drain rate, events and requests per
                       worker CPU-second, worker CPU per request over the bare client's, the share of
                       its core it used and its peak RSS while draining, and the produce-to-partner
                       latency p50/p99 at half the drain rate, with the worker's own share of it
                       (consumed to delivered, from its metrics)
The partner side of the throughput phases is the Go sink in bench/sink/ (built into .cache/ on first
use; it answers each partner's success shape and counts requests and TikTok items, so the run checks
that every expected request arrived). The Python simulator (`streamproc simulate`) stays the tool for
correctness and faults. Where taskset exists the worker (and the bare clients) run on one core, and
the sink, the broker and this process (the producer of the latency phase) on the others, so the
worker's core is its own. Worker CPU is the worker process's own (all its threads), read
from /proc; the broker and the sink are not in it.

--baseline REV checks REV out into a temporary git worktree (or takes a source directory) and runs
that revision's worker with this venv, PYTHONPATH pointing at its source, against the same broker and
sink, next to the current one. --http-client and --tiktok-batch add worker variants with the config
keys `http: {client: ...}` and, on the TikTok destination, `batch: {max_events, max_wait_ms}`; a
revision whose config check rejects a key shows the variant as not available. --one-destination adds
variants configured with the mix's own partner only (StackAdapt or TikTok), the other two removed.
Without --bootstrap (or KAFKA_BOOTSTRAP_SERVERS) a local broker is started with scripts/kafka-local.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from bench.gosink import pinned, sink_record, sink_requests, sink_stats, start_sink
from bench.suite import templates
from streamproc.config import load_config
from streamproc.core.events import decode_json
from streamproc.router import Router

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4
CONCURRENCY = 64  # in flight per destination, for the worker and the bare clients alike
STALL_SECONDS = 30.0  # no new request for this long: the phase is reported incomplete

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
# The one destination a mix keeps in the --one-destination variants: (destination id, partner).
MIX_DESTINATION = {"stackadapt": ("stackadapt", "stackadapt"), "tiktok": ("tiktok-offline", "tiktok")}

# The worker is started through this so that its own log says which source it imported: a baseline
# run must not silently measure the installed (current) package.
WORKER_PRELUDE = (
    "import runpy, sys, streamproc; "
    "print('streamproc imported from', streamproc.__file__, file=sys.stderr, flush=True); "
    "runpy.run_module('streamproc', run_name='__main__', alter_sys=True)"
)


# -- inputs ---------------------------------------------------------------------------------------
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


def base_config(bootstrap: str, topics: list[str], dlq: str, group: str, sink_url: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "config.yaml").read_text())
    data["kafka"] = {
        "bootstrap_servers": bootstrap,
        "topics": topics,
        "group_id": group,
        "dead_letter_topic": dlq,
    }
    # Served on a free port: the latency phase reads the worker's own consumed-to-delivered histogram.
    data["metrics"] = {"enabled": True, "port": free_port()}
    data["log"] = {"format": "json", "level": "warning"}
    for dest in data["destinations"]:
        dest["endpoint"] = sink_url
        # No rate limit: measure the worker, not the configured cap.
        dest["limits"] = {"concurrency": CONCURRENCY}
    return data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def delivery_buckets(port: int) -> dict[float, float]:
    """The worker's consumed-to-delivered histogram (all destinations): upper bound -> count."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[float, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        if family.name == "streamproc_delivery_duration_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    out[float(sample.labels["le"])] += sample.value
    return dict(out)


def bucket_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float | None:
    """The q-quantile of what was observed between two reads, interpolated within its bucket
    (as Prometheus' histogram_quantile does); None when nothing was."""
    counts = sorted((le, after.get(le, 0.0) - before.get(le, 0.0)) for le in after)
    total = counts[-1][1] if counts else 0.0
    if total <= 0:
        return None
    lower, below = 0.0, 0.0
    for le, cumulative in counts:
        if cumulative >= q * total:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (q * total - below) / max(cumulative - below, 1e-9)
        lower, below = le, cumulative
    return lower


# -- worker variants --------------------------------------------------------------------------------
def default_client(source: Path) -> str:
    """The HTTP client a revision's worker uses when its config names none (the seam and its
    pyreqwest default came with streamproc/client.py; before it, aiohttp)."""
    return "pyreqwest" if (source / "streamproc" / "client.py").exists() else "aiohttp"


@dataclass(frozen=True)
class Variant:
    """One worker configuration: which source runs it and which optional config keys it gets."""

    revision: str  # "current" or the baseline's name
    source: Path
    http_client: str | None = None
    tiktok_batch: int | None = None
    batch_wait_ms: float = 20.0
    mixes: frozenset[str] | None = None  # None: every mix
    one_destination: bool = False  # only the mix's own partner is configured

    @property
    def label(self) -> str:
        parts = ["one destination"] if self.one_destination else []
        if self.http_client:
            parts.append(f"http={self.http_client}")
        if self.tiktok_batch:
            parts.append(f"tiktok-batch={self.tiktok_batch}")
        return f"{self.revision} {' '.join(parts) or 'default'}"

    def apply(self, config: dict[str, Any], mix: str) -> dict[str, Any]:
        out = copy.deepcopy(config)
        if self.one_destination:
            keep = MIX_DESTINATION[mix][0]
            out["destinations"] = [d for d in out["destinations"] if d["id"] == keep]
        if self.http_client:
            out["http"] = {"client": self.http_client}
        if self.tiktok_batch:
            for dest in out["destinations"]:
                if dest["type"] == "tiktok-offline-conversions":
                    dest["batch"] = {"max_events": self.tiktok_batch, "max_wait_ms": self.batch_wait_ms}
        return out


def variants(args: argparse.Namespace, baseline: tuple[str, Path] | None) -> list[Variant]:
    revisions = [("current", ROOT)] + ([baseline] if baseline else [])
    clients = [c.strip() for c in args.http_client.split(",") if c.strip()] if args.http_client else []
    out: list[Variant] = []
    for name, source in revisions:
        out.append(Variant(name, source))
        if args.one_destination:
            out.append(Variant(name, source, one_destination=True))
    for name, source in revisions:
        for client in clients:
            out.append(Variant(name, source, http_client=client))
        if args.tiktok_batch:
            tiktok = frozenset({"tiktok"})
            wait = args.tiktok_batch_wait_ms
            out.append(
                Variant(name, source, tiktok_batch=args.tiktok_batch, batch_wait_ms=wait, mixes=tiktok)
            )
            for client in clients:
                out.append(
                    Variant(
                        name,
                        source,
                        http_client=client,
                        tiktok_batch=args.tiktok_batch,
                        batch_wait_ms=wait,
                        mixes=tiktok,
                    )
                )
    return out


def prepare_baseline(spec: str, work: Path) -> tuple[str, Path, Path | None]:
    """(name, source root, worktree to remove) for a revision or a source directory."""
    given = Path(spec)
    if (given / "streamproc" / "__init__.py").exists():
        return f"baseline {given.name}", given.resolve(), None
    rev = subprocess.run(
        ["git", "rev-parse", "--short", f"{spec}^{{commit}}"], cwd=ROOT, capture_output=True, text=True
    )
    if rev.returncode != 0:
        raise SystemExit(f"--baseline {spec}: neither a source directory nor a git revision")
    tree = work / "baseline"
    proc = subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), spec], cwd=ROOT, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"git worktree add {spec} failed: {proc.stderr.strip()}")
    return f"baseline {rev.stdout.strip()}", tree, tree


# -- kafka ------------------------------------------------------------------------------------------
def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the result is in
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(30)
    time.sleep(1.0)


def delete_topics(bootstrap: str, names: list[str]) -> None:
    if not names:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(names).values():
        with contextlib.suppress(Exception):
            future.result(30)


def produce(
    bootstrap: str, topic: str, values: list[bytes], keys: list[bytes], rate: float | None = None
) -> list[float]:
    """Produce; returns the wall time each message was handed to the producer."""
    # An idempotent producer holds its first messages until the broker gives it a producer id
    # (about 0.5 s here), which a latency phase would count as the worker's: paced phases use a
    # plain producer.
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "enable.idempotence": rate is None})
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


def backlog(
    bootstrap: str, tag: str, mix: str, n: int, topics: list[str]
) -> tuple[str, str, list[dict[str, Any]]]:
    """A topic named `tag` holding `n` events of `mix` (seed 1), and its dead-letter topic, both
    added to `topics` (deleted at the end): (topic, dead-letter topic, the events)."""
    topic, dlq = tag, f"{tag}-dlq"
    create_topic(bootstrap, topic, PARTITIONS)
    create_topic(bootstrap, dlq, 1)
    topics += [topic, dlq]
    events = make_events(n, MIXES[mix], seed=1, prefix=f"{tag}-b")
    produce(bootstrap, topic, [orjson.dumps(e) for e in events], [e["userId"].encode() for e in events])
    return topic, dlq, events


def committed_all(bootstrap: str, group: str, topics: dict[str, int]) -> bool:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
        for tp in c.committed(tps, timeout=10):
            _, high = c.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
            if high > 0 and tp.offset < high:
                return False
        return True
    finally:
        c.close()


def topic_size(bootstrap: str, topic: str, partitions: int) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"size-{uuid.uuid4().hex[:8]}"})
    try:
        total = 0
        for p in range(partitions):
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
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
        # A short timeout: consume() waits it out whenever fewer than 500 messages are buffered,
        # which the last batch always is.
        batch = c.consume(500, 0.01)
        if started is None and batch:
            started = time.perf_counter()
        for msg in batch:
            if msg.error() is None:
                decode_json(msg.value())
                seen += 1
    elapsed = time.perf_counter() - (started or time.perf_counter())
    c.close()
    return n / elapsed


# -- bare HTTP clients (run as their own process, on the worker's core) ------------------------------
def partner_of(path: str) -> str:
    if path.startswith("/saq_pxl"):
        return "stackadapt"
    if path.startswith("/open_api/"):
        return "tiktok"
    if path.startswith("/segment/"):
        return "seg"
    return "unknown"


def url_path(url: str) -> str:
    """The path and query of an absolute URL, exactly as written."""
    rest = url.split("://", 1)[1]
    return "/" + rest.split("/", 1)[1] if "/" in rest else "/"


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed, as the worker runs."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _bare_aiohttp(requests: list[tuple[str, str, dict[str, str], bytes | None]]) -> Counter[str]:
    import aiohttp
    from yarl import URL

    statuses: Counter[str] = Counter()
    queue = deque(requests)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one_worker() -> None:
            while queue:
                method, url, headers, body = queue.popleft()
                async with session.request(
                    method, URL(url, encoded=True), headers=headers, data=body
                ) as resp:
                    await resp.read()
                    statuses[str(resp.status)] += 1

        await asyncio.gather(*(one_worker() for _ in range(CONCURRENCY)))
    return statuses


async def _bare_pyreqwest(requests: list[tuple[str, str, dict[str, str], bytes | None]]) -> Counter[str]:
    from datetime import timedelta

    from pyreqwest.client import ClientBuilder

    statuses: Counter[str] = Counter()
    queue = deque(requests)
    # A per-request timeout always: its requests keep running after a task is cancelled.
    client = ClientBuilder().max_connections(CONCURRENCY).timeout(timedelta(seconds=30)).build()
    async with client:

        async def one_worker() -> None:
            while queue:
                method, url, headers, body = queue.popleft()
                builder = client.request(method, url).headers(headers)
                if body is not None:
                    builder = builder.body_bytes(body)
                resp = await builder.build().send()
                await resp.bytes()
                statuses[str(resp.status)] += 1

        await asyncio.gather(*(one_worker() for _ in range(CONCURRENCY)))
    await asyncio.sleep(0.1)  # lets its runtime wind down before the interpreter exits
    return statuses


BARE_CLIENTS = {"aiohttp": _bare_aiohttp, "pyreqwest": _bare_pyreqwest}


def bare_client_main(client: str, requests_file: str) -> int:
    """Child process: send every request once, print requests, wall and CPU seconds as JSON."""
    raw = orjson.loads(Path(requests_file).read_bytes())
    requests = [(m, u, h, None if b is None else base64.b64decode(b)) for m, u, h, b in raw]
    loop = new_loop()
    try:
        # Warm-up: open the connections and load the code paths outside the measurement.
        loop.run_until_complete(BARE_CLIENTS[client](requests[: CONCURRENCY * 4]))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        statuses = loop.run_until_complete(BARE_CLIENTS[client](requests))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    finally:
        loop.close()
    print(orjson.dumps({"requests": len(requests), "wall": wall, "cpu": cpu, "statuses": statuses}).decode())
    return 0


def bare_client(client: str, requests: list[Any], work: Path, cpu: int | None) -> dict[str, Any] | str:
    """Result of one bare-client run, or why it could not run."""
    path = work / f"requests-{uuid.uuid4().hex[:6]}.json"
    path.write_bytes(
        orjson.dumps(
            [
                [
                    r.method,
                    r.url,
                    dict(r.headers),
                    None if r.body is None else base64.b64encode(r.body).decode(),
                ]
                for r in requests
            ]
        )
    )
    argv = [sys.executable, str(Path(__file__).resolve()), "--bare-client-run", client, str(path)]
    proc = subprocess.run(pinned(argv, cpu), capture_output=True, text=True, cwd=ROOT)
    path.unlink()
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return f"failed: {last}"
    result: dict[str, Any] = orjson.loads(proc.stdout.strip().splitlines()[-1])
    result["requests_per_s"] = result["requests"] / result["wall"]
    result["cpu_us_per_request"] = result["cpu"] / result["requests"] * 1e6
    return result


def naive(bootstrap: str, topic: str, router: Router, n: int, time_limit: float = 10.0) -> float:
    """Poll one, send its requests one at a time, commit it: the simplest correct worker."""
    import aiohttp
    from yarl import URL

    async def run() -> float:
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

    loop = new_loop()
    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()


# -- the worker ---------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process and all its threads (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int, key: str) -> float:
    """A memory figure of a process from /proc (Linux): VmHWM is its peak resident set, VmRSS its
    current one, in MB (2**20 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def delivered(stats: dict[str, int], before: dict[str, int]) -> int:
    """Deliveries the sink has seen since `before`: one per request, one per TikTok item."""
    return sum(stats[k] - before[k] for k in ("stackadapt", "seg", "tiktok_items"))


def tiktok_item_keys(body: bytes) -> list[bytes]:
    data = orjson.loads(body).get("data") or []
    return [orjson.dumps(item, option=orjson.OPT_SORT_KEYS) for item in data]


def request_keys(method: str, path: str, body: bytes) -> list[tuple[str, str, bytes]]:
    """What identifies one delivery in a request; a TikTok request carries one per data[] item."""
    if partner_of(path) == "tiktok":
        return [("tiktok", "", key) for key in tiktok_item_keys(body)]
    return [(method, path, body)]


@dataclass
class Expected:
    """What a set of events must produce at the sink."""

    deliveries: int = 0
    by_partner: Counter[str] = field(default_factory=Counter)

    def add(self, request: Any) -> None:
        partner = partner_of(url_path(request.url))
        self.by_partner[partner] += 1
        self.deliveries += 1


def check_arrivals(expected: Expected, now: dict[str, int], before: dict[str, int]) -> list[str]:
    problems = []
    got = {
        "stackadapt": now["stackadapt"] - before["stackadapt"],
        "seg": now["seg"] - before["seg"],
        "tiktok": now["tiktok_items"] - before["tiktok_items"],
    }
    for partner, count in got.items():
        want = expected.by_partner.get(partner, 0)
        if count != want:
            problems.append(f"{partner}: {count} arrived, {want} expected")
    for key in ("unknown", "rejected"):
        if now[key] != before[key]:
            problems.append(f"{now[key] - before[key]} {key} requests")
    return problems


class WorkerGone(Exception):
    """The worker process ended before its work was done."""


def wait_for(
    sink_url: str,
    before: dict[str, int],
    target: int,
    worker: subprocess.Popen[bytes],
    interval: float = 0.05,
) -> tuple[bool, dict[str, int]]:
    """Until `target` deliveries arrived (True) or none arrived for STALL_SECONDS (False)."""
    last_count, last_change = -1, time.perf_counter()
    while True:
        stats = sink_stats(sink_url)
        count = delivered(stats, before)
        if count >= target:
            return True, stats
        if worker.poll() is not None:
            raise WorkerGone(f"exit {worker.returncode}")
        if count != last_count:
            last_count, last_change = count, time.perf_counter()
        elif time.perf_counter() - last_change > STALL_SECONDS:
            return False, stats
        time.sleep(interval)


def log_tail(path: Path, lines: int = 3) -> str:
    text = path.read_text(errors="replace").strip().splitlines()
    kept = [line for line in text if not line.startswith("streamproc imported from")]
    return " | ".join(kept[-lines:])


def config_problems(log_path: Path, config: Path) -> list[str]:
    """The config check's complaints in a worker's log ("key: problem"), without the file name."""
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        _, sep, problem = line.partition(f"{config}: ")
        if sep:
            out.append(problem.split("; expected", 1)[0])
    return out


def start_worker(
    variant: Variant, config: Path, log_path: Path, cpu: int | None
) -> tuple[subprocess.Popen[bytes], Any]:
    env = dict(os.environ)
    if variant.source != ROOT:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(variant.source), env.get("PYTHONPATH")]))
    log = log_path.open("ab")
    argv = [sys.executable, "-c", WORKER_PRELUDE, "run", "--config", str(config)]
    worker = subprocess.Popen(pinned(argv, cpu), stdout=log, stderr=log, cwd=variant.source, env=env)
    return worker, log


def imported_from(log_path: Path, worker: subprocess.Popen[bytes], timeout: float = 60.0) -> str | None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("streamproc imported from "):
                return line.removeprefix("streamproc imported from ").strip()
        if worker.poll() is not None:
            return None
        time.sleep(0.05)
    return None


def run_worker(
    variant: Variant,
    ctx: MixContext,
    args: argparse.Namespace,
    cpus: tuple[int | None, int | None],
) -> dict[str, Any]:
    """One worker variant on the mix's backlog, then the latency phase; its figures or why not."""
    out: dict[str, Any] = {"variant": variant.label, "revision": variant.revision}
    slug = uuid.uuid4().hex[:6]
    group = f"{ctx.tag}-{slug}"
    latency_topic = f"{ctx.tag}-lat-{slug}"
    create_topic(ctx.bootstrap, latency_topic, PARTITIONS)
    ctx.topics.append(latency_topic)
    data = variant.apply(
        base_config(ctx.bootstrap, [ctx.topic, latency_topic], ctx.dlq, group, ctx.sink_url), ctx.mix
    )
    wanted = ctx.expected_for(variant)
    config = ctx.work / f"{group}.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    log_path = ctx.work / f"{group}.log"
    worker_cpu = cpus[0]
    before = sink_stats(ctx.sink_url)
    worker, log = start_worker(variant, config, log_path, worker_cpu)
    try:
        source = imported_from(log_path, worker)
        expected_module = (variant.source / "streamproc" / "__init__.py").resolve()
        if source is None:
            if worker.poll() is not None:
                raise WorkerGone(f"exit {worker.returncode}")
            out["error"] = "the worker did not say which streamproc it imported"
            return out
        if Path(source).resolve() != expected_module:
            out["error"] = f"the worker imported {source}, not {expected_module}"
            return out
        out["source"] = source
        # Backlog drain: the worker starts with every event waiting.
        while delivered(sink_stats(ctx.sink_url), before) == 0:
            if worker.poll() is not None:
                raise WorkerGone(f"exit {worker.returncode}")
            time.sleep(0.01)
        started = time.perf_counter()
        out["start_rss_mb"] = memory_mb(worker.pid, "VmRSS")
        cpu0 = cpu_seconds(worker.pid)
        sink_cpu0 = cpu_seconds(ctx.sink_pid)
        first = sink_stats(ctx.sink_url)
        complete, stats = wait_for(ctx.sink_url, before, wanted.deliveries, worker, interval=0.05)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(worker.pid) - cpu0
        # The window opens at the first delivery seen: count only what was sent inside it.
        requests = stats["total"] - first["total"]
        events = ctx.events * (delivered(stats, first) / wanted.deliveries)
        out["complete"] = complete
        out["problems"] = check_arrivals(wanted, stats, before)
        out["drain_s"] = elapsed
        out["worker_cpu_s"] = cpu
        out["requests_sent"] = stats["total"] - before["total"]
        out["tiktok_items_per_request"] = (stats["tiktok_items"] - before["tiktok_items"]) / max(
            1, stats["tiktok"] - before["tiktok"]
        )
        out["events_per_s"] = events / elapsed
        out["events_per_cpu_s"] = events / cpu
        out["requests_per_cpu_s"] = requests / cpu
        out["cpu_us_per_request"] = cpu / requests * 1e6
        out["worker_cpu_util"] = cpu / elapsed
        # The high-water mark since the worker started: start-up, compiling the config, the drain.
        out["peak_rss_mb"] = memory_mb(worker.pid, "VmHWM")
        out["sink_cpu_util"] = (cpu_seconds(ctx.sink_pid) - sink_cpu0) / elapsed
        out["bare_client"] = variant.http_client or default_client(variant.source)
        bare = ctx.bare.get(out["bare_client"])
        if isinstance(bare, dict):
            out["cpu_vs_bare"] = out["cpu_us_per_request"] / bare["cpu_us_per_request"]
        if not complete:
            out["error"] = f"stalled: {delivered(stats, before)} of {wanted.deliveries} deliveries arrived"
            return out

        # Latency at a steady rate: produce time to the sink receiving the request (or batch).
        rate = args.rate or max(10.0, out["events_per_s"] / 2)
        count = min(args.latency_events, max(200, int(rate * args.latency_seconds)))
        steady = make_events(count, MIXES[ctx.mix], seed=2, prefix=f"{group}-l")
        sent_keys: dict[tuple[str, str, bytes], deque[float]] = defaultdict(deque)
        expected = Expected()
        events_at: list[tuple[dict[str, Any], list[Any]]] = []
        for e in steady:
            reqs = [r for d in ctx.router.route(e) for r in d.requests if ctx.sent_by(variant, r)]
            events_at.append((e, reqs))
            for r in reqs:
                expected.add(r)
        mark = sink_stats(ctx.sink_url)
        port = int(data["metrics"]["port"])
        inside_before = delivery_buckets(port)
        sink_record(ctx.sink_url, True)
        try:
            sent_at = produce(
                ctx.bootstrap,
                latency_topic,
                [orjson.dumps(e) for e in steady],
                [e["userId"].encode() for e in steady],
                rate,
            )
            for (_, reqs), t in zip(events_at, sent_at, strict=True):
                for r in reqs:
                    for key in request_keys(r.method, url_path(r.url), r.body or b""):
                        sent_keys[key].append(t)
            complete, stats = wait_for(ctx.sink_url, mark, expected.deliveries, worker)
        finally:
            sink_record(ctx.sink_url, False)
        latencies = []
        for rec in sink_requests(ctx.sink_url):
            body = base64.b64decode(rec["body"]) if rec["body"] else b""
            for key in request_keys(rec["method"], rec["uri"], body):
                times = sent_keys.get(key)
                if times:
                    latencies.append(rec["at"] - times.popleft())
        out["latency_rate"] = rate
        out["latency_p50_ms"] = percentile(latencies, 0.5) * 1000
        out["latency_p99_ms"] = percentile(latencies, 0.99) * 1000
        out["latency_samples"] = len(latencies)
        # The worker's own share: consumed to delivered (its metric), without the broker's.
        inside_after = delivery_buckets(port)
        for q, field_name in ((0.5, "worker_latency_p50_ms"), (0.99, "worker_latency_p99_ms")):
            value = bucket_quantile(q, inside_before, inside_after)
            if value is not None:
                out[field_name] = value * 1000
        out["problems"] += [f"latency phase: {p}" for p in check_arrivals(expected, stats, mark)]
        if not complete:
            out["error"] = f"latency phase stalled: {delivered(stats, mark)} of {expected.deliveries} arrived"
            return out
        deadline = time.perf_counter() + 30
        while not committed_all(ctx.bootstrap, group, {ctx.topic: PARTITIONS, latency_topic: PARTITIONS}):
            if time.perf_counter() > deadline:
                out["problems"].append("offsets not all committed 30 s after the last request")
                break
            time.sleep(0.2)
        return out
    except WorkerGone as gone:
        log.flush()
        tail = log_tail(log_path, lines=10)
        rejected = config_problems(log_path, config)
        if rejected:
            out["unavailable"] = "; ".join(rejected)
        else:
            out["error"] = f"worker ended ({gone}): {tail}"
        return out
    finally:
        stop(worker)
        log.close()


def stop(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM a worker still running (it drains and commits), SIGKILL it after a minute."""
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


@dataclass
class MixContext:
    mix: str
    tag: str
    bootstrap: str
    sink_url: str
    sink_pid: int
    work: Path
    topic: str
    dlq: str
    router: Router
    events: int
    expected: Expected
    topics: list[str]
    requests: list[Any] = field(default_factory=list)
    bare: dict[str, dict[str, Any] | str] = field(default_factory=dict)

    def sent_by(self, variant: Variant, request: Any) -> bool:
        """Whether a worker of this variant sends this request of the mix's full configuration."""
        partner = MIX_DESTINATION[self.mix][1]
        return not variant.one_destination or partner_of(url_path(request.url)) == partner

    def expected_for(self, variant: Variant) -> Expected:
        if not variant.one_destination:
            return self.expected
        out = Expected()
        for r in self.requests:
            if self.sent_by(variant, r):
                out.add(r)
        return out


def run_mix(
    name: str,
    args: argparse.Namespace,
    bootstrap: str,
    sink: tuple[str, int],
    work: Path,
    worker_variants: list[Variant],
    cpus: tuple[int | None, int | None],
    topics: list[str],
) -> dict[str, Any]:
    tag = f"bench-{name}-{uuid.uuid4().hex[:6]}"
    topic, dlq, events = backlog(bootstrap, tag, name, args.events, topics)
    sink_url, sink_pid = sink
    config = work / f"{tag}.yaml"
    config.write_text(yaml.safe_dump(base_config(bootstrap, [topic], dlq, tag, sink_url), sort_keys=False))
    router = Router(load_config(config))
    requests = [r for e in events for d in router.route(e) for r in d.requests]
    expected = Expected()
    for r in requests:
        expected.add(r)
    ctx = MixContext(
        name, tag, bootstrap, sink_url, sink_pid, work, topic, dlq, router, len(events), expected, topics
    )
    ctx.requests = requests
    out: dict[str, Any] = {
        "mix": name,
        "events": len(events),
        "requests": len(requests),
        "by_partner": dict(expected.by_partner),
    }
    out["raw_consume_decode"] = raw_consume_decode(bootstrap, topic, len(events))
    clients = ["aiohttp"] + (["pyreqwest"] if _installed("pyreqwest") else [])
    before = sink_stats(sink_url)
    sample = requests[: min(len(requests), args.raw_requests)]
    for client in clients:
        ctx.bare[client] = bare_client(client, sample, work, cpus[0])
    sent = sink_stats(sink_url)["total"] - before["total"]
    want = sum(
        len(sample) + min(len(sample), CONCURRENCY * 4) for b in ctx.bare.values() if isinstance(b, dict)
    )
    if sent != want:
        out["raw_http_problem"] = f"the sink counted {sent} requests from the bare clients, {want} sent"
    out["raw_http"] = ctx.bare
    out["naive"] = naive(bootstrap, topic, router, min(2000, len(events)))
    out["workers"] = []
    unavailable: set[Variant] = set()
    # Rounds interleave the variants, so that a change in the machine's load hits each of them alike.
    for round_no in range(1, args.rounds + 1):
        for variant in worker_variants:
            if (variant.mixes is not None and name not in variant.mixes) or variant in unavailable:
                continue
            print(f"  ... {name}: {variant.label} (round {round_no})", file=sys.stderr, flush=True)
            result = run_worker(variant, ctx, args, cpus)
            result["round"] = round_no
            if args.rounds > 1:
                result["variant"] += f" #{round_no}"
            if "unavailable" in result:
                unavailable.add(variant)
            out["workers"].append(result)
    dead = topic_size(bootstrap, dlq, 1)
    if dead:
        out["dead_letters"] = dead
    return out


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# -- report -------------------------------------------------------------------------------------------
def print_mix(r: dict[str, Any]) -> None:
    parts = ", ".join(f"{k} {v}" for k, v in sorted(r["by_partner"].items()))
    print(f"\n== {r['mix']}-heavy mix: {r['events']:,} events -> {r['requests']:,} requests ({parts})")
    per_event = r["requests"] / r["events"]
    print(f"  raw consume+decode     {r['raw_consume_decode']:>9,.0f} events/s")
    for client, b in r["raw_http"].items():
        if isinstance(b, str):
            print(f"  raw HTTP {client:<13} {b}")
            continue
        print(
            f"  raw HTTP {client:<13} {b['requests_per_s']:>9,.0f} requests/s  "
            f"CPU {b['cpu_us_per_request']:5.0f} us/request  "
            f"(= {b['requests_per_s'] / per_event:,.0f} events/s, "
            f"{1e6 / b['cpu_us_per_request'] / per_event:,.0f} events per CPU-second at this mix)"
        )
    if r.get("raw_http_problem"):
        print(f"  !! {r['raw_http_problem']}")
    print(f"  naive poll/POST/commit {r['naive']:>9,.0f} events/s")
    header = (
        f"  {'streamproc run':<40} {'drain':>7} {'events':>7} {'reqs':>7} {'CPU':>6} {'x bare':>6}"
        f" {'worker':>6} {'sink':>5} {'peak':>5} {'items':>5}  {'latency p50/p99 ms':>18} {'at ev/s':>7}"
        f"  {'in worker p50/p99':>17}"
    )
    print(header)
    print(
        f"  {'':<40} {'ev/s':>7} {'/CPU-s':>7} {'/CPU-s':>7} {'us/req':>6} {'':>6}"
        f" {'CPU':>6} {'CPU':>5} {'RSS':>5} {'/req':>5}"
    )
    for w in r["workers"]:
        label = f"  {w['variant']:<40}"
        if "unavailable" in w:
            print(f"{label} not available in this revision: {w['unavailable']}")
            continue
        if "events_per_s" not in w:
            print(f"{label} failed: {w.get('error')}")
            continue
        ratio = f"{w['cpu_vs_bare']:6.2f}" if "cpu_vs_bare" in w else f"{'-':>6}"
        latency = (
            f"{w['latency_p50_ms']:8.1f} /{w['latency_p99_ms']:8.1f} {w['latency_rate']:>7,.0f}"
            if "latency_p50_ms" in w
            else f"{'-':>18} {'-':>7}"
        )
        inside = (
            f"  {w['worker_latency_p50_ms']:7.1f} /{w['worker_latency_p99_ms']:7.1f}"
            if "worker_latency_p99_ms" in w
            else ""
        )
        print(
            f"{label} {w['events_per_s']:>7,.0f} {w['events_per_cpu_s']:>7,.0f}"
            f" {w['requests_per_cpu_s']:>7,.0f} {w['cpu_us_per_request']:>6,.0f} {ratio}"
            f" {w['worker_cpu_util']:>6.0%} {w['sink_cpu_util']:>5.0%} {w['peak_rss_mb']:>5.0f}"
            f" {w['tiktok_items_per_request']:>5.1f}  {latency}{inside}"
        )
        for problem in w.get("problems", []):
            print(f"  {'':<40} !! {problem}")
        if w.get("error"):
            print(f"  {'':<40} !! {w['error']}")
    sources = {w["revision"]: w["source"] for w in r["workers"] if w.get("source")}
    for revision, source in sources.items():
        print(f"  {revision} worker imported {source} (its own log says so)")
    if r.get("dead_letters"):
        print(f"  !! {r['dead_letters']} dead letters (the sink answers success: none expected)")


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


def choose_cpus(pin: bool) -> tuple[int | None, int | None]:
    """(worker core, sink core): two different cores where taskset exists, else both floating."""
    cores = sorted(os.sched_getaffinity(0))
    if not pin or len(cores) < 2 or shutil.which("taskset") is None:
        return None, None
    return cores[0], cores[1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20000, help="backlog events per mix")
    parser.add_argument(
        "--latency-events", type=int, default=5000, help="at most this many events for the latency phase"
    )
    parser.add_argument(
        "--latency-seconds", type=float, default=15.0, help="and at most this long at the latency rate"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="events/s for the latency phase (default: half the drain rate of each worker)",
    )
    parser.add_argument(
        "--raw-requests", type=int, default=20000, help="requests each bare client sends (at most)"
    )
    parser.add_argument("--mix", default="stackadapt,tiktok")
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument(
        "--baseline", default=None, metavar="REV|PATH", help="also run this revision's worker (or source dir)"
    )
    parser.add_argument(
        "--http-client", default=None, help="worker variants with http.client set (comma-separated)"
    )
    parser.add_argument(
        "--tiktok-batch", type=int, default=None, metavar="N", help="a TikTok-mix variant batching N events"
    )
    parser.add_argument("--tiktok-batch-wait-ms", type=float, default=20.0)
    parser.add_argument(
        "--one-destination",
        action="store_true",
        help="also run each worker with only the mix's own partner configured (StackAdapt, TikTok)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run every worker variant this many times, interleaved"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin the worker and the sink to cores")
    parser.add_argument(
        "--json", default=None, metavar="PATH", help="write the results as JSON ('-': stdout)"
    )
    parser.add_argument("--bare-client-run", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_client_run:
        return bare_client_main(*args.bare_client_run)

    work = Path(tempfile.mkdtemp(prefix="streamproc-bench-"))
    if args.bootstrap:
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = args.bootstrap
    cpus = choose_cpus(not args.no_pin)
    if cpus[0] is not None:
        # The worker's core is its own: this process (the producer of the paced phase) and the
        # broker it starts run beside the sink, so neither takes CPU from the worker being measured.
        os.sched_setaffinity(0, set(os.sched_getaffinity(0)) - {cpus[0]})
    bootstrap, run_dir = start_broker(work)
    sink_proc, sink_url = start_sink(cpus[1])
    baseline_tree = None
    topics: list[str] = []
    table = sys.stderr if args.json == "-" else sys.stdout
    results: dict[str, Any] = {}
    try:
        baseline = None
        if args.baseline:
            name, source, baseline_tree = prepare_baseline(args.baseline, work)
            baseline = (name, source)
        worker_variants = variants(args, baseline)
        pin = f"worker on core {cpus[0]}, sink on core {cpus[1]}" if cpus[0] is not None else "no pinning"
        results = {
            "broker": bootstrap,
            "sink": sink_url,
            "cores": os.cpu_count(),
            "pinning": {"worker": cpus[0], "sink": cpus[1]},
            "baseline": None if baseline is None else {"name": baseline[0], "source": str(baseline[1])},
            "mixes": [],
        }
        with contextlib.redirect_stdout(table):
            print(f"broker {bootstrap}, sink {sink_url}, {os.cpu_count()} cores ({pin}), work dir {work}")
            if baseline:
                print(f"baseline: {baseline[0]} from {baseline[1]}")
            for name in args.mix.split(","):
                r = run_mix(
                    name.strip(),
                    args,
                    bootstrap,
                    (sink_url, sink_proc.pid),
                    work,
                    worker_variants,
                    cpus,
                    topics,
                )
                results["mixes"].append(r)
                print_mix(r)
            print(
                "\ndrain: backlog events/s; events, reqs /CPU-s: per second of worker CPU (all its threads);"
                "\nCPU us/req: worker CPU per request sent; x bare: over the bare client's (the same client;"
                " the revision's own default client for default);"
                "\nworker CPU: the share of its core the worker used while draining; peak RSS: the worker's"
                " resident-set high-water mark (MB) from its start to the end of the drain;"
                "\nitems/req: TikTok items per request; latency: produce to the sink receiving it"
                "\n(the broker's share included); in worker: consumed to delivered, from the worker's own"
                "\nhistogram (interpolated within its buckets). The broker and this process share the sink's"
                " core."
            )
    finally:
        sink_proc.terminate()
        sink_proc.wait(30)
        delete_topics(bootstrap, topics)
        if baseline_tree is not None:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(baseline_tree)], cwd=ROOT, capture_output=True
            )
        if run_dir is not None:
            subprocess.run(
                [str(ROOT / "scripts" / "kafka-local"), "stop", "--dir", str(run_dir)], capture_output=True
            )
    if args.json:
        text = orjson.dumps(results, option=orjson.OPT_INDENT_2).decode()
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
