"""Group chaos, longer or against another revision: the scenario of tests/integration/test_group_chaos.py.

    .venv/bin/python -m bench.group_chaos [--stop TERM|KILL] [--events 20000] [--restarts 8]
                                          [--over 30] [--runs 1] [--seed 1] [--baseline REV|DIR]
                                          [--bootstrap 127.0.0.1:PORT]

Three workers start together in one consumer group while events are produced evenly over --over
seconds; partners answer 2 % of requests 503 and 1 % 429 (Retry-After 0.5 s); one worker at a time is
stopped with SIG--stop and started again, --restarts times. Each run prints its figures: expected
requests, missing, duplicates (requests a partner accepted twice) and, for SIGKILL, their bound.
With --baseline the workers run that revision's code (a git revision, checked out into a temporary
worktree, or a source directory) in the same scenario, so its duplicate count can be set beside
this one's; the properties are then only reported, not required. Without --bootstrap (or
KAFKA_BOOTSTRAP_SERVERS) it starts a local broker with scripts/kafka-local, stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.suite import ROOT, GroupPlan, create_topic, delete_topics, run_group_chaos, unique_name
from streamproc.devtools.broker import start_broker


def checkout(spec: str, work: Path) -> tuple[Path, Path | None]:
    """(source root, worktree to remove) of a revision or a source directory."""
    given = Path(spec)
    if (given / "streamproc" / "__init__.py").exists():
        return given.resolve(), None
    tree = work / "baseline"
    proc = subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), spec], cwd=ROOT, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"--baseline {spec}: neither a source directory nor a git revision ({proc.stderr.strip()})"
        )
    return tree, tree


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stop", choices=("TERM", "KILL"), default="TERM")
    parser.add_argument("--events", type=int, default=GroupPlan.events)
    parser.add_argument("--restarts", type=int, default=GroupPlan.restarts)
    parser.add_argument("--over", type=float, default=GroupPlan.produce_over, help="seconds of production")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baseline", default=None, metavar="REV|DIR")
    parser.add_argument("--bootstrap", default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="streamproc-group-chaos-"))
    source, tree = (ROOT, None) if args.baseline is None else checkout(args.baseline, work)
    os.environ.setdefault("KAFKA_LOCAL_CACHE", str(ROOT / ".cache" / "kafka"))
    broker = start_broker(
        args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), mode="local", run_dir=work / "kafka"
    )
    failed = 0
    try:
        for run in range(args.runs):
            plan = GroupPlan(
                events=args.events,
                restarts=args.restarts,
                stop=args.stop,
                seed=args.seed + run,
                produce_over=args.over,
                deadline=args.over + 600.0,
            )
            topics = [
                create_topic(broker.bootstrap, unique_name("group-chaos"), plan.partitions),
                create_topic(broker.bootstrap, unique_name("group-chaos-dlq"), 1),
            ]
            run_dir = work / f"run-{run}"
            run_dir.mkdir()
            print(f"run {run + 1}/{args.runs}: worker source {source}; work dir {run_dir}", flush=True)
            try:
                result = run_group_chaos(
                    broker.bootstrap,
                    topic=topics[0],
                    dlq=topics[1],
                    work=run_dir,
                    plan=plan,
                    source=source,
                    say=lambda line: print(line, flush=True),
                )
            finally:
                with contextlib.suppress(Exception):
                    delete_topics(broker.bootstrap, topics)
            print(result.figures(), flush=True)
            problems = result.problems()
            for problem in problems:
                print(f"{'baseline' if args.baseline else 'FAILED'}: {problem}")
            failed += bool(problems)
    finally:
        broker.stop()
        if tree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    return 1 if failed and args.baseline is None else 0


if __name__ == "__main__":
    sys.exit(main())
