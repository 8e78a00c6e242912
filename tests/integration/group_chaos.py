"""The group-chaos scenario: three `streamproc run` workers started together in one consumer group,
partners that answer a fraction of requests 503 or 429 (with Retry-After), and a rolling restart:
one worker at a time is stopped (SIGTERM, as a Kubernetes rollout does, or SIGKILL, as a crash
does) and started again, while events keep coming. The ledger counts, for every request the
events predict, how often a partner accepted it (a request counts as delivered when the partner
answered it with a 2xx).

Each worker slot talks to a simulator of its own, so every accepted request is known by the
worker incarnation that sent it. The duplicate bound of a SIGKILL is worked out as in
crash_chaos.py, with what the commit's metadata says: at a kill, the requests the killed
incarnation had delivered for deliveries that the group's commit (read right after the kill,
before anyone else owns those partitions) does not list as finished are what the next owners
send again. A SIGTERM must leave nothing to send again.

Shared by tests/integration/test_group_chaos.py (sized for CI) and bench/group_chaos.py (longer
runs, and the same scenario against another revision's worker).
"""

from __future__ import annotations

import collections
import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from crash_chaos import DESTINATION_OF, Feeder, Workload, committed_up_to, digest, split_answered, tally
from kafka_helpers import committed_progress, unique_name
from test_worker_helpers import (
    REPO,
    SimulatorThread,
    WorkerProcess,
    request_key,
    write_config,
)

from streamproc.config import load_config
from streamproc.devtools.simulator import RecordedRequest
from streamproc.kafka.progress import Progress, delivery_key
from streamproc.router import Router

Stop = Literal["TERM", "KILL"]


@dataclass(frozen=True)
class GroupPlan(Workload):
    """The size and the faults of one run; the defaults are the CI size."""

    events: int = 20_000
    partitions: int = 6
    users: int = 20_000
    commit_interval: float = 0.5
    produce_over: float = 30.0
    deadline: float = 600.0
    workers: int = 3
    restarts: int = 8
    stop: Stop = "TERM"
    errors: Mapping[int, float] = field(default_factory=lambda: {503: 0.02, 429: 0.01})
    retry_after: float = 0.5  # seconds, on every error answer: deliveries wait in backoff that long
    gap: tuple[float, float] = (0.5, 2.0)  # seconds between a worker's start and the next stop

    def destination_limits(self) -> dict[str, dict[str, Any]]:
        limits = {"concurrency": 64, "timeout": 10.0, "retry": self.retry(600.0)}
        return {d: limits for d in DESTINATION_OF.values()}

    def worker_limits(self) -> dict[str, Any]:
        return {**super().worker_limits(), "shutdown_timeout": 20, "revoke_timeout": 10}


Where = tuple[int, int, int]
"""(partition, offset, delivery key) of one predicted request."""


class GroupLedger:
    """Per predicted request (a digest of method, path and body): the deliveries that predict it and
    how often a partner accepted it, by worker slot and incarnation."""

    def __init__(self, workers: int) -> None:
        self._where: dict[bytes, list[Where]] = {}
        self.got: collections.Counter[bytes] = collections.Counter()
        self.expected = 0
        self.unexpected: list[str] = []
        self.answers: collections.Counter[str] = collections.Counter()
        self.replayable: list[int] = []  # per kill
        self.resent = 0
        self._now = [collections.Counter[bytes]() for _ in range(workers)]  # this incarnation's
        self._pending: list[list[RecordedRequest]] = [[] for _ in range(workers)]
        self._lock = threading.Lock()

    def expect(self, partition: int, offset: int, requests: list[tuple[bytes, int]]) -> None:
        with self._lock:
            for d, key in requests:
                self._where.setdefault(d, []).append((partition, offset, key))
                self.expected += 1

    def take(self, slot: int, sim: SimulatorThread) -> int:
        """Move what the slot's simulator answered into the ledger; returns how many are unanswered."""
        batch = sim.take_requests()
        with self._lock:
            answered, self._pending[slot] = split_answered(self._pending[slot] + batch)
            for record in answered:
                self._settle(slot, record)
        return len(self._pending[slot])

    def _settle(self, slot: int, record: RecordedRequest) -> None:
        d = tally(record, self.answers)
        status = record.status
        wheres = self._where.get(d)
        if wheres is None:
            self.unexpected.append(f"{record.method} {record.raw_path[:120]}")
            return
        if status is None or not 200 <= status < 300:
            return
        self.got[d] += 1
        self._now[slot][d] += 1
        if self._now[slot][d] > len(wheres):
            self.resent += 1

    def restarted(self, slot: int, commits: Mapping[int, Progress] | None) -> None:
        """The slot's incarnation ended; `commits` (a kill): what the group had committed right after."""
        with self._lock:
            if commits is not None:
                replayable = 0
                for d, n in self._now[slot].items():
                    # A request several deliveries predict (StackAdapt's pixel has no event id) is
                    # sent again only for those of them the commit does not list as finished.
                    again = sum(1 for w in self._where[d] if not _finished(commits, w))
                    replayable += min(n, again)
                self.replayable.append(replayable)
            self._now[slot] = collections.Counter()

    def missing(self) -> int:
        return sum(max(0, len(w) - self.got[d]) for d, w in self._where.items())

    def duplicates(self) -> int:
        return sum(max(0, n - len(self._where[d])) for d, n in self.got.items())


def _finished(commits: Mapping[int, Progress], where: Where) -> bool:
    partition, offset, key = where
    progress = commits.get(partition)
    if progress is None:
        return False
    if offset < progress.watermark or progress.is_finished(offset):
        return True
    return key in progress.parts.get(offset, ())


@dataclass
class GroupResult:
    plan: GroupPlan
    events: int = 0
    restarts: int = 0
    expected: int = 0
    missing: int = 0
    unexpected: int = 0
    duplicates: int = 0
    replayable: int = 0
    resent: int = 0
    exits: list[int | None] = field(default_factory=list)  # of every SIGTERM, the final ones included
    committed_to_end: bool = False
    handed_over: int = 0  # offsets the workers passed over because a commit listed them finished
    refused_commits: int = 0
    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    wall: float = 0.0

    @property
    def bound(self) -> int:
        return self.replayable + self.resent

    def problems(self) -> list[str]:
        checks = [
            (self.missing == 0, f"{self.missing} predicted requests never arrived"),
            (self.unexpected == 0, f"{self.unexpected} requests no event predicts"),
            (self.committed_to_end, "offsets not committed to the end"),
            (all(code == 0 for code in self.exits), f"a worker exited with {self.exits} on SIGTERM"),
        ]
        if self.plan.stop == "TERM":
            checks.append((self.duplicates == 0, f"{self.duplicates} requests accepted twice"))
        else:
            checks.append(
                (
                    self.duplicates <= self.bound,
                    f"{self.duplicates} duplicates above the bound of {self.bound}",
                )
            )
        return [problem for ok, problem in checks if not ok]

    def figures(self) -> str:
        p = self.plan
        errors = ", ".join(f"{f:.0%} {s}" for s, f in p.errors.items())
        failed = sum(n for status, n in self.answers.items() if not status.startswith("2"))
        return "\n".join(
            [
                f"{p.workers} workers, {p.partitions} partitions, {self.restarts} SIG{p.stop} restarts; "
                f"events {self.events:,}  expected requests {self.expected:,}  missing {self.missing}  "
                f"unexpected {self.unexpected}  duplicates {self.duplicates:,}  wall {self.wall:.1f}s",
                f"  duplicate bound {self.bound:,} = {self.replayable:,} requests killed workers had "
                f"delivered for deliveries their group's commit did not list as finished + "
                f"{self.resent:,} resent by one worker",
                f"  partner answers {dict(sorted(self.answers.items()))} ({failed:,} errors, asked for "
                f"{errors}); offsets passed over as finished by an earlier owner: {self.handed_over:,}; "
                f"commits refused: {self.refused_commits}; committed to the end {self.committed_to_end}; "
                f"SIGTERM exits {self.exits}",
            ]
        )


def run_group_chaos(
    bootstrap: str,
    *,
    topic: str,
    dlq: str,
    work: Path,
    plan: GroupPlan,
    source: Path = REPO,
    say: Callable[[str], None] = print,
) -> GroupResult:
    """Run the scenario on the fresh `plan.partitions`-partition topic `topic`; returns its figures.

    `source`: the checkout whose worker runs (the current one, or another revision to compare).
    Raises AssertionError when a stage does not finish in time or a worker exits by itself."""
    started = time.monotonic()
    rnd = random.Random(plan.seed)
    group = unique_name("g")
    ledger = GroupLedger(plan.workers)
    result = GroupResult(plan)
    sims = [SimulatorThread(seed=plan.seed * 100 + slot) for slot in range(plan.workers)]
    for sim in sims:
        sim.fault("*", errors=dict(plan.errors), retry_after=plan.retry_after)
    configs = [
        write_config(
            work / f"worker-{slot}.yaml",
            bootstrap=bootstrap,
            topic=topic,
            dlq=dlq,
            group=group,
            sim_url=sim.url,
            limits=plan.worker_limits(),
            destination_limits=plan.destination_limits(),
            ordering="key",
        )
        for slot, sim in enumerate(sims)
    ]
    logs = [work / f"worker-{slot}.log" for slot in range(plan.workers)]
    router = Router(load_config(configs[0]))

    def expect(partition: int, offset: int, event: dict[str, Any]) -> int:
        requests = [
            (digest(*request_key(r.method, r.url, r.body)), delivery_key(d.destination, d.subscription))
            for d in router.route(event)
            for r in d.requests
        ]
        ledger.expect(partition, offset, requests)
        return len(requests)

    feeder = Feeder(bootstrap, topic, plan, expect)
    workers: list[WorkerProcess | None] = [None] * plan.workers

    def pump(done: Callable[[], bool], what: str, timeout: float = 1e9) -> None:
        until = min(time.monotonic() + timeout, started + plan.deadline)
        while True:
            for slot, sim in enumerate(sims):
                ledger.take(slot, sim)
            if done():
                return
            if feeder.error is not None:
                raise feeder.error
            for slot, w in enumerate(workers):
                if w is not None and not w.alive():
                    raise AssertionError(
                        f"worker {slot} exited with {w.proc.returncode} before {what}\n{w.own_log()[-3000:]}"
                    )
            if time.monotonic() > until:
                raise AssertionError(f"{what} not reached in time\n{_tails(workers)}")
            time.sleep(0.05)

    def settle(slot: int) -> None:
        """Until the slot's simulator has answered everything it received."""
        quiet, until = 0, time.monotonic() + 15
        while quiet < 3 and time.monotonic() < until:
            quiet = quiet + 1 if ledger.take(slot, sims[slot]) == 0 else 0
            time.sleep(0.05)

    def start(slot: int) -> WorkerProcess:
        return WorkerProcess(configs[slot], logs[slot], source)

    def assigned(w: WorkerProcess) -> bool:
        return any(_assigned_partitions(line) for line in _events(w.own_log(), "partitions_assigned"))

    producer = threading.Thread(target=feeder.run, name="feeder", daemon=True)
    try:
        for slot in range(plan.workers):  # one by one: each is in the list once started
            workers[slot] = start(slot)
        producer.start()
        for i in range(plan.restarts):
            slot = i % plan.workers
            w = workers[slot]
            assert w is not None
            pump(lambda w=w: assigned(w), f"worker {slot} assigned partitions", timeout=120)
            gap = time.monotonic() + rnd.uniform(*plan.gap)
            pump(lambda gap=gap: time.monotonic() >= gap, "the gap before a stop")
            workers[slot] = None
            if plan.stop == "TERM":
                result.exits.append(w.terminate(timeout=120))
                settle(slot)
                ledger.restarted(slot, None)
            else:
                w.kill()
                commits = committed_progress(bootstrap, group, topic)  # before anyone else owns them
                settle(slot)
                ledger.restarted(slot, commits)
            result.restarts += 1
            workers[slot] = start(slot)
            say(
                f"{time.monotonic() - started:6.1f}s SIG{plan.stop} {result.restarts}/{plan.restarts} "
                f"(worker {slot}); {feeder.produced:,} events produced, {sum(ledger.got.values()):,}/"
                f"{ledger.expected:,} requests accepted"
            )
        pump(feeder.done.is_set, "the last event produced")
        pump(committed_up_to(bootstrap, group, topic, feeder.produced_ends()), "offsets committed to the end")
        result.committed_to_end = True
        for slot, w in enumerate(workers):
            assert w is not None
            workers[slot] = None
            result.exits.append(w.terminate(timeout=120))
            settle(slot)
        for slot, sim in enumerate(sims):
            ledger.take(slot, sim)
        text = "\n".join(log.read_text(errors="replace") for log in logs)
        result.handed_over = sum(
            int(e.get("finished_past_commit", 0)) for e in _events(text, "partitions_assigned")
        )
        result.refused_commits = len(_events(text, "commit_failed"))
        result.events, result.expected = feeder.produced, ledger.expected
        result.missing, result.duplicates = ledger.missing(), ledger.duplicates()
        result.unexpected = len(ledger.unexpected)
        result.replayable, result.resent = sum(ledger.replayable), ledger.resent
        result.answers = ledger.answers
        result.wall = time.monotonic() - started
        return result
    finally:
        for w in workers:
            if w is not None and w.alive():
                w.kill()
        for sim in sims:
            sim.stop()


def _events(text: str, name: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if f'"{name}"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == name:
            out.append(entry)
    return out


def _assigned_partitions(entry: dict[str, Any]) -> list[Any]:
    found = entry.get("partitions")
    return found if isinstance(found, list) else []


def _tails(workers: list[WorkerProcess | None]) -> str:
    return "\n".join(
        f"-- worker {slot}\n{w.own_log()[-1500:]}" for slot, w in enumerate(workers) if w is not None
    )
