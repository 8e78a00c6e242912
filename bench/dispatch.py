"""Dispatch benchmark: worker CPU per delivered request through `Bulkhead` beside a bare client's, and AIMD.

    .venv/bin/python -m bench.dispatch [--requests 20000] [--sink URL | --sink-cmd CMD]
        [--clients aiohttp,pyreqwest] [--capacity 16] [--adaptive-deliveries 4000] [--skip-adaptive]

Part 1, the hot path: the same partner requests (built by the router from examples/events.jsonl with
examples/config.yaml, endpoints pointed at a local responder) are sent
  bare <client>       64 coroutines looping over the requests with the client alone (the ceiling)
  bulkhead <client>   one task per delivery through `Dispatcher.deliver` (what the worker does per delivery)
and for each the process CPU (user+system, every thread: a client's own I/O thread counts) per request
and the ratio bulkhead/bare from the same run. The responder is a separate process, pinned to another
core with `taskset` where there is one: `--sink URL` uses one already running, `--sink-cmd` starts one
(e.g. the Go sink under bench/sink/), otherwise `streamproc simulate` is started (it costs CPU, so the
ratio is the figure to read, not the rate).

Part 2, adaptive concurrency: a simulator that serves `--capacity` requests at once and answers 429
above it (`--capacity-latency` ms per request), driven by 256 deliveries at a time through a bulkhead
with `concurrency: 64`, fixed and adaptive: requests sent, the 429 share, deliveries per second, and the
learned limit.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from streamproc.config import load_config
from streamproc.destinations.base import Request
from streamproc.dispatch import Bulkhead, BulkheadPolicy, Dispatcher
from streamproc.metrics import Metrics
from streamproc.router import Delivery, Router

ROOT = Path(__file__).resolve().parent.parent

# The benchmark also runs on an older tree (a "before"), whose bulkhead has no client seam.
HAS_CLIENT_SEAM = "client" in inspect.signature(Bulkhead).parameters

CONCURRENCY = 64


# -- requests --------------------------------------------------------------------------------------
def deliveries_for(sink: str) -> list[Delivery]:
    """One delivery per (event, matching subscription) of the examples, every endpoint at `sink`."""
    data = yaml.safe_load((ROOT / "examples" / "config.yaml").read_text())
    for dest in data["destinations"]:
        dest["endpoint"] = sink
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump(data, fh)
    try:
        router = Router(load_config(fh.name))
    finally:
        os.unlink(fh.name)
    out: list[Delivery] = []
    for line in (ROOT / "examples" / "events.jsonl").read_bytes().splitlines():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("type"):
            out.extend(d for d in router.route(event) if d.requests and d.error is None and not d.skipped)
    return out


def cycle(items: Sequence[Any], n: int) -> list[Any]:
    return [items[i % len(items)] for i in range(n)]


# -- measuring -------------------------------------------------------------------------------------
@dataclass
class Phase:
    name: str
    requests: int
    cpu: float
    wall: float

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.requests * 1e6

    @property
    def rate(self) -> float:
        return self.requests / self.wall


async def measure(name: str, n: int, run: Callable[[], Awaitable[None]]) -> Phase:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await run()
    return Phase(name, n, time.process_time() - cpu0, time.perf_counter() - wall0)


async def bare_aiohttp(requests: list[Request]) -> Callable[[], Awaitable[None]]:
    import aiohttp
    from yarl import URL

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY))

    async def run() -> None:
        it = iter(requests)

        async def worker() -> None:
            for r in it:
                async with session.request(
                    r.method, URL(r.url, encoded=True), headers=r.headers, data=r.body
                ) as resp:
                    await resp.read()

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    run.close = session.close  # type: ignore[attr-defined]
    return run


async def bare_pyreqwest(requests: list[Request]) -> Callable[[], Awaitable[None]]:
    from datetime import timedelta

    from pyreqwest.client import ClientBuilder

    client = ClientBuilder().max_connections(CONCURRENCY).build()
    timeout = timedelta(seconds=10)

    async def run() -> None:
        it = iter(requests)

        async def worker() -> None:
            for r in it:
                b = client.request(r.method, r.url).headers(r.headers).timeout(timeout)
                if r.body is not None:
                    b = b.body_bytes(r.body)
                resp = await b.build().send()
                await resp.bytes()

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    run.close = client.close  # type: ignore[attr-defined]
    return run


async def through_dispatcher(
    dispatcher: Dispatcher, deliveries: list[Delivery], window: int = 1000
) -> dict[str, int]:
    """One task per delivery, at most `window` in flight (the worker's in-flight bound, scaled down)."""
    loop = asyncio.get_running_loop()
    outcomes: dict[str, int] = {}
    room = asyncio.Event()
    in_flight = 0

    def done(task: asyncio.Task[Any]) -> None:
        nonlocal in_flight
        in_flight -= 1
        outcome = task.result().outcome
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if in_flight < window // 2:
            room.set()

    for d in deliveries:
        if in_flight >= window:
            room.clear()
            await room.wait()
        in_flight += 1
        loop.create_task(dispatcher.deliver(d)).add_done_callback(done)
    while in_flight:
        room.clear()
        await room.wait()
    return outcomes


def dispatcher_for(deliveries: list[Delivery], client: str | None, **policy: Any) -> Dispatcher:
    metrics = Metrics()
    kwargs: dict[str, Any] = {}
    if client is not None and HAS_CLIENT_SEAM:
        kwargs["client"] = client  # each bulkhead makes and owns one
    dests = sorted({d.destination for d in deliveries})
    return Dispatcher(
        Bulkhead(
            BulkheadPolicy(destination=dest, concurrency=CONCURRENCY, **policy), metrics=metrics, **kwargs
        )
        for dest in dests
    )


# -- responders ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(args: list[str], core: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core), *args]
    return args


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on {port}")


def start_simulator(port: int, extra: list[str] | None = None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "streamproc", "simulate", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        pin([*cmd, "--no-record", *(extra or [])], 1), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wait_listening(port, proc, "the simulator")
    return proc


def start_responder(sink_cmd: str | None) -> tuple[str, subprocess.Popen[bytes]]:
    """The partner side on core 1: `sink_cmd` ({port} replaced) when given, else the simulator."""
    port = free_port()
    if sink_cmd:
        proc = subprocess.Popen(pin(shlex.split(sink_cmd.format(port=port)), 1))
        wait_listening(port, proc, "the responder")
    else:
        proc = start_simulator(port)
    return f"http://127.0.0.1:{port}", proc


# -- part 1 ----------------------------------------------------------------------------------------
async def hot_path(sink: str, n: int, clients: list[str]) -> None:
    base = deliveries_for(sink)
    deliveries = cycle(base, n)
    requests = [r for d in deliveries for r in d.requests]
    methods = sorted({r.method for r in requests})
    print(
        f"requests: {len(requests)} ({', '.join(methods)}) from {len(base)} distinct deliveries, "
        f"{CONCURRENCY} in flight, responder {sink}"
    )
    warm = requests[: min(2000, len(requests))]
    results: list[tuple[str, Phase, Phase]] = []
    for client in clients:
        bare_factory = {"aiohttp": bare_aiohttp, "pyreqwest": bare_pyreqwest}[client]
        warm_run = await bare_factory(warm)  # imports and first connections off the clock
        await warm_run()
        await warm_run.close()  # type: ignore[attr-defined]
        bare = await bare_factory(requests)
        bare_phase = await measure(f"bare {client}", len(requests), bare)
        await bare.close()  # type: ignore[attr-defined]
        dispatcher = dispatcher_for(deliveries, client)
        await through_dispatcher(dispatcher, deliveries[: len(warm)])
        outcomes: dict[str, int] = {}

        async def run(dispatcher: Dispatcher = dispatcher, outcomes: dict[str, int] = outcomes) -> None:
            outcomes.update(await through_dispatcher(dispatcher, deliveries))

        bulk_phase = await measure(f"bulkhead {client}", len(requests), run)
        await dispatcher.close()
        if outcomes.get("delivered", 0) != len(deliveries):
            print(f"  warning: bulkhead {client} outcomes {outcomes}")
        results.append((client, bare_phase, bulk_phase))
    print(f"{'phase':<22}{'req/s':>10}{'CPU us/req':>12}{'vs bare':>9}")
    for _client, bare_phase, bulk_phase in results:
        for phase in (bare_phase, bulk_phase):
            ratio = phase.cpu_us / bare_phase.cpu_us
            print(f"{phase.name:<22}{phase.rate:>10.0f}{phase.cpu_us:>12.1f}{ratio:>9.2f}")


# -- part 2 ----------------------------------------------------------------------------------------
async def adaptive_vs_fixed(base: str, n: int, capacity: int, latency_ms: float) -> None:
    import aiohttp

    url = f"{base}/segment/bench-site/track"
    deliveries = [
        Delivery(
            f"a{i}",
            "seg",
            "bench",
            "track",
            [Request("POST", url, {"content-type": "application/json"}, f'{{"n":{i}}}'.encode())],
        )
        for i in range(n)
    ]
    print(
        f"\nadaptive concurrency: {n} deliveries, 256 handed over at a time, partner capacity {capacity} "
        f"at {latency_ms:g} ms per request (429 beyond), limits.concurrency 64, backoff 0.05-1 s"
    )
    print(f"{'mode':<10}{'deliv/s':>9}{'requests':>10}{'429 share':>11}{'dead':>6}{'limit':>7}")
    async with aiohttp.ClientSession() as control:
        for adaptive in (False, True):
            async with control.post(f"{base}/_sim/reset"):
                pass
            fault = {"partner": "seg", "capacity": capacity, "latency": latency_ms}
            async with control.post(f"{base}/_sim/faults", data=orjson.dumps(fault)) as r:
                assert r.status == 200, await r.text()
            bulkhead = Bulkhead(
                BulkheadPolicy(
                    destination="seg",
                    concurrency=64,
                    adaptive=adaptive,
                    backoff_initial=0.05,
                    backoff_max=1.0,
                )
            )
            dispatcher = Dispatcher([bulkhead])
            started = time.perf_counter()
            outcomes = await through_dispatcher(dispatcher, deliveries, window=256)
            wall = time.perf_counter() - started
            limit = bulkhead.limiter.limit
            await dispatcher.close()
            async with control.get(f"{base}/_sim/stats") as r:
                answers = (await r.json())["partners"].get("seg", {})
            sent = sum(answers.values())
            share = answers.get("429", 0) / sent if sent else 0.0
            mode = "adaptive" if adaptive else "fixed 64"
            print(
                f"{mode:<10}{n / wall:>9.0f}{sent:>10}{share:>10.1%}{outcomes.get('dead_lettered', 0):>6}"
                f"{limit:>7}"
            )


def runner() -> asyncio.Runner:
    """uvloop where installed, as the worker runs."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--sink", help="base URL of a responder already running")
    ap.add_argument("--sink-cmd", help="command that starts a responder; {port} is replaced by its port")
    ap.add_argument("--clients", default="aiohttp,pyreqwest")
    ap.add_argument("--skip-hot-path", action="store_true")
    ap.add_argument("--skip-adaptive", action="store_true")
    ap.add_argument("--capacity", type=int, default=16, help="the simulated partner's concurrent requests")
    ap.add_argument("--capacity-latency", type=float, default=20.0, help="ms per request it serves")
    ap.add_argument("--adaptive-deliveries", type=int, default=4000)
    args = ap.parse_args()
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if not args.skip_hot_path:
            sink = args.sink
            if sink is None:
                sink, proc = start_responder(args.sink_cmd)
                procs.append(proc)
            clients = [c for c in args.clients.split(",") if c]
            with runner() as r:
                r.run(hot_path(sink, args.requests, clients))
        if not args.skip_adaptive:
            port = free_port()
            procs.append(start_simulator(port))
            with runner() as r:
                r.run(
                    adaptive_vs_fixed(
                        f"http://127.0.0.1:{port}",
                        args.adaptive_deliveries,
                        args.capacity,
                        args.capacity_latency,
                    )
                )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
