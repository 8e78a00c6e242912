"""The crash-chaos scenario: `streamproc run` killed with SIGKILL at random moments while every partner
misbehaves, and the ledger that checks each predicted request against what the partners answered.

Shared by tests/integration/test_chaos.py (sized for CI) and bench/soak.py (the long run).
"""

from __future__ import annotations

import collections
import functools
import hashlib
import os
import random
import resource
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from kafka_helpers import committed_offsets, committed_progress, end_offsets, produce, read_all
from test_worker_helpers import (
    RequestKey,
    SimulatorThread,
    WorkerProcess,
    make_events,
    predictor,
    user_key,
    write_config,
)

from streamproc.devtools.simulator import RecordedRequest
from streamproc.kafka.progress import Progress

PARTNERS = ("stackadapt", "tiktok", "seg")
DESTINATION_OF = {"stackadapt": "stackadapt", "tiktok": "tiktok-offline", "seg": "seg"}
_OFFSET_BITS = 40


@dataclass(frozen=True)
class Workload:
    """The events of a chaos run and the worker's bounds (the crash-chaos CI size by default)."""

    events: int = 100_000
    seed: int = 1
    partitions: int = 4
    users: int = 50_000  # many: fewer events that send the very same request
    max_in_flight_events: int = 1_000
    poll_batch: int = 100
    commit_interval: float = 0.2
    produce_over: float = 0.0  # 0: as fast as possible (a backlog); else evenly over this many seconds
    # The event mix (weights by event name or call type, 1 for the rest): about a quarter of the
    # events match no subscription and a third only one, which keeps the number of requests (the
    # run's cost) near 1.15 per event while every partner takes part.
    weights: Mapping[str, float] = field(
        default_factory=lambda: {"group": 12, "alias": 6, "screen": 8, "Video Played": 8}
    )
    deadline: float = 900.0  # the run fails past this many seconds, whatever its state

    def worker_limits(self) -> dict[str, Any]:
        return {
            "max_in_flight_events": self.max_in_flight_events,
            "resume_in_flight_events": self.max_in_flight_events // 2,
            "poll_batch_size": self.poll_batch,
            "commit_interval": self.commit_interval,
        }

    @staticmethod
    def retry(budget: float) -> dict[str, Any]:
        """Every injected fault is retryable and short, so no delivery may run out of retries: the
        claim "every predicted request arrives" then holds without counting dead letters."""
        return {"max_attempts": 1_000_000, "budget": budget, "backoff_initial": 0.05, "backoff_max": 0.5}


@dataclass(frozen=True)
class ChaosPlan(Workload):
    """The size and the faults of one crash-chaos run; the defaults are the CI size."""

    kills: int = 20
    concurrency: int = 128
    timeout: float = 1.0  # the partners' request timeout; an injected hang lasts longer
    latency_ms: tuple[float, float] = (0.0, 2.0)
    fault_every: tuple[float, float] = (0.2, 0.6)  # seconds between two bursts
    outage: tuple[str, float, float] | None = None  # (partner, start after s, seconds down)

    def destination_limits(self) -> dict[str, dict[str, Any]]:
        outage = self.outage[2] if self.outage else 0.0
        limits = {
            "concurrency": self.concurrency,
            "timeout": self.timeout,
            "retry": self.retry(max(300.0, outage + 300.0)),
            "breaker": {"failure_ratio": 0.5, "min_requests": 50, "window": 5, "open_for": 0.5},
        }
        result = {d: limits for d in DESTINATION_OF.values()}
        if self.outage:
            # The partner that is down parks what it cannot take (its retry topic), so the others
            # keep their pace; the others never park, so every one of their requests must come
            # before their event is committed.
            down = DESTINATION_OF[self.outage[0]]
            parking = {"park_after_seconds": 5.0, "park_delay": 2.0, "park_delay_max": 10.0}
            result[down] = {**limits, "retry": {**limits["retry"], **parking}}
        return result


def digest(method: str, path: str, body: bytes) -> bytes:
    """A short stand-in for a request key (method, path with query, body): the ledger keeps millions."""
    h = hashlib.blake2b(digest_size=16)
    h.update(method.encode())
    h.update(b"\0")
    h.update(path.encode())
    h.update(b"\0")
    h.update(body)
    return h.digest()


def tally(record: RecordedRequest, answers: collections.Counter[str]) -> bytes:
    """Count an answered request by its status (or failure outcome); returns its digest."""
    answers[str(record.status) if record.status is not None else record.outcome] += 1
    return digest(record.method, record.raw_path, record.body)


def _key_digest(key: RequestKey) -> bytes:
    return digest(*key)


class Ledger:
    """Per predicted request: where its event is (partition, offset) and how often a partner accepted it.

    Requests are taken from the simulator as they are answered (its record is then cleared), each
    tagged with the worker incarnation that sent it; `close` is called after each kill with what that
    incarnation left committed (the offsets, and the finished events past them that the commits'
    metadata lists). Every accepted request beyond the predicted count is one of:
      replayed   sent again by a later incarnation because its event was not finished by the commit
                 at the kill: `replayable` counts, per kill, what the restart may send again;
      resent     accepted twice by one incarnation: the worker retried a request whose answer it did
                 not see in time (its timeout fired first, e.g. while its event loop was starved);
      after_commit  sent by an incarnation started after the commit said its event was finished:
                 never allowed.
    """

    def __init__(self) -> None:
        self._owner: dict[bytes, int] = {}  # digest -> partition << 40 | offset of its first event
        self._owners: dict[bytes, list[int]] = {}  # digests that several events predict: all of them
        self.got: collections.Counter[bytes] = collections.Counter()
        self.expected = 0
        self.arrived = 0  # predicted requests accepted, up to their predicted count
        self.unexpected: list[str] = []
        self.answers: collections.Counter[str] = collections.Counter()  # by status or fault outcome
        self.ok_by_second: collections.Counter[tuple[str, int]] = collections.Counter()
        self.incarnation = 0
        self.seen_this_incarnation = 0
        self.replayable: list[int] = []  # per kill
        self.window: list[int] = []  # per kill: events past the commit that a request was seen for
        self.resent = 0
        self.after_commit: list[str] = []
        # The partner that is down in an outage run: its deliveries park, so they arrive after
        # their event is committed and a kill replays them from the retry topic, not the input.
        self.parked_partner: str | None = None
        self._parked: set[bytes] = set()
        self._committed: Mapping[int, Progress] = {}  # what the last kill left committed
        self._furthest: dict[int, int] = {}  # partition -> furthest offset a request was seen for
        self._got_now: collections.Counter[bytes] = collections.Counter()  # accepted, this incarnation
        self._pending: list[tuple[RecordedRequest, int]] = []
        self._lock = threading.Lock()

    def expect(self, partition: int, offset: int, keys: list[RequestKey]) -> None:
        where = partition << _OFFSET_BITS | offset
        with self._lock:
            for key in keys:
                d = _key_digest(key)
                first = self._owner.get(d)
                if first is None:
                    self._owner[d] = where
                else:
                    self._owners.setdefault(d, [first]).append(where)
                self.expected += 1

    def expected_count(self, d: bytes) -> int:
        more = self._owners.get(d)
        return len(more) if more is not None else 1 if d in self._owner else 0

    def _wheres(self, d: bytes) -> list[int]:
        more = self._owners.get(d)
        return more if more is not None else [self._owner[d]]

    def take(self, sim: SimulatorThread) -> int:
        """Move what the simulator answered into the ledger; returns how many requests are unanswered."""
        batch = [(r, self.incarnation) for r in sim.take_requests()]
        self.seen_this_incarnation += len(batch)
        with self._lock:
            answered, self._pending = split_answered(self._pending + batch)
            for record, incarnation in answered:
                self._settle(record, incarnation)
        return len(self._pending)

    def _settle(self, record: RecordedRequest, incarnation: int) -> None:
        d = tally(record, self.answers)
        status = record.status
        where = self._owner.get(d)
        if where is None:
            self.unexpected.append(f"{record.method} {record.raw_path[:120]}")
            return
        partition, offset = _split(where)
        current = incarnation == self.incarnation
        if current:
            self._furthest[partition] = max(self._furthest.get(partition, -1), offset)
        if status is None or not 200 <= status < 300:
            return
        self.ok_by_second[record.partner, int(record.received_at)] += 1
        expected = self.expected_count(d)
        self.got[d] += 1
        if self.got[d] <= expected:
            self.arrived += 1
        if record.partner == self.parked_partner:
            self._parked.add(d)
            return
        if not current:
            return  # answered after its incarnation was killed: `close` could not count it
        self._got_now[d] += 1
        if self._got_now[d] > expected:
            self.resent += 1
        if all(_finished(self._committed, w) for w in self._wheres(d)):
            self.after_commit.append(f"{record.method} {record.raw_path[:120]} at {_split(where)}")

    def close(self, committed: Mapping[int, Progress]) -> None:
        """The current incarnation was killed and `committed` is what it left committed: per
        partition the offset, and the offsets past it that its metadata lists as finished."""
        with self._lock:
            replayable = 0
            for d, n in self._got_now.items():
                # A request several events predict (StackAdapt's pixel carries no event id) is
                # sent again only for those of its events that the restart rereads.
                past = sum(1 for w in self._wheres(d) if not _finished(committed, w))
                replayable += min(n, past)
            self.replayable.append(replayable)
            self.window.append(
                sum(max(0, last + 1 - _watermark(committed, p)) for p, last in self._furthest.items())
            )
            self._committed = dict(committed)
            self._furthest = {}
            self._got_now = collections.Counter()
            self.incarnation += 1
            self.seen_this_incarnation = 0

    def missing(self) -> int:
        return sum(max(0, self.expected_count(d) - self.got[d]) for d in self._owner)

    def duplicates(self) -> int:
        """Duplicates of the requests that never park (held to the bound)."""
        return sum(max(0, n - self.expected_count(d)) for d, n in self.got.items() if d not in self._parked)

    def parked_duplicates(self) -> int:
        """Duplicates of the parked partner's requests: replays of retry records a kill left
        uncommitted (at most the retry consumer's in-flight bound per kill)."""
        return sum(max(0, self.got[d] - self.expected_count(d)) for d in self._parked)


T = TypeVar("T", bound=RecordedRequest | tuple[RecordedRequest, Any])


def split_answered(records: list[T]) -> tuple[list[T], list[T]]:
    """(answered, not yet answered) of these requests (or (request, tag) pairs): a request the
    simulator still holds has no status and no failure outcome yet."""
    answered, open_ = [], []
    for item in records:
        record = item[0] if isinstance(item, tuple) else item
        (open_ if record.status is None and record.outcome == "ok" else answered).append(item)
    return answered, open_


def _split(where: int) -> tuple[int, int]:
    return where >> _OFFSET_BITS, where & ((1 << _OFFSET_BITS) - 1)


def _watermark(committed: Mapping[int, Progress], partition: int) -> int:
    progress = committed.get(partition)
    return progress.watermark if progress is not None else 0


def _finished(committed: Mapping[int, Progress], where: int) -> bool:
    """Whether the commit says the event at `where` is finished: before its partition's committed
    offset, or listed finished past it in the commit's metadata."""
    partition, offset = _split(where)
    progress = committed.get(partition)
    return progress is not None and (offset < progress.watermark or progress.is_finished(offset))


class FaultStorm:
    """Short bursts of retryable faults at random moments on a random partner, over a small steady
    latency: 5xx and 429 answers (mostly with Retry-After), connection resets, and requests held past
    the client's timeout; optionally one partner down for a while.

    A burst lasts a time, not a number of requests: once a circuit opens only its probes reach the
    partner, and a count of failures would then never run out.
    """

    KINDS = ("5xx", "429", "reset", "timeout")
    WEIGHTS = (5, 2, 2, 1)

    def __init__(self, sim: SimulatorThread, plan: ChaosPlan, rnd: random.Random) -> None:
        self.sim = sim
        self.plan = plan
        self.rnd = rnd
        lo, hi = plan.latency_ms
        self.latency = {"kind": "uniform", "min_ms": lo, "max_ms": hi}
        self.bursts: collections.Counter[str] = collections.Counter()  # by kind
        self.partners: collections.Counter[str] = collections.Counter()  # bursts by partner
        self.faulty_seconds = 0.0  # summed over the bursts
        self.outage_window: tuple[float, float] | None = None  # wall-clock start and end
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-storm", daemon=True)

    def start(self) -> None:
        for partner in PARTNERS:
            self.sim.fault(partner, latency=self.latency)
        self._thread.start()

    def stop(self) -> None:
        """Stop injecting and clear every fault (again: a no-op)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self.sim.clear_faults()

    def _run(self) -> None:
        try:
            down: str | None = None
            started = time.monotonic()
            while not self._stop.wait(self.rnd.uniform(*self.plan.fault_every)):
                if self.plan.outage is not None:
                    partner, start, seconds = self.plan.outage
                    now = time.time()
                    if self.outage_window is None and time.monotonic() - started >= start:
                        down, self.outage_window = partner, (now, now + seconds)
                        self.sim.fault(partner, down=True, latency=self.latency)
                    elif down is not None and self.outage_window and now >= self.outage_window[1]:
                        self.sim.fault(down, latency=self.latency)
                        down = None
                self._burst(self.rnd.choice([p for p in PARTNERS if p != down]))
        except BaseException as exc:  # reported by the run, which polls `error`
            self.error = exc

    def _burst(self, partner: str) -> None:
        rnd = self.rnd
        kind = rnd.choices(self.KINDS, self.WEIGHTS)[0]
        retry_after = rnd.choice((None, "0.1", "0.2", "0.5", "1"))
        outcome: int | str
        if kind == "5xx":
            outcome, seconds = rnd.choice((500, 502, 503, 504)), rnd.uniform(0.05, 0.4)
        elif kind == "429":
            outcome, seconds, retry_after = 429, rnd.uniform(0.05, 0.4), retry_after or "0.2"
        elif kind == "reset":
            outcome, seconds = "reset", rnd.uniform(0.05, 0.2)
        else:
            outcome, seconds = "timeout", rnd.uniform(0.05, 0.2)
        self.sim.fault(
            partner, then=outcome, retry_after=retry_after, latency=self.latency, hang=self.plan.timeout + 0.5
        )
        self._stop.wait(seconds)
        self.sim.fault(partner, latency=self.latency)
        self.bursts[kind] += 1
        self.partners[partner] += 1
        self.faulty_seconds += seconds


Expect = Callable[[int, int, dict[str, Any]], int]
"""Tells the ledger what the event at (partition, offset) predicts; returns how many requests."""


class Feeder:
    """Produces events keyed by user, each to the partition its user hashes to, after telling the
    ledger (`expect`) what it predicts with its partition and offset (a fresh topic's offsets
    count from 0; the run checks the end offsets against these counts)."""

    def __init__(self, bootstrap: str, topic: str, plan: Workload, expect: Expect) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.plan = plan
        self.expect = expect
        self.next_offset = [0] * plan.partitions
        self.produced = 0
        self.max_requests = 0  # the most requests one event produces
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._chunks = 0

    def feed(self, n: int) -> None:
        events = make_events(
            n,
            seed=self.plan.seed * 1_000_000 + self._chunks,
            users=self.plan.users,
            weights=dict(self.plan.weights),
        )
        self._chunks += 1
        by_partition: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
        for event in events:
            p = zlib.crc32(user_key(event)) % self.plan.partitions
            self.max_requests = max(self.max_requests, self.expect(p, self.next_offset[p], event))
            self.next_offset[p] += 1
            by_partition[p].append(event)
        for p, chunk in sorted(by_partition.items()):
            produce(
                self.bootstrap,
                self.topic,
                [orjson.dumps(e) for e in chunk],
                keys=[user_key(e) for e in chunk],
                partition=p,
            )
        self.produced += n

    def run(self) -> None:
        """In a thread: the events as fast as they can be produced (`plan.produce_over` 0), else at an
        even rate over that many seconds, a chunk a second."""
        try:
            started = time.monotonic()
            over = self.plan.produce_over
            while self.produced < self.plan.events:
                if over <= 0:
                    self.feed(min(5_000, self.plan.events - self.produced))
                    continue
                rate = self.plan.events / over
                due = min(self.plan.events, int((time.monotonic() - started + 1) * rate))
                if due > self.produced:
                    self.feed(due - self.produced)
                time.sleep(max(0.0, started + self.produced / rate - time.monotonic()))
        except BaseException as exc:  # reported by the run, which polls `error`
            self.error = exc
        finally:
            self.done.set()

    def ends(self) -> dict[int, int]:
        return {p: n for p, n in enumerate(self.next_offset) if n}

    def produced_ends(self) -> dict[int, int]:
        """The topic's end offsets, once checked against the events produced."""
        ends = end_offsets(self.bootstrap, self.topic)
        assert ends == self.ends(), f"end offsets {ends} differ from the events produced {self.ends()}"
        return ends


def now_and_then(check: Callable[[], bool], every: float = 0.5) -> Callable[[], bool]:
    """`check`, asked at most every `every` seconds (False in between): for a check that costs a
    broker round trip or a scan of the ledger."""
    last = [0.0]

    def throttled() -> bool:
        if time.monotonic() - last[0] < every:
            return False
        last[0] = time.monotonic()
        return check()

    return throttled


def committed_up_to(bootstrap: str, group: str, topic: str, ends: dict[int, int]) -> Callable[[], bool]:
    """Whether `group` has committed `topic` up to `ends` (asked of the broker at most twice a second)."""
    return now_and_then(lambda: committed_offsets(bootstrap, group, topic) == ends)


@dataclass
class ChaosResult:
    """The figures of one run."""

    plan: ChaosPlan
    events: int = 0
    kills: int = 0
    expected: int = 0
    missing: int = 0
    unexpected: int = 0
    duplicates: int = 0
    after_commit_sample: tuple[str, ...] = ()
    parked_duplicates: int = 0  # the outage partner's, replayed from its retry topic
    replayable: int = 0  # what the kills allowed to be sent again (see `Ledger`)
    resent: int = 0  # accepted twice by one incarnation
    after_commit: int = 0  # sent by an incarnation started after the event was committed
    inflight_figure: int = 0  # kills x (in-flight limit + 2 poll batches) x most requests per event
    max_window: int = 0  # most events past a kill's committed offsets that had reached a partner
    dead_letters: int = 0
    committed_to_end: bool = False
    final_exit: int | None = None
    wall: float = 0.0
    worker_cpu: float = 0.0  # CPU seconds of all worker processes
    harness_cpu: float = 0.0  # CPU seconds of this process (simulator, ledger, producer)
    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    bursts: collections.Counter[str] = field(default_factory=collections.Counter)
    burst_partners: collections.Counter[str] = field(default_factory=collections.Counter)
    faulty_seconds: float = 0.0
    outage: dict[str, tuple[float, float]] = field(default_factory=dict)  # partner -> (before, during) req/s

    @property
    def bound(self) -> int:
        """Duplicates a correct worker may produce: the replays the kills allowed plus its own resends."""
        return self.replayable + self.resent

    def problems(self) -> list[str]:
        """The properties the run broke: nothing missing or unpredicted, offsets committed to the end,
        no dead letter (every injected fault is retryable), a clean stop, duplicates within the bound."""
        checks = [
            (self.missing == 0, f"{self.missing} predicted requests never arrived"),
            (self.unexpected == 0, f"{self.unexpected} requests no event predicts"),
            (self.committed_to_end, "offsets not committed to the end"),
            (self.dead_letters == 0, f"{self.dead_letters} dead letters"),
            (self.final_exit == 0, f"the last worker exited with {self.final_exit} on SIGTERM"),
            (
                self.after_commit == 0,
                f"{self.after_commit} requests sent again after their event was committed"
                + (f", e.g. {'; '.join(self.after_commit_sample)}" if self.after_commit_sample else ""),
            ),
            (self.duplicates <= self.bound, f"{self.duplicates} duplicates above the bound of {self.bound}"),
            # The bound a user can work out from the configuration: what backpressure lets a
            # killed worker have past its committed offsets, for every kill.
            (
                self.duplicates <= self.inflight_figure + self.resent,
                f"{self.duplicates} duplicates above kills x (limit + 2 batches) x requests per event"
                f" + resent = {self.inflight_figure + self.resent}",
            ),
        ]
        return [problem for ok, problem in checks if not ok]

    def figures(self) -> str:
        p = self.plan
        lines = [
            f"events {self.events:,}  kills {self.kills}  expected requests {self.expected:,}  "
            f"missing {self.missing}  unexpected {self.unexpected}  duplicates {self.duplicates:,}  "
            f"bound {self.bound:,}  wall {self.wall:.1f}s",
            f"  bound = {self.replayable:,} requests the killed workers had delivered for events their "
            f"commits did not list as finished + {self.resent:,} resent by one worker after an "
            f"answer it did not see; sent after their event was committed: {self.after_commit}",
            f"  largest replay window {self.max_window:,} events past the committed offsets "
            f"(in-flight limit {p.max_in_flight_events:,}, poll batch {p.poll_batch}); "
            f"kills x (limit + 2 batches) x most requests per event = {self.inflight_figure:,}",
            f"  committed to the end {self.committed_to_end}; dead letters {self.dead_letters}; "
            f"final worker exit {self.final_exit}; CPU seconds: workers {self.worker_cpu:.0f}, "
            f"simulator and harness {self.harness_cpu:.0f}",
            f"  faults: {sum(self.bursts.values())} bursts {dict(self.bursts)} on "
            f"{dict(self.burst_partners)} lasting "
            f"{self.faulty_seconds:.0f}s in all; answers {dict(sorted(self.answers.items()))}",
        ]
        if self.plan.outage:
            lines.append(
                f"  {self.plan.outage[0]} (down, parked): {self.parked_duplicates:,} duplicates replayed"
                " from its retry topic after kills, not held to the bound above"
            )
        for partner, (before, during) in self.outage.items():
            ratio = during / before if before else float("nan")
            lines.append(
                f"  outage: {partner} {before:,.0f} requests/s before, {during:,.0f} during ({ratio:.0%})"
            )
        return "\n".join(lines)


def _reached(progress: Callable[[], float], target: float) -> bool:
    return progress() >= target


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_crash_chaos(
    bootstrap: str,
    *,
    src: str,
    dlq: str,
    group: str,
    work: Path,
    plan: ChaosPlan,
    say: Callable[[str], None] = print,
) -> ChaosResult:
    """Run the scenario on the (fresh, `plan.partitions`-partition) topic `src`; returns its figures.

    Raises AssertionError when a stage does not finish in time or a worker exits by itself.
    """
    started = time.monotonic()
    cpu_at_start = _own_cpu()
    rnd = random.Random(plan.seed)
    ledger = Ledger()
    ledger.parked_partner = plan.outage[0] if plan.outage else None
    result = ChaosResult(plan)
    sim = SimulatorThread(seed=plan.seed)
    storm = FaultStorm(sim, plan, rnd)
    log = work / "worker.log"
    config = write_config(
        work / "chaos.yaml",
        bootstrap=bootstrap,
        topic=src,
        dlq=dlq,
        group=group,
        sim_url=sim.url,
        limits=plan.worker_limits(),
        destination_limits=plan.destination_limits(),
        ordering="key",
        # Static membership: a restarted worker takes its partitions back at once instead of
        # waiting for the killed member's session to time out.
        kafka_extra={"group_instance_id": "chaos-worker"},
    )
    requests_of = predictor(config)

    def expect(partition: int, offset: int, event: dict[str, Any]) -> int:
        keys = requests_of(event)
        ledger.expect(partition, offset, keys)
        return len(keys)

    feeder = Feeder(bootstrap, src, plan, expect)
    worker: WorkerProcess | None = None

    def figures() -> str:
        result.wall = time.monotonic() - started
        result.events, result.expected = feeder.produced, ledger.expected
        result.replayable, result.max_window = sum(ledger.replayable), max(ledger.window, default=0)
        result.resent, result.after_commit = ledger.resent, len(ledger.after_commit)
        result.after_commit_sample = tuple(ledger.after_commit[:3])
        result.answers, result.bursts, result.burst_partners = ledger.answers, storm.bursts, storm.partners
        result.faulty_seconds = storm.faulty_seconds
        result.inflight_figure = (
            result.kills * (plan.max_in_flight_events + 2 * plan.poll_batch) * feeder.max_requests
        )
        result.harness_cpu = _own_cpu() - cpu_at_start
        return result.figures()

    def pump(done: Callable[[], bool], what: str, timeout: float = 1e9, every: float = 0.05) -> None:
        """Take answers into the ledger until `done`; fail on a timeout or a worker's own exit."""
        until = min(time.monotonic() + timeout, started + plan.deadline)
        while True:
            ledger.take(sim)
            if done():
                return
            for part in (storm, feeder):
                if part.error is not None:
                    raise part.error
            if worker is not None and not worker.alive():
                raise AssertionError(
                    f"worker exited with {worker.proc.returncode} before {what}\n{figures()}\n"
                    f"{worker.log_text()[-3000:]}"
                )
            if time.monotonic() > until:
                tail = worker.log_text()[-3000:] if worker is not None else ""
                raise AssertionError(f"{what} not reached in time\n{figures()}\n{tail}")
            time.sleep(every)

    def settle() -> None:
        """Wait until the simulator has answered (or dropped) everything it received."""
        quiet, until = 0, time.monotonic() + 10
        while quiet < 3 and time.monotonic() < until:
            seen = ledger.seen_this_incarnation
            open_ = ledger.take(sim)
            quiet = quiet + 1 if open_ == 0 and ledger.seen_this_incarnation == seen else 0
            time.sleep(0.05)

    producer = threading.Thread(target=feeder.run, name="feeder", daemon=True)
    try:
        t0 = time.monotonic()
        producer.start()

        def progress() -> float:
            if plan.produce_over > 0:
                return (time.monotonic() - t0) / plan.produce_over
            return ledger.arrived / max(1, ledger.expected) * feeder.produced / plan.events

        storm.start()
        for target in sorted(rnd.uniform(0.03, 0.95) for _ in range(plan.kills)):
            worker = WorkerProcess(config, log)
            pump(lambda: ledger.seen_this_incarnation > 0, "a first request after a start", timeout=120)
            pump(functools.partial(_reached, progress, target), f"progress {target:.0%}")
            time.sleep(rnd.uniform(0.0, 0.2))
            result.worker_cpu += _cpu_seconds(worker.pid)
            worker.kill()
            worker = None
            result.kills += 1
            settle()
            ledger.close(committed_progress(bootstrap, group, src))
            say(
                f"{time.monotonic() - started:6.1f}s kill {result.kills}/{plan.kills} at {progress():.0%}: "
                f"{ledger.arrived:,}/{ledger.expected:,} arrived, {ledger.replayable[-1]:,} requests "
                f"to resend, window {ledger.window[-1]:,} events"
            )
        worker = WorkerProcess(config, log)
        pump(feeder.done.is_set, "the last event produced")
        say(f"{time.monotonic() - started:6.1f}s all {feeder.produced:,} events produced")
        pump(committed_up_to(bootstrap, group, src, feeder.produced_ends()), "offsets committed to the end")
        result.committed_to_end = True
        if plan.outage:
            # Parked deliveries arrive from their retry topic after their events are committed.
            pump(now_and_then(lambda: ledger.missing() == 0), "every parked delivery arrived")
        storm.stop()
        result.worker_cpu += _cpu_seconds(worker.pid)
        result.final_exit = worker.terminate()
        worker = None
        settle()
        result.dead_letters = len(read_all(bootstrap, dlq))
        result.missing, result.duplicates = ledger.missing(), ledger.duplicates()
        result.parked_duplicates = ledger.parked_duplicates()
        result.unexpected = len(ledger.unexpected)
        if storm.outage_window is not None and plan.outage is not None:
            result.outage = _outage_rates(ledger, storm.outage_window, plan.outage[0])
        figures()
        return result
    finally:
        if worker is not None and worker.alive():
            worker.kill()
        storm.stop()
        sim.stop()


def _outage_rates(ledger: Ledger, window: tuple[float, float], down: str) -> dict[str, tuple[float, float]]:
    """Accepted requests per second of the other partners before the outage and during it."""
    start, end = int(window[0]), int(window[1])
    length = max(1, end - start)
    out = {}
    for partner in PARTNERS:
        if partner == down:
            continue
        before_from = max(min(s for p, s in ledger.ok_by_second if p == partner), start - length)
        before = sum(
            n for (p, s), n in ledger.ok_by_second.items() if p == partner and before_from <= s < start
        )
        during = sum(n for (p, s), n in ledger.ok_by_second.items() if p == partner and start <= s < end)
        out[partner] = (before / max(1, start - before_from), during / length)
    return out
