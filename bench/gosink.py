"""Builds (once, into .cache/) and starts the Go partner sink under bench/sink/, and reads its counters.

    from gosink import start_sink, sink_stats
    proc, url = start_sink(cpu=1)      # pinned with taskset when it exists
    ...
    sink_stats(url)                    # {"total": ..., "stackadapt": ..., "tiktok_items": ..., ...}

Run as a script it builds the binary and prints its path.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "bench" / "sink"
CACHE = ROOT / ".cache" / "bench"


def sink_binary() -> Path:
    """The sink built from the current source; rebuilt when main.go or go.mod change."""
    digest = hashlib.sha256()
    for name in ("go.mod", "main.go"):
        digest.update((SOURCE / name).read_bytes())
    binary = CACHE / f"sink-{digest.hexdigest()[:12]}"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise SystemExit("the benchmark's partner sink needs Go (https://go.dev/dl/) on PATH")
    CACHE.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    if not env.get("GOCACHE") and not env.get("HOME"):
        env["GOCACHE"] = str(CACHE / "go-build")
    partial = binary.with_suffix(".part")
    argv = [go, "build", "-trimpath", "-o", str(partial), "."]
    proc = subprocess.run(argv, cwd=SOURCE, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"building the partner sink failed:\n{proc.stderr}")
    partial.rename(binary)
    return binary


def pinned(argv: list[str], cpu: int | None) -> list[str]:
    """argv run on one CPU with taskset when both a CPU and taskset exist."""
    if cpu is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", str(cpu), *argv]


def start_sink(cpu: int | None = None, addr: str = "127.0.0.1:0") -> tuple[subprocess.Popen[str], str]:
    """Start the sink (pinned to `cpu` where possible); returns the process and its base URL."""
    proc = subprocess.Popen(
        pinned([str(sink_binary()), "-addr", addr], cpu),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise SystemExit(f"the partner sink did not start (exit {proc.wait()})")
    return proc, url


def _call(url: str, method: str = "GET", timeout: float = 30) -> Any:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return orjson.loads(resp.read())


def sink_stats(url: str) -> dict[str, int]:
    """Requests received per partner, TikTok data[] items, rejected and unknown requests, total."""
    result: dict[str, int] = _call(f"{url}/_sink/stats")
    return result


def sink_record(url: str, on: bool) -> None:
    """Start (or stop) keeping each request's arrival time, method, URI and body."""
    _call(f"{url}/_sink/record?on={int(on)}", "POST")


def sink_requests(url: str) -> list[dict[str, Any]]:
    """The kept requests (`at`, `method`, `uri`, `body` base64), oldest first; the sink forgets them."""
    result: list[dict[str, Any]] = _call(f"{url}/_sink/requests", timeout=120)
    return result


def sink_reset(url: str) -> None:
    _call(f"{url}/_sink/reset", "POST")


if __name__ == "__main__":
    print(sink_binary())
    sys.exit(0)
