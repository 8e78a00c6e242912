"""Measures the partner simulator's requests per second with a concurrent aiohttp client loop."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import aiohttp

PATHS = {
    "stackadapt": ("GET", "/saq_pxl?segment_ss=1&event_type=conversion&uid=px1&args=%7B%22a%22%3A1%7D"),
    "tiktok": ("POST", "/open_api/v1.3/event/track/"),
    "seg": ("POST", "/segment/abc8fb18-7559-4324-9921-a4b5015b4a1c/track"),
}
BODY = b'{"event_source":"offline","event_source_id":"1","partner_name":"Segment","data":[{"event":"x"}]}'


async def hammer(base: str, partner: str, seconds: float, concurrency: int) -> tuple[int, float]:
    method, path = PATHS[partner]
    url = base + path
    data = None if method == "GET" else BODY
    done = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with session.request(method, url, data=data) as r:
                    await r.read()
                    if r.status >= 300:
                        raise RuntimeError(f"unexpected status {r.status}")
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done, time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process (Linux), to report the server's cost per request."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", help="a running simulator; default: start `streamproc simulate`")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    proc = None
    base = args.base_url
    if base is None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamproc", "simulate", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
    try:
        print(f"simulator {base}, {os.cpu_count()} cores, {args.concurrency} clients, {args.seconds}s each")
        for partner in PATHS:
            before = cpu_seconds(proc.pid) if proc is not None else 0.0
            count, elapsed = asyncio.run(hammer(base, partner, args.seconds, args.concurrency))
            line = f"{partner:<11} {count:>8} requests  {count / elapsed:>9.0f} req/s"
            if proc is not None and count:
                per_request = (cpu_seconds(proc.pid) - before) / count
                line += f"  simulator CPU {per_request * 1e6:>5.0f} us/req"
                line += f" (~{1 / per_request:,.0f} req/s/core)"
            print(line)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
