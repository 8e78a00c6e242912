"""`streamproc simulate`: serve the partner simulator (StackAdapt, TikTok, Seg) until interrupted."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


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
    from streamproc.devtools.simulator import serve

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.host, args.port, seed=args.seed, record=args.record))
    return 0
