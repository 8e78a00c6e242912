"""The one-command demo: a broker, the partner simulator, generated Segment events and a worker, live.

Everything runs in one process and one event loop except the broker: a local Apache Kafka
(streamproc.kafka.local; Java and the broker's jars), or, where they are missing, librdkafka's
built-in mock cluster. The worker is the real `streamproc run` worker with every destination pointed at the
simulator, so /metrics, dead letters and offsets behave as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import random
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TextIO

import orjson

from streamproc.kafka.local import Broker, start_broker

__all__ = [
    "POISON_KINDS",
    "Broker",
    "DemoOptions",
    "DemoSummary",
    "EventGenerator",
    "run_demo",
    "start_broker",
]

DEFAULT_CONFIG = "data/demo-config.yaml"
"""The demo's configuration, a resource of the package (so an installed copy or the image has it)."""

# The three kinds of bad input the demo mixes in; each must end in the dead-letter topic.
POISON_KINDS = ("not-json", "not-an-object", "invalid-payload")

_FIRST = ["Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Dennis", "Frances", "Ken", "Radia"]
_LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Turing", "Liskov", "Ritchie", "Allen", "Perlman"]
_PRODUCTS = [
    ("sku-1001", "Trail Runner 42", "Shoes", 89.90),
    ("sku-1002", "Summit Shell Jacket", "Jackets", 219.00),
    ("sku-1003", "Alpine Wool Socks", "Socks", 14.50),
    ("sku-1004", "Ridge 30L Daypack", "Bags", 74.95),
    ("sku-1005", "Basecamp Fleece", "Jackets", 64.00),
    ("sku-1006", "Granite Approach Shoe", "Shoes", 129.00),
    ("sku-1007", "Headlamp 400", "Gear", 39.99),
]
_PAGES = [
    ("Home", "/"),
    ("Shoes", "/c/shoes"),
    ("Jackets", "/c/jackets"),
    ("Sale", "/sale"),
    ("Help", "/help"),
]
_SCREENS = ["Home", "Product Detail", "Cart", "Checkout", "Order Confirmation"]
_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5"
_SITE = "https://shop.example.com"


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class EventGenerator:
    """Realistic Segment traffic: visitor sessions on a web shop and a mobile app.

    A session browses pages and products, may add to the cart, check out and order, and may sign
    up (identify, alias) or join a company (group). Every `poison_every`-th message is bad input
    of one of POISON_KINDS, in turn. Keys are the visitor id, as an analytics pipeline partitions.
    """

    def __init__(self, *, seed: int = 7, poison_every: int = 50, now: Callable[[], datetime] | None = None):
        self.rng = random.Random(seed)
        self.poison_every = poison_every
        self.now = now or (lambda: datetime.now(UTC))
        self.counts: Counter[str] = Counter()
        self._n = 0
        self._poison = itertools.cycle(POISON_KINDS)
        self._session: Iterator[dict[str, Any]] = iter(())

    def __iter__(self) -> Iterator[tuple[bytes | None, bytes]]:
        return self

    def __next__(self) -> tuple[bytes | None, bytes]:
        self._n += 1
        if self.poison_every and self._n % self.poison_every == 0:
            kind = next(self._poison)
            self.counts[f"poison:{kind}"] += 1
            return self._poison_message(kind)
        event = next(self._session, None)
        while event is None:
            self._session = self._new_session()
            event = next(self._session, None)
        self.counts[event["type"]] += 1
        key = event.get("userId") or event.get("anonymousId")
        return (key.encode() if key else None), orjson.dumps(event)

    # -- sessions ------------------------------------------------------------------------------------
    def _base(self, kind: str, anonymous_id: str, user_id: str | None, ctx: dict[str, Any]) -> dict[str, Any]:
        event: dict[str, Any] = {
            "type": kind,
            "messageId": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "timestamp": _iso(self.now()),
            "anonymousId": anonymous_id,
            "context": ctx,
        }
        if user_id:
            event["userId"] = user_id
        return event

    def _new_session(self) -> Iterator[dict[str, Any]]:
        rng = self.rng
        anon = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        mobile = rng.random() < 0.25
        known = rng.random() < 0.3
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        email = f"{first}.{last}{rng.randint(1, 999)}@example.com".lower()
        user_id = f"user-{rng.randint(10000, 99999)}" if known else None
        ctx: dict[str, Any] = {
            "ip": f"203.0.113.{rng.randint(1, 254)}",
            "locale": "en-US",
            "userAgent": _UA,
        }
        if mobile:
            ctx["app"] = {"name": "Northpeak", "version": "4.2.0", "build": "420"}
            ctx["device"] = {"type": "ios", "model": "iPhone15,2", "manufacturer": "Apple"}
            ctx["library"] = {"name": "analytics-ios", "version": "1.5.0"}
        else:
            ctx["library"] = {"name": "analytics.js", "version": "5.2.0"}
        if known:
            ctx["traits"] = {"email": email}

        def view(name: str, path: str) -> dict[str, Any]:
            if mobile:
                e = self._base("screen", anon, user_id, ctx)
                e["name"] = name
                e["properties"] = {"name": name}
                return e
            page = {"path": path, "url": _SITE + path, "title": f"{name} | Northpeak", "referrer": ""}
            e = self._base("page", anon, user_id, {**ctx, "page": page})
            e["name"] = name
            e["properties"] = {"url": _SITE + path, "title": page["title"], "path": path}
            return e

        def track(name: str, props: dict[str, Any]) -> dict[str, Any]:
            e = self._base("track", anon, user_id, ctx)
            e["event"] = name
            e["properties"] = props
            return e

        def product(p: tuple[str, str, str, float], qty: int = 1) -> dict[str, Any]:
            return {
                "product_id": p[0],
                "sku": p[0].upper(),
                "name": p[1],
                "category": p[2],
                "price": p[3],
                "quantity": qty,
                "brand": "Northpeak",
                "url": f"{_SITE}/p/{p[0]}",
            }

        name, path = rng.choice(_PAGES) if not mobile else (rng.choice(_SCREENS), "")
        yield view(name, path)
        yield track(
            "Product List Viewed",
            {"list_id": "shoes", "category": "Shoes", "products": [product(p) for p in _PRODUCTS[:3]]},
        )
        cart: list[dict[str, Any]] = []
        for p in rng.sample(_PRODUCTS, k=rng.randint(1, 3)):
            yield view(p[1], f"/p/{p[0]}")
            yield track("Product Viewed", {**product(p), "currency": "USD", "value": p[3]})
            if rng.random() < 0.6:
                item = product(p, qty=rng.randint(1, 2))
                cart.append(item)
                yield track("Product Added", {**item, "cart_id": f"cart-{anon[:8]}", "currency": "USD"})
        if rng.random() < 0.2:
            yield track("Products Searched", {"query": rng.choice(["rain jacket", "socks", "headlamp"])})
        if not user_id and rng.random() < 0.35:
            # Sign-up: the anonymous visitor becomes a known user.
            user_id = f"user-{rng.randint(10000, 99999)}"
            ctx = {**ctx, "traits": {"email": email}}
            yield track("Signed Up", {"method": "email", "email": email})
            ident = self._base("identify", anon, user_id, ctx)
            ident["traits"] = {
                "email": email,
                "first_name": first,
                "last_name": last,
                "firstName": first,
                "lastName": last,
                "phone": f"+1555{rng.randint(1000000, 9999999)}",
                "address": {"country": "US", "city": "Denver"},
                "createdAt": _iso(self.now() - timedelta(days=rng.randint(0, 900))),
            }
            yield ident
            alias = self._base("alias", anon, user_id, ctx)
            alias["previousId"] = anon
            yield alias
        elif user_id and rng.random() < 0.3:
            ident = self._base("identify", anon, user_id, ctx)
            ident["traits"] = {"email": email, "firstName": first, "lastName": last, "plan": "member"}
            yield ident
        if user_id and rng.random() < 0.1:
            grp = self._base("group", anon, user_id, ctx)
            grp["groupId"] = f"org-{rng.randint(100, 999)}"
            grp["traits"] = {"name": "Trailhead Outfitters", "industry": "Retail", "employees": 42}
            yield grp
        if cart and rng.random() < 0.7:
            total = round(sum(i["price"] * i["quantity"] for i in cart), 2)
            yield track(
                "Checkout Started",
                {
                    "order_id": f"o-{anon[:8]}",
                    "value": total,
                    "revenue": total,
                    "currency": "USD",
                    "products": cart,
                },
            )
            if rng.random() < 0.8:
                order_id = f"o-{anon[:8]}"
                yield track(
                    "Order Completed",
                    {
                        "order_id": order_id,
                        "checkout_id": f"c-{anon[:8]}",
                        "total": total,
                        "revenue": total,
                        "value": total,
                        "shipping": 4.95,
                        "tax": round(total * 0.08, 2),
                        "currency": "USD",
                        "products": cart,
                        "email": email,
                    },
                )

    # -- bad input ----------------------------------------------------------------------------------
    def _poison_message(self, kind: str) -> tuple[bytes | None, bytes]:
        key = f"poison-{self._n}".encode()
        if kind == "not-json":
            return key, b'{"type": "track", "event": "Order Completed", "properties": {"revenue": 12'
        if kind == "not-an-object":
            return key, b'["track", "Order Completed", 12.5]'
        # Decodes and routes, but the revenue is not a number: every partner's payload validation fails.
        event = self._base("track", f"anon-poison-{self._n}", None, {"library": {"name": "analytics.js"}})
        event["event"] = "Order Completed"
        event["properties"] = {
            "order_id": f"o-poison-{self._n}",
            "revenue": "a lot",
            "value": "a lot",
            "total": "a lot",
            "currency": "USD",
            "products": "none",
        }
        return key, orjson.dumps(event)


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


@dataclass
class DemoSummary:
    """What happened, as printed at the end (and as JSON with --json)."""

    broker: str
    bootstrap: str
    topic: str
    dead_letter_topic: str
    metrics_url: str
    produced: int = 0
    produced_by_kind: dict[str, int] = field(default_factory=dict)
    consumed: int = 0
    delivered: dict[str, int] = field(default_factory=dict)
    dead_lettered: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    partner_requests: dict[str, int] = field(default_factory=dict)
    dead_letter_topic_records: int = 0
    dead_letter_error_types: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False
    partner_url: str = ""
    config_path: str = ""
    """This run's configuration with every value filled in: other commands can use it as it is."""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def _partner_weather(simulator: Any) -> None:
    """Real partners are neither instant nor always up: latency everywhere, a TikTok hiccup at first."""
    from streamproc.simulator import Latency

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


def _metric_totals(registry: Any) -> dict[str, Counter[str]]:
    """Sums of the demo's counters by destination (or topic), read from the worker's registry."""
    totals: dict[str, Counter[str]] = {
        "consumed": Counter(),
        "delivered": Counter(),
        "dead_lettered": Counter(),
        "skipped": Counter(),
        "requests": Counter(),
        "in_flight": Counter(),
    }
    for family in registry.collect():
        for s in family.samples:
            if s.name == "streamproc_events_consumed_total":
                totals["consumed"][s.labels["topic"]] += int(s.value)
            elif s.name == "streamproc_deliveries_total":
                outcome = s.labels["outcome"]
                if outcome in totals:
                    totals[outcome][s.labels["destination"]] += int(s.value)
            elif s.name == "streamproc_dead_letters_total" and not s.labels["destination"]:
                totals["dead_lettered"]["(undecodable)"] += int(s.value)
            elif s.name == "streamproc_partner_responses_total":
                totals["requests"][s.labels["destination"]] += int(s.value)
            elif s.name == "streamproc_events_in_flight":
                totals["in_flight"]["events"] += int(s.value)
    return totals


def read_dead_letters(bootstrap: str, topic: str, timeout: float = 20.0) -> list[Any]:
    """Every record of the dead-letter topic (assigned partitions, start to end)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"streamproc-demo-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        md = c.list_topics(topic, timeout=10)
        ends = {}
        for p in md.topics[topic].partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if hi > lo:
                ends[p] = hi
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        out: list[Any] = []
        pos = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + timeout
        while any(pos[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for msg in c.consume(500, 0.5):
                if msg.error():
                    continue
                out.append(msg)
                pos[msg.partition()] = (msg.offset() or 0) + 1
        return out
    finally:
        c.close()


def _columns(out: TextIO) -> int:
    """The width of the terminal `out` writes to (its own, not stdout's, which may be a pipe)."""
    try:
        return os.get_terminal_size(out.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return shutil.get_terminal_size().columns


class _Display:
    """One progress line: redrawn in place on a terminal, printed every few seconds elsewhere.

    On a terminal the line fits its width: the per-destination counts give way to their total first,
    so dead letters and in-flight events always show."""

    def __init__(self, out: TextIO, tty: bool | None, columns: Callable[[], int] | None = None):
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.columns = columns or (lambda: _columns(out))
        self.last_print = 0.0
        self.last: tuple[float, int] | None = None

    def line(self, produced: int, consumed: int, rate: float, totals: dict[str, Counter[str]]) -> str:
        delivered = totals["delivered"]
        head = f"produced {produced}  consumed {consumed} ({rate:,.0f}/s)"
        dead, in_flight = sum(totals["dead_lettered"].values()), totals["in_flight"]["events"]
        status = f"dead letters {dead}  in flight {in_flight}"
        detail = " ".join(f"{d}={n}" for d, n in sorted(delivered.items())) or "-"
        candidates = [
            f"{head}  {status}  delivered: {detail}",
            f"{head}  {status}  delivered {sum(delivered.values())}",
            f"{head}  {status}",
            f"consumed {consumed}/{produced} ({rate:,.0f}/s)  {status}",
            f"{consumed}/{produced} ({rate:,.0f}/s) dead {dead} in flight {in_flight}",
        ]
        if not self.tty:
            return candidates[0]
        # A line as wide as the terminal wraps, and then cannot be redrawn in place.
        width = max(20, self.columns() - 1)
        return next((c for c in candidates if len(c) <= width), candidates[-1][:width])

    def update(self, produced: int, totals: dict[str, Counter[str]], *, final: bool = False) -> None:
        now = time.monotonic()
        consumed = sum(totals["consumed"].values())
        rate = 0.0
        if self.last is not None and now > self.last[0]:
            rate = (consumed - self.last[1]) / (now - self.last[0])
        if self.last is None or now - self.last[0] >= 1.0:
            self.last = (now, consumed)
        line = self.line(produced, consumed, rate, totals)
        if self.tty:
            self.out.write("\r\x1b[2K" + line + ("\n" if final else ""))
            self.out.flush()
        elif final or now - self.last_print >= 2.0:
            self.out.write(line + "\n")
            self.out.flush()
            self.last_print = now


def write_config(env: dict[str, str], path: Path) -> None:
    """The packaged demo configuration with every `${VAR}` filled in from `env`, written to `path`."""
    from streamproc.config import interpolate

    text = resources.files("streamproc").joinpath(DEFAULT_CONFIG).read_text()
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
    from streamproc.simulator import PartnerSimulator

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
        display = _Display(out, options.tty)
        try:
            while not stop.is_set() and not worker_task.done():
                totals = _metric_totals(worker.metrics.registry)
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

        totals = _metric_totals(worker.metrics.registry)
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
        types: Counter[str] = Counter()
        for msg in letters:
            headers = dict(msg.headers() or [])
            raw = headers.get("streamproc.error.type")
            types[raw.decode() if isinstance(raw, bytes) else str(raw)] += 1
        summary.dead_letter_error_types = dict(sorted(types.items()))
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


def format_summary(s: DemoSummary) -> str:
    """The closing report, for people."""
    lines = [
        "",
        f"streamproc demo: {s.produced} events produced, {s.consumed} consumed in {s.seconds:g}s"
        + (" (interrupted)" if s.interrupted else ""),
        "  events by type: "
        + ", ".join(f"{k} {v}" for k, v in s.produced_by_kind.items() if not k.startswith("poison:")),
        "  poison messages: "
        + ", ".join(f"{k[7:]} {v}" for k, v in s.produced_by_kind.items() if k.startswith("poison:")),
        "  destination        delivered  dead-lettered  skipped  partner requests",
    ]
    for dest in sorted(set(s.delivered) | set(s.dead_lettered) | set(s.partner_requests)):
        lines.append(
            f"  {dest:<18} {s.delivered.get(dest, 0):>9}  {s.dead_lettered.get(dest, 0):>13}"
            f"  {s.skipped.get(dest, 0):>7}  {s.partner_requests.get(dest, 0):>16}"
        )
    lines.append(
        f"  dead-letter topic {s.dead_letter_topic}: {s.dead_letter_topic_records} records"
        + (
            " (" + ", ".join(f"{k} {v}" for k, v in s.dead_letter_error_types.items()) + ")"
            if s.dead_letter_error_types
            else ""
        )
    )
    return "\n".join(lines)


def what_next(s: DemoSummary, *, program: str, keep: bool, log_path: Path | None) -> str:
    """Where this run's configuration is, and commands to try against what it left behind."""
    lines = [
        "",
        "what next: this run's configuration (every value filled in) and commands that use it",
        f"  CONFIG={shlex.quote(s.config_path)}",
        f'  {program} dlq inspect --config "$CONFIG"             # dead letters by cause',
        f'  {program} replay --config "$CONFIG" --dry-run --to 3 # what a replay would send',
        f'  {program} retry inspect --config "$CONFIG"           # parked deliveries',
    ]
    running = "the partner simulator" if s.broker == "external" else "the broker and the partner simulator"
    if keep:
        lines.append(
            f"  {running} keep running for these ({s.bootstrap}, {s.partner_url}); Ctrl-C stops them"
        )
    else:
        lines.append(f"  ({running} have stopped: `demo --keep` keeps them up for these commands)")
    if log_path is not None:
        lines.append(f"  the Kafka clients' and the broker's own output: {log_path}")
    return "\n".join(lines)
