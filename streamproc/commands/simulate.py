"""`streamproc simulate`: serve the partner simulator (StackAdapt, TikTok, Seg) until interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any

from streamproc.simulator import PartnerSimulator


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="serve the partner simulator: partner endpoints on one base URL, control API under /_sim/",
        description=(
            "Serve StackAdapt (GET /saq_pxl), TikTok (POST /open_api/v1.3/event/track/) and Seg"
            " (POST /segment/{websiteId}/{operation}) on one base URL. Requests are recorded and faults"
            " injected through /_sim/requests, /_sim/faults and /_sim/stats."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=8787, help="port to listen on; 0 picks a free one (default 8787)"
    )
    p.add_argument("--seed", type=int, default=None, help="seed for latency sampling (reproducible runs)")
    p.add_argument(
        "--no-record",
        dest="record",
        action="store_false",
        help="keep only /_sim/stats counts, not every request (long benchmarks)",
    )
    p.set_defaults(handler=run)


def run(args: Any) -> int:
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(_serve(args.host, args.port, args.seed, args.record))
    return 0


async def _serve(host: str, port: int, seed: int | None, record: bool) -> None:
    simulator = PartnerSimulator(seed=seed, record=record)
    base_url = await simulator.start(host, port)
    # The base URL on stdout lets a parent process start the simulator with --port 0 and read it.
    print(base_url, flush=True)
    print(f"partner simulator listening on {base_url} (control API: {base_url}/_sim/)", file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await simulator.stop()
