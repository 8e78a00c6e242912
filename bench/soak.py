"""Crash-chaos soak: the scenario of tests/integration/test_chaos.py, longer and under live traffic.

    .venv/bin/python -m bench.soak [--events 500000] [--kills 60] [--duration 1800]
                                   [--outage-destination tiktok-offline --outage-seconds 600
                                    [--outage-start 300]] [--bootstrap 127.0.0.1:PORT] [--seed 1]

Events are produced evenly over --duration seconds while `streamproc run` is killed with SIGKILL
--kills times at random moments and restarted, and all three partners (the simulator in this
process) fail in short bursts: 5xx and 429 with Retry-After, resets, timeouts. With
--outage-destination one partner also answers 503 for --outage-seconds; its deliveries are then
held within a retry budget longer than the outage, and the figures show what the other partners
kept doing meanwhile. After the last event the run waits until the offsets are committed to the
end, then prints the figures (events, kills, expected requests, missing, duplicates and their bound,
wall time) and exits 1 if a property broke. It stops by itself: past --duration + --outage-seconds +
--drain seconds it fails. Everything listens on and talks to 127.0.0.1 only: without --bootstrap
(or KAFKA_BOOTSTRAP_SERVERS) it starts a local broker with scripts/kafka-local, stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.suite import (
    DESTINATION_OF,
    ROOT,
    ChaosPlan,
    create_topic,
    delete_topics,
    run_crash_chaos,
    unique_name,
)
from streamproc.devtools.broker import start_broker

LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]"}


def local_only(bootstrap: str) -> str:
    for server in bootstrap.split(","):
        host = server.strip().rsplit(":", 1)[0]
        if host not in LOCAL_HOSTS:
            raise SystemExit(f"--bootstrap {bootstrap}: the soak talks only to 127.0.0.1, not to {host}")
    return bootstrap


def partner_of(destination: str) -> str:
    for partner, dest in DESTINATION_OF.items():
        if destination in (partner, dest):
            return partner
    raise SystemExit(f"--outage-destination {destination}: not one of {', '.join(DESTINATION_OF.values())}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--kills", type=int, default=60)
    parser.add_argument(
        "--duration", type=float, default=1800.0, help="seconds over which events are produced"
    )
    parser.add_argument("--outage-destination", default=None, help="stackadapt, tiktok-offline or seg")
    parser.add_argument("--outage-seconds", type=float, default=600.0)
    parser.add_argument(
        "--outage-start", type=float, default=None, help="seconds in (default: a sixth of --duration)"
    )
    parser.add_argument("--drain", type=float, default=900.0, help="seconds allowed after the last event")
    parser.add_argument("--max-in-flight-events", type=int, default=ChaosPlan.max_in_flight_events)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bootstrap", default=None)
    args = parser.parse_args()
    if args.events < 1 or args.kills < 0 or args.duration <= 0:
        raise SystemExit("--events must be positive, --kills not negative, --duration positive")

    outage = None
    if args.outage_destination:
        start = args.outage_start if args.outage_start is not None else args.duration / 6
        outage = (partner_of(args.outage_destination), start, args.outage_seconds)
    plan = ChaosPlan(
        events=args.events,
        kills=args.kills,
        seed=args.seed,
        users=max(ChaosPlan.users, args.events // 2),
        max_in_flight_events=args.max_in_flight_events,
        produce_over=args.duration,
        outage=outage,
        deadline=args.duration + (outage[1] + outage[2] if outage else 0.0) + args.drain,
    )

    work = Path(tempfile.mkdtemp(prefix="streamproc-soak-"))
    os.environ.setdefault("KAFKA_LOCAL_CACHE", str(ROOT / ".cache" / "kafka"))
    broker = start_broker(
        args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), mode="local", run_dir=work / "kafka"
    )
    bootstrap = local_only(broker.bootstrap)
    topics: list[str] = []
    try:
        src = create_topic(bootstrap, unique_name("soak"), plan.partitions)
        topics.append(src)
        dlq = create_topic(bootstrap, unique_name("soak-dlq"), 1)
        topics.append(dlq)
        print(
            f"broker {bootstrap}; {plan.events:,} events over {args.duration:.0f}s, {plan.kills} kills"
            + (f", {outage[0]} down for {outage[2]:.0f}s from {outage[1]:.0f}s" if outage else "")
            + f"; work dir {work}",
            flush=True,
        )
        result = run_crash_chaos(
            bootstrap,
            src=src,
            dlq=dlq,
            group=unique_name("soak"),
            work=work,
            plan=plan,
            say=lambda line: print(line, flush=True),
        )
    finally:
        with contextlib.suppress(Exception):
            delete_topics(bootstrap, topics)
        broker.stop()
    print(result.figures())
    problems = result.problems()
    for problem in problems:
        print(f"FAILED: {problem}")
    print(f"finished at {time.strftime('%H:%M:%S')}: {'FAILED' if problems else 'all properties held'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
