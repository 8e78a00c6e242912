"""Two worker revisions in steady state on one backlog: paired windows, taken in turn.

    .venv/bin/python -m bench.steady --baseline REV|PATH [--mix stackadapt] [--rounds 8]
                                     [--window 5] [--events 400000] [--all-destinations]

`bench.e2e` times a whole drain of a short backlog, start-up of the flow included (connections
opening, the first fetches). This one asks the steady-state question: one long backlog, and each
round starts the current worker and the baseline's in turn (the order alternating round by
round), each in its own consumer group on the same topic, and measures one window of --window
seconds starting a second after the worker's first request reached the sink. Each figure is the
window's requests per second of the worker's CPU (all its threads, from /proc) and per second of
wall clock, and the share of its core used. The per-round ratio current/baseline of requests per
CPU-second pairs windows taken seconds apart, so a machine whose speed drifts between rounds
moves both sides of a ratio alike; the median of the ratios is the figure to read.

The raw limit from the same run: the bare pyreqwest client sending the mix's requests on the
worker's core (as in bench.e2e). Only the mix's own partner is configured unless
--all-destinations. The worker, and the bare client, run on one core; the broker, the Go sink and
this process on another, where taskset exists.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import yaml

from bench.e2e import (
    MIX_DESTINATION,
    MIXES,
    ROOT,
    Variant,
    bare_client,
    base_config,
    choose_cpus,
    cpu_seconds,
    create_topic,
    make_events,
    prepare_baseline,
    produce,
    start_broker,
    start_worker,
    stop,
)
from bench.gosink import sink_stats, start_sink
from streamproc.config import load_config
from streamproc.router import Router

PARTITIONS = 8
WARM_SECONDS = 1.0
"""Seconds after a worker's first request before its window opens."""


def window(
    variant: Variant, config: Path, sink_url: str, work: Path, cpu: int | None, seconds: float
) -> tuple[float, float, float]:
    """Start the worker, measure one window of its steady state, stop it: (requests per
    CPU-second, requests per second, core share)."""
    before = sink_stats(sink_url)["total"]
    worker, log = start_worker(variant, config, work / f"{variant.revision.replace(' ', '-')}.log", cpu)
    try:
        deadline = time.monotonic() + 120
        while sink_stats(sink_url)["total"] == before:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{variant.label}: no request reached the sink (log in {work})")
            time.sleep(0.01)
        time.sleep(WARM_SECONDS)
        sent0, cpu0, wall0 = sink_stats(sink_url)["total"], cpu_seconds(worker.pid), time.perf_counter()
        time.sleep(seconds)
        sent1, cpu1, wall1 = sink_stats(sink_url)["total"], cpu_seconds(worker.pid), time.perf_counter()
    finally:
        stop(worker)
        log.close()
    requests, used, wall = sent1 - sent0, cpu1 - cpu0, wall1 - wall0
    return requests / used, requests / wall, used / wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, metavar="REV|PATH")
    ap.add_argument("--mix", default="stackadapt", choices=sorted(MIXES))
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--window", type=float, default=5.0, help="seconds measured per worker and round")
    ap.add_argument("--events", type=int, default=400_000, help="backlog events (enough for every window)")
    ap.add_argument("--all-destinations", action="store_true")
    ap.add_argument("--raw-requests", type=int, default=20000)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="streamproc-steady-"))
    worker_cpu, sink_cpu = choose_cpus(True)
    bootstrap, kafka_dir = start_broker(work)
    sink, sink_url = start_sink(sink_cpu)
    name, source, worktree = prepare_baseline(args.baseline, work)
    revisions = [Variant("current", ROOT, one_destination=not args.all_destinations)]
    revisions.append(Variant(name, source, one_destination=not args.all_destinations))
    try:
        tag = f"steady-{args.mix}-{uuid.uuid4().hex[:6]}"
        create_topic(bootstrap, tag, PARTITIONS)
        create_topic(bootstrap, f"{tag}-dlq", 1)
        events = make_events(args.events, MIXES[args.mix], seed=1, prefix=tag)
        produce(bootstrap, tag, [orjson.dumps(e) for e in events], [e["userId"].encode() for e in events])
        configs = []
        for i, variant in enumerate(revisions):
            data = variant.apply(
                base_config(bootstrap, [tag], f"{tag}-dlq", f"{tag}-g{i}", sink_url), args.mix
            )
            path = work / f"config-{i}.yaml"
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            configs.append(path)
        router = Router(load_config(configs[0]))
        sample = [r for e in events[: args.raw_requests] for d in router.route(e) for r in d.requests]
        bare = bare_client("pyreqwest", sample[: args.raw_requests], work, worker_cpu)
        del events

        results: list[list[tuple[float, float, float]]] = [[], []]
        for round_no in range(args.rounds):
            order = (0, 1) if round_no % 2 == 0 else (1, 0)
            for i in order:
                figures = window(revisions[i], configs[i], sink_url, work, worker_cpu, args.window)
                results[i].append(figures)
                per_cpu, per_s, share = figures
                print(
                    f"  round {round_no + 1} {revisions[i].revision:18s} {per_cpu:7,.0f} req/CPU-s "
                    f"{per_s:7,.0f} req/s  core {share:4.0%}",
                    flush=True,
                )
    finally:
        sink.terminate()
        if kafka_dir is not None:
            subprocess.run([str(ROOT / "scripts" / "kafka-local"), "stop", "--dir", str(kafka_dir)])
        if worktree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT)
        shutil.rmtree(work, ignore_errors=True)

    destinations = "all three partners" if args.all_destinations else MIX_DESTINATION[args.mix][0]
    print(f"\n== {args.mix}-heavy mix, {destinations}, {args.rounds} rounds of {args.window:g} s windows")
    if isinstance(bare, dict):
        print(
            f"  raw HTTP pyreqwest {bare['requests_per_s']:9,.0f} requests/s  CPU "
            f"{bare['cpu_us_per_request']:5.0f} us/request (the worker's core)"
        )
    else:
        print(f"  raw HTTP pyreqwest {bare}")
    for i, variant in enumerate(revisions):
        rows = results[i]
        per_cpu, per_s, share = (statistics.median(r[k] for r in rows) for k in range(3))
        print(
            f"  {variant.revision:18s} median {per_cpu:7,.0f} req/CPU-s {per_s:7,.0f} req/s core {share:4.0%}"
        )
    ratios = [a[0] / b[0] for a, b in zip(results[0], results[1], strict=True)]
    drains = [a[1] / b[1] for a, b in zip(results[0], results[1], strict=True)]
    print("  current/baseline per round, req/CPU-s: " + " ".join(f"{r:.2f}" for r in ratios))
    print(f"  median ratio: req/CPU-s {statistics.median(ratios):.3f}, req/s {statistics.median(drains):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
