"""Where the worker's memory goes: start-up by import group, and the peak while draining a backlog.

    .venv/bin/python -m bench.memory [--events 100000] [--mix stackadapt,tiktok] [--one-destination]
                                     [--variant NAME=JSON ...] [--tracemalloc] [--imports-only]

Start-up (`imports`): a fresh interpreter imports what `streamproc run` imports, group by group
(the standard library first, then each third-party package, then streamproc's own modules), then
loads the example configuration, compiles its routes and builds the worker without starting it;
the resident set (VmRSS) after each step, so each group is charged only for what it added.

Drain: for each mix and each variant, `streamproc run` (pinned to one core where taskset exists)
drains a backlog from a real broker to the Go sink of bench/sink/ (as bench/e2e.py does); printed
are its resident set when the first request arrives and its peak (VmHWM) at the end of the drain,
with the drain rate and the share of its core it used. A variant is a JSON object merged into the
configuration, so that the difference between two variants is what one buffer costs:

    --variant 'prefetch-1MiB={"kafka": {"client": {"queued.max.messages.kbytes": 1024}}}'
    --variant 'window-1000={"limits": {"max_in_flight_events": 1000, "resume_in_flight_events": 500}}'

`--rounds N` runs the variants N times, interleaved, and prints the median and the range of each
figure (the machine may be shared). `--tracemalloc` runs the variants once more with tracemalloc
on (1 frame) and prints, half-way through the drain, the Python allocations alive by file and
line, and the objects alive by type: what the per-event objects are. Its own bookkeeping inflates
the resident set, so its runs are reported apart from the figures above.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import yaml

from bench import e2e
from bench.gosink import pinned, sink_stats, start_sink

ROOT = Path(__file__).resolve().parent.parent

# Run in the worker's interpreter before `streamproc run`: with STREAMPROC_MEMORY_REPORT set,
# tracemalloc is on and SIGUSR1 writes a report of what is alive to that file.
WORKER_PRELUDE = r"""
import os, runpy, signal, sys
report = os.environ.get("STREAMPROC_MEMORY_REPORT")
if report:
    import gc, tracemalloc
    from collections import Counter
    tracemalloc.start(1)

    def dump(signum, frame):
        snapshot = tracemalloc.take_snapshot()
        stats = snapshot.statistics("lineno")
        kinds = Counter(type(o).__qualname__ for o in gc.get_objects())
        with open(report, "w") as out:
            status = open("/proc/self/status").read()
            out.write("".join(l + "\n" for l in status.splitlines() if l.startswith(("VmRSS", "VmHWM"))))
            out.write(f"traced {sum(s.size for s in stats)}\n")
            for s in stats[:40]:
                out.write(f"line {s.size} {s.count} {s.traceback[0].filename}:{s.traceback[0].lineno}\n")
            for name, n in kinds.most_common(30):
                out.write(f"type {n} {name}\n")

    signal.signal(signal.SIGUSR1, dump)
runpy.run_module("streamproc", run_name="__main__", alter_sys=True)
"""

# What `streamproc run` loads, checked against the modules it really imports (the rest: "other").
IMPORT_CHILD = r"""
import importlib, sys, json
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
steps = [("interpreter", rss())]
groups = json.loads(sys.argv[1])
for name, modules in groups:
    for m in modules:
        try:
            importlib.import_module(m)
        except Exception:
            pass
    steps.append((name, rss()))
from streamproc.config import load_config
from streamproc.router import Router
from streamproc.metrics import Metrics
config = load_config(sys.argv[2])
steps.append(("configuration loaded", rss()))
router = Router(config)
steps.append(("routes compiled", rss()))
metrics = Metrics()
steps.append(("metrics registry", rss()))
from streamproc.runs.worker import Worker
worker = Worker(config, metrics=metrics, router=router)
steps.append(("worker built (clients, consumers not started)", rss()))
print(json.dumps(steps))
"""

LIST_CHILD = r"""
import sys, json
from streamproc.cli import build_parser
from streamproc.config import load_config
from streamproc.runs.worker import Worker
from streamproc.logging import config_secrets, configure_logging, register_secrets
build_parser(only="run")
Worker(load_config(sys.argv[1]))
print(json.dumps(sorted(sys.modules)))
"""


def import_groups(config: Path) -> list[tuple[str, list[str]]]:
    """The modules a worker has loaded before it starts, grouped: stdlib, each third-party top-level
    package, streamproc."""
    proc = subprocess.run(
        [sys.executable, "-c", LIST_CHILD, str(config)], capture_output=True, text=True, cwd=ROOT, check=True
    )
    modules = orjson.loads(proc.stdout.strip().splitlines()[-1])
    stdlib: list[str] = []
    third: dict[str, list[str]] = {}
    own: list[str] = []
    for m in modules:
        top = m.split(".")[0]
        if top in sys.stdlib_module_names or top.startswith("_"):
            stdlib.append(m)
        elif top == "streamproc":
            own.append(m)
        else:
            third.setdefault(top, []).append(m)
    groups = [("standard library", stdlib)]
    groups += [(f"{top}", mods) for top, mods in sorted(third.items())]
    groups.append(("streamproc (run's imports: cli, commands, config, router, app, ...)", own))
    return groups


def startup(config: Path) -> list[tuple[str, float]]:
    groups = import_groups(config)
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_CHILD, orjson.dumps(groups).decode(), str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    steps: list[tuple[str, float]] = orjson.loads(proc.stdout.strip().splitlines()[-1])
    return steps


def print_startup(steps: list[tuple[str, float]]) -> None:
    print("start-up, VmRSS after each step (MB):")
    prev = 0.0
    for name, rss in steps:
        print(f"  {name:<62} +{rss - prev:5.1f}  {rss:6.1f}")
        prev = rss


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def memory_mb(pid: int, key: str) -> float:
    return e2e.memory_mb(pid, key)


def drain(
    mix: str,
    topic: str,
    dlq: str,
    bootstrap: str,
    sink_url: str,
    work: Path,
    overrides: dict[str, Any],
    one_destination: bool,
    wanted: e2e.Expected,
    events: int,
    cpu: int | None,
    report: Path | None,
) -> dict[str, Any]:
    group = f"{topic}-{uuid.uuid4().hex[:6]}"
    data = e2e.base_config(bootstrap, [topic], dlq, group, sink_url)
    if one_destination:
        keep = e2e.MIX_DESTINATION[mix][0]
        data["destinations"] = [d for d in data["destinations"] if d["id"] == keep]
    data = merge(data, overrides)
    config = work / f"{group}.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    env = dict(os.environ)
    if report is not None:
        env["STREAMPROC_MEMORY_REPORT"] = str(report)
    log = (work / f"{group}.log").open("wb")
    argv = [sys.executable, "-c", WORKER_PRELUDE, "run", "--config", str(config)]
    before = sink_stats(sink_url)
    worker = subprocess.Popen(pinned(argv, cpu), stdout=log, stderr=log, cwd=ROOT, env=env)
    out: dict[str, Any] = {}
    try:
        while e2e.delivered(sink_stats(sink_url), before) == 0:
            if worker.poll() is not None:
                raise SystemExit(f"the worker ended: {(work / f'{group}.log').read_text()[-2000:]}")
            time.sleep(0.01)
        out["start_rss_mb"] = memory_mb(worker.pid, "VmRSS")
        started, cpu0 = time.perf_counter(), e2e.cpu_seconds(worker.pid)
        dumped = report is None
        last, last_change = -1, time.perf_counter()
        highest, at_highest = 0.0, ""
        while True:
            count = e2e.delivered(sink_stats(sink_url), before)
            rss = memory_mb(worker.pid, "VmRSS")
            if rss > highest + 0.5:
                # The mappings at the highest resident set seen (read from outside the worker).
                with contextlib.suppress(OSError):
                    at_highest = Path(f"/proc/{worker.pid}/smaps").read_text()
                    highest = rss
            if count >= wanted.deliveries:
                break
            if not dumped and count >= wanted.deliveries // 2:
                worker.send_signal(signal.SIGUSR1)
                dumped = True
            if count != last:
                last, last_change = count, time.perf_counter()
            elif time.perf_counter() - last_change > e2e.STALL_SECONDS:
                out["error"] = f"stalled at {count} of {wanted.deliveries} deliveries"
                break
            if worker.poll() is not None:
                raise SystemExit(f"the worker ended: {(work / f'{group}.log').read_text()[-2000:]}")
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        out["drain_events_per_s"] = events / elapsed
        out["core_share"] = (e2e.cpu_seconds(worker.pid) - cpu0) / elapsed
        out["peak_rss_mb"] = memory_mb(worker.pid, "VmHWM")
        out["end_rss_mb"] = memory_mb(worker.pid, "VmRSS")
        out["smaps_at_highest"] = smaps_breakdown(at_highest)
        return out
    finally:
        e2e.stop(worker)
        log.close()


def smaps_breakdown(text: str) -> dict[str, float]:
    """Resident MB by kind of mapping: shared libraries and other files, the main heap, anonymous
    mappings of exactly 1 MiB (the interpreter's object arenas), of 64 MiB reservations (the C
    allocator's per-thread arenas), of 8 MiB (thread stacks), and the other anonymous ones (large
    allocations)."""
    out: dict[str, float] = {}
    kind = ""
    for line in text.splitlines():
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and not head[0].endswith(":"):
            start, end = (int(x, 16) for x in head[0].split("-"))
            size = end - start
            name = head[5] if len(head) > 5 else ""
            if name.startswith("/"):
                kind = "files (.so and others)"
            elif name == "[heap]":
                kind = "main heap (brk)"
            elif name.startswith("["):
                kind = "other"
            elif size == 1 << 20:
                kind = "anonymous 1 MiB (object arenas)"
            elif size in (8 << 20, (8 << 20) + 4096) or size == 8 << 20:
                kind = "anonymous 8 MiB (thread stacks)"
            elif size <= 64 << 20 and (start % (64 << 20)) == 0:
                kind = "anonymous 64 MiB-aligned (thread malloc arenas)"
            else:
                kind = "anonymous, other"
        elif head[0] == "Rss:":
            out[kind] = out.get(kind, 0.0) + int(head[1]) / 1024
    return out


def print_report(path: Path, top: int) -> None:
    if not path.exists():
        print("    (no report written)")
        return
    lines = path.read_text().splitlines()
    for line in lines:
        if line.startswith(("VmRSS", "VmHWM", "traced")):
            kind, value = line.split(None, 1)
            print(f"    {kind} {value}")
    print("    alive by line (KiB, count):")
    shown = 0
    for line in lines:
        if line.startswith("line ") and shown < top:
            _, size, count, where = line.split(" ", 3)
            where = where.replace(str(ROOT) + "/", "").replace(sys.prefix, "<venv>")
            print(f"      {int(size) / 1024:9.0f} {int(count):8d}  {where}")
            shown += 1
    print("    objects alive by type:")
    kinds = [line.split(" ", 2)[1:] for line in lines if line.startswith("type ")]
    print("      " + ", ".join(f"{name} {n}" for n, name in kinds[:24]))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100000, help="backlog events per mix")
    parser.add_argument("--mix", default="stackadapt,tiktok")
    parser.add_argument("--one-destination", action="store_true", help="configure only the mix's own partner")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="a configuration variant (JSON merged into the configuration); repeatable",
    )
    parser.add_argument("--rounds", type=int, default=1, help="run the variants this many times, interleaved")
    parser.add_argument("--tracemalloc", action="store_true", help="also show what is alive half-way")
    parser.add_argument("--top", type=int, default=25, help="lines of the tracemalloc report")
    parser.add_argument("--imports-only", action="store_true", help="only the start-up breakdown")
    parser.add_argument(
        "--smaps", action="store_true", help="the resident set by kind of mapping at its highest (MB)"
    )
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="streamproc-memory-"))
    example = work / "example.yaml"
    example.write_text(
        yaml.safe_dump(e2e.base_config("127.0.0.1:9", ["t"], "t-dlq", "g", "http://127.0.0.1:9"))
    )
    print_startup(startup(example))
    if args.imports_only:
        return 0
    variants: list[tuple[str, dict[str, Any]]] = [("default", {})]
    for spec in args.variant:
        name, _, text = spec.partition("=")
        variants.append((name, orjson.loads(text)))
    cpus = e2e.choose_cpus(not args.no_pin)
    bootstrap, run_dir = e2e.start_broker(work)
    sink_proc, sink_url = start_sink(cpus[1])
    topics: list[str] = []
    try:
        for mix in args.mix.split(","):
            tag = f"mem-{mix}-{uuid.uuid4().hex[:6]}"
            topic, dlq, events = e2e.backlog(bootstrap, tag, mix, args.events, topics)
            # What the sink must receive: every request of the configuration the workers run.
            config = work / f"{tag}.yaml"
            data = e2e.base_config(bootstrap, [topic], dlq, tag, sink_url)
            if args.one_destination:
                keep = e2e.MIX_DESTINATION[mix][0]
                data["destinations"] = [d for d in data["destinations"] if d["id"] == keep]
            config.write_text(yaml.safe_dump(data, sort_keys=False))
            router = e2e.Router(e2e.load_config(config))
            wanted = e2e.Expected()
            for e in events:
                for d in router.route(e):
                    for r in d.requests:
                        wanted.add(r)
            del router, events
            scope = "one destination" if args.one_destination else "all three destinations"
            print(f"\n== {mix}-heavy mix, {scope}: {args.events:,} events -> {wanted.deliveries:,} requests")
            head = f"{'variant':<28} {'RSS at first request':>20} {'peak RSS':>9} {'drain ev/s':>10}"
            print(f"  {head} {'core':>5}")
            results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
            # Rounds interleave the variants, so that a change in the machine's load hits each alike.
            run = functools.partial(
                drain, mix, topic, dlq, bootstrap, sink_url, work, one_destination=args.one_destination
            )
            for name, overrides in [v for _ in range(args.rounds) for v in variants]:
                r = run(overrides, wanted=wanted, events=args.events, cpu=cpus[0], report=None)
                print(
                    f"  {name:<28} {r['start_rss_mb']:>17.0f} MB {r['peak_rss_mb']:>6.0f} MB"
                    f" {r['drain_events_per_s']:>10,.0f} {r['core_share']:>5.0%}"
                    + (f"  !! {r['error']}" if "error" in r else "")
                )
                results[name].append(r)
                if args.smaps:
                    parts = sorted(r["smaps_at_highest"].items(), key=lambda kv: -kv[1])
                    print("    at the highest: " + ", ".join(f"{k} {v:.1f}" for k, v in parts if v >= 0.1))
            if args.rounds > 1:
                print(f"  {args.rounds} rounds, median (min-max):")
                for name, runs in results.items():
                    cols = []
                    for key, fmt in (("peak_rss_mb", "{:.0f} MB"), ("drain_events_per_s", "{:,.0f} ev/s")):
                        vals = sorted(run[key] for run in runs)
                        mid = fmt.format(statistics.median(vals))
                        cols.append(f"{mid} ({fmt.format(vals[0])}-{fmt.format(vals[-1])})")
                    shares = sorted(run["core_share"] for run in runs)
                    cols.append(f"core {statistics.median(shares):.0%} ({shares[0]:.0%}-{shares[-1]:.0%})")
                    print(f"  {name:<28} " + "  ".join(cols))
            if args.tracemalloc:
                for name, overrides in variants:
                    report = work / f"{tag}-{name}.report"
                    print(f"  -- {name}, tracemalloc on, half-way through the drain:")
                    run(overrides, wanted=wanted, events=args.events, cpu=cpus[0], report=report)
                    print_report(report, args.top)
    finally:
        sink_proc.terminate()
        sink_proc.wait(30)
        e2e.delete_topics(bootstrap, topics)
        if run_dir is not None:
            with contextlib.suppress(Exception):
                subprocess.run(
                    [str(ROOT / "scripts" / "kafka-local"), "stop", "--dir", str(run_dir)],
                    capture_output=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
