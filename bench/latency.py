"""Latency benchmark: per-delivery latency at fixed offered rates through `Dispatcher`, beside a bare client.

    .venv/bin/python -m bench.latency [--rates 200,1000] [--seconds 4] [--clients aiohttp,pyreqwest]
        [--sink URL | --sink-cmd CMD]

For each client and rate, the same partner requests as bench/dispatch.py are started on a fixed
schedule (one task each, never waiting for earlier ones), first with the client alone (`bare`: the
floor this machine and responder allow), then as deliveries through `Dispatcher.deliver` (what the
worker does per delivery). Printed: p50/p90/p99/max milliseconds from the scheduled start to the
answer, and how late the schedule itself ran (a loop that cannot keep up shows here, not as latency).
The process runs on core 0 and the responder on core 1 where there are two; on a shared machine run
it twice and read the rows of one run together.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable

from bench.dispatch import (
    cycle,
    deliveries_for,
    dispatcher_for,
    runner,
    start_responder,
)
from streamproc.client import make_client
from streamproc.router import Delivery


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def at_rate(rate: float, n: int, one: Callable[[int], Awaitable[object]]) -> tuple[list[float], float]:
    """Start `one(i)` at `start + i / rate`; each call's latency from its scheduled start, and the
    worst lag of the schedule."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    lag = 0.0

    async def timed(i: int, due: float) -> None:
        await one(i)
        latencies.append(time.perf_counter() - due)

    tasks = []
    start = time.perf_counter()
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lag = max(lag, time.perf_counter() - due)
        tasks.append(loop.create_task(timed(i, due)))
    await asyncio.gather(*tasks)
    return latencies, lag


def row(name: str, rate: float, latencies: list[float], lag: float) -> None:
    ms = [percentile(latencies, q) * 1000 for q in (0.5, 0.9, 0.99)]
    print(
        f"{name:<22}{rate:>7.0f}{ms[0]:>8.1f}{ms[1]:>8.1f}{ms[2]:>8.1f}"
        f"{max(latencies) * 1000:>8.1f}{lag * 1000:>8.1f}",
        flush=True,
    )


async def latencies(sink: str, rates: list[float], seconds: float, clients: list[str]) -> None:
    base = deliveries_for(sink)
    print(f"{len(base)} distinct deliveries, responder {sink}, {seconds:g} s per row")
    print(f"{'phase':<22}{'req/s':>7}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'lag':>8}  (ms)")
    for client in clients:
        for rate in rates:
            await one_rate(base, client, rate, max(50, int(rate * seconds)))


async def one_rate(base: list[Delivery], client: str, rate: float, n: int) -> None:
    """The bare and the dispatcher row of one client at one rate; the first 200 calls of each warm up
    (imports, connections) off the record."""
    deliveries = cycle(base, n)
    requests = [d.requests[0] for d in deliveries]
    bare = make_client(client)

    def send(i: int) -> Awaitable[object]:
        return bare.send(requests[i], 10.0)

    await at_rate(rate, min(n, 200), send)
    row(f"bare {client}", rate, *await at_rate(rate, n, send))
    await bare.close()
    dispatcher = dispatcher_for(deliveries, client)

    def deliver(i: int) -> Awaitable[object]:
        return dispatcher.deliver(deliveries[i])

    await at_rate(rate, min(n, 200), deliver)
    row(f"dispatcher {client}", rate, *await at_rate(rate, n, deliver))
    await dispatcher.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="200,1000", help="offered requests per second (comma-separated)")
    ap.add_argument("--seconds", type=float, default=4.0, help="how long each row offers its rate")
    ap.add_argument("--clients", default="aiohttp,pyreqwest")
    ap.add_argument("--sink", help="base URL of a responder already running")
    ap.add_argument("--sink-cmd", help="command that starts a responder; {port} is replaced by its port")
    args = ap.parse_args()
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    proc = None
    sink = args.sink
    try:
        if sink is None:
            sink, proc = start_responder(args.sink_cmd)
        rates = [float(r) for r in args.rates.split(",") if r]
        clients = [c for c in args.clients.split(",") if c]
        with runner() as r:
            r.run(latencies(sink, rates, args.seconds, clients))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
