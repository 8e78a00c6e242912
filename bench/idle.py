"""Where a draining worker idles: its threads' states sampled from outside, beside what it was waiting for.

    .venv/bin/python -m bench.idle [--events 40000] [--mix stackadapt,tiktok] [--bootstrap HOST:PORT]
                                 [--baseline REV|PATH] [--rounds N] [--hz 1000] [--one-destination]
                                 [--consumer KEY=VALUE ...] [--nice -10] [--json PATH|-]

The machine's other load distorts a wall-clock core share (a worker that waits for the CPU looks
idle), so this counts the worker's own idle instead. While `streamproc run` (pinned to one core, as
bench/e2e.py runs it, against the same Go sink) drains a backlog, this process reads every thread's
scheduler state from /proc about `--hz` times a second:

  busy   some thread of the worker runs or is runnable (waiting for the CPU counts here: that is
         the machine's load, not the worker's)
  idle   every thread sleeps; then it notes where the event-loop thread sleeps (its selector, a
         futex: the GIL or a lock) and what the worker was waiting for at that moment

What the worker waits for comes from a small probe loaded into it (a few counters in a shared
memory file, set by wrappers around its HTTP client's `send` and its consumer's poll): requests on
the wire, deliveries admitted and waiting for a concurrency slot, whether a Kafka poll is out and
whether the partitions are paused or a full window is held, the window (events at or past the
watermarks) at the last poll. Until its last tenth the drain has more events waiting in the topic,
so idle there is idle with work waiting; the probe says where it waited. Idle runs (consecutive
idle samples) and the idle share in each tenth of the drain are reported too: a timer or a poll
timeout shows up as runs of its length, the end of the backlog in the last tenth.

--baseline REV runs that revision's worker (a temporary git worktree, or a source directory) next
to the current one on the same topic, rounds interleaved, as bench/e2e.py does; --consumer adds a
variant of the current worker with that librdkafka setting (`kafka.consumer`). On a busy machine,
--nice -10 (as root) gives the worker and the sink each a scheduling group of their own with that
niceness, so that what is measured is the worker's own waiting rather than the other load's.
"""

from __future__ import annotations

import argparse
import contextlib
import mmap
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

# Slots of the probe's shared counters (int64 each).
ON_WIRE, WAITING, POLLING, PAUSED, WINDOW, IN_FLIGHT, POLLS, BATCHES, HELD = range(9)
SLOTS = 16
SYSCALLS = {"232": "selector", "281": "selector", "441": "selector", "7": "selector", "202": "futex"}
"""x86-64 syscall numbers: epoll_wait, epoll_pwait, epoll_pwait2, poll (the loop's selector); futex."""


# -- the probe, inside the worker ---------------------------------------------------------------------
def probe_main(state_path: str, argv: list[str]) -> None:
    """Run `streamproc <argv>` with the probe's counters kept in `state_path`."""
    import runpy

    import streamproc

    print("streamproc imported from", streamproc.__file__, file=sys.stderr, flush=True)
    with open(state_path, "r+b") as f:
        shared = mmap.mmap(f.fileno(), SLOTS * 8)
    state = memoryview(shared).cast("q")
    install_probe(state)
    sys.argv = ["streamproc", *argv]
    runpy.run_module("streamproc", run_name="__main__", alter_sys=True)


def install_probe(state: memoryview) -> None:
    """Wrap the worker's HTTP clients' `send`, the bulkheads (to read their slot queues) and the
    consumer's poll so that `state` says what it waits for."""
    from streamproc import client, dispatch
    from streamproc.kafka import consumer

    bulkheads: list[Any] = []
    bulkhead_init = dispatch.Bulkhead.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        bulkhead_init(self, *args, **kwargs)
        bulkheads.append(self)

    dispatch.Bulkhead.__init__ = init  # type: ignore[method-assign]

    def waiting() -> int:
        return sum(len(b.limiter._waiters) for b in bulkheads)

    for cls in (client.PyreqwestClient, client.AiohttpClient):
        send = cls.send

        async def probed(self: Any, request: Any, timeout: float, _send: Any = send) -> Any:
            state[ON_WIRE] += 1
            state[WAITING] = waiting()
            try:
                return await _send(self, request, timeout)
            finally:
                state[ON_WIRE] -= 1
                state[WAITING] = waiting()

        cls.send = probed  # type: ignore[method-assign]

    loop_cls = consumer.ConsumerLoop
    poll = loop_cls._poll
    step = loop_cls._step

    def probed_poll(self: Any, want_paused: bool, offsets: Any) -> Any:
        state[POLLING] = 1
        state[PAUSED] = int(want_paused)
        state[POLLS] += 1
        try:
            batch = poll(self, want_paused, offsets)
        finally:
            state[POLLING] = 0
        if batch:
            state[BATCHES] += 1
        return batch

    async def probed_step(self: Any, paused: bool) -> Any:
        state[WINDOW] = self.window()
        state[IN_FLIGHT] = self.in_flight()
        state[WAITING] = waiting()
        return await step(self, paused)

    loop_cls._poll = probed_poll  # type: ignore[method-assign]
    loop_cls._step = probed_step  # type: ignore[method-assign]
    held = getattr(loop_cls, "_held", None)
    if held is not None:  # a revision that holds a full window before it pauses

        async def probed_held(self: Any) -> bool:
            state[HELD] = 1
            state[WINDOW] = self.window()
            try:
                return bool(await held(self))
            finally:
                state[HELD] = 0

        loop_cls._held = probed_held  # type: ignore[attr-defined]


# -- the sampler, outside -----------------------------------------------------------------------------
class Threads:
    """Open /proc files of a process's threads, re-read with pread (no reopening per sample)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.stat: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self.main_syscall = os.open(f"/proc/{pid}/task/{pid}/syscall", os.O_RDONLY)
        self.rescan()

    def rescan(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(f"/proc/{self.pid}/task"):
                tid = int(name)
                if tid in self.stat:
                    continue
                with contextlib.suppress(OSError):
                    self.stat[tid] = os.open(f"/proc/{self.pid}/task/{tid}/stat", os.O_RDONLY)
                    comm = Path(f"/proc/{self.pid}/task/{tid}/comm").read_text().strip()
                    self.names[tid] = "loop" if tid == self.pid else comm

    def states(self) -> dict[int, str]:
        out = {}
        for tid, fd in list(self.stat.items()):
            try:
                text = os.pread(fd, 512, 0)
            except OSError:
                os.close(fd)
                del self.stat[tid]
                continue
            if not text:
                continue
            out[tid] = chr(text[text.rindex(b")") + 2])
        return out

    def main_blocked_in(self) -> str:
        text = os.pread(self.main_syscall, 128, 0).split(maxsplit=1)[0].decode()
        return SYSCALLS.get(text, "running" if text == "running" else f"syscall {text}")

    def close(self) -> None:
        for fd in self.stat.values():
            os.close(fd)
        os.close(self.main_syscall)


def thread_group(name: str) -> str:
    """Threads by role: the event loop, the consumer's Kafka thread, librdkafka's, the HTTP client's."""
    if name == "loop":
        return "loop"
    if name.startswith("kafka"):
        return "kafka thread"
    if name.startswith("rdk:"):
        return "librdkafka"
    if "pyreqwest" in name or "tokio" in name:
        return "http client"
    return "other"


class Samples:
    """What the sampler saw during one drain."""

    def __init__(self) -> None:
        self.total = 0
        self.idle = 0
        self.runnable: Counter[str] = Counter()  # thread group -> samples in which it was runnable
        self.idle_where: Counter[str] = Counter()  # where the loop thread slept while all slept
        self.idle_why: Counter[str] = Counter()
        self.idle_runs: list[int] = []
        self._run = 0
        self.idle_on_wire = 0
        self.idle_window = 0
        self.idle_at: list[int] = []  # the sample numbers of idle samples
        self.selector = 0  # the loop thread asleep in its selector, whatever the other threads do
        self.selector_why: Counter[str] = Counter()

    def add(self, states: dict[int, str], names: dict[int, str], where: str | None, st: list[int]) -> None:
        """One sample: each thread's state, where the loop thread sleeps (None: it runs), the probe."""
        self.total += 1
        busy = False
        for tid, s in states.items():
            if s in "RD":
                busy = True
                self.runnable[thread_group(names.get(tid, "?"))] += 1
        if where == "selector":
            self.selector += 1
            self.selector_why[why_idle(st)] += 1
        if busy:
            if self._run:
                self.idle_runs.append(self._run)
                self._run = 0
            return
        self.idle += 1
        self.idle_at.append(self.total)
        self._run += 1
        self.idle_where[where or "?"] += 1
        self.idle_on_wire += st[ON_WIRE]
        self.idle_window += st[WINDOW]
        self.idle_why[why_idle(st)] += 1

    def finish(self) -> None:
        if self._run:
            self.idle_runs.append(self._run)
            self._run = 0


def why_idle(st: list[int]) -> str:
    """What an idle worker waited for, from its probe's counters."""
    if st[POLLING] and st[PAUSED]:
        return "paused: a poll waits out its timeout"
    if st[HELD]:
        return (
            "window full (held, not polling), deliveries wait for a slot"
            if st[WAITING]
            else ("window full (held, not polling), nothing waits for a slot")
        )
    if st[WAITING]:
        return "deliveries wait for a slot, all slots on the wire"
    if st[ON_WIRE] and st[POLLING]:
        return "requests on the wire and a poll out, no delivery waiting"
    if st[ON_WIRE]:
        return "requests on the wire, no poll out, no delivery waiting"
    if st[POLLING]:
        return "only a poll out (nothing on the wire)"
    return "nothing on the wire, no poll out"


def sample_drain(
    pid: int, state: memoryview, done: Any, hz: float, rescan_every: float = 0.1
) -> tuple[Samples, float]:
    """Sample until `done()` says the drain is over; (samples, seconds)."""
    threads = Threads(pid)
    samples = Samples()
    period = 1.0 / hz
    started = time.perf_counter()
    next_rescan = started + rescan_every
    next_check = started + 0.05
    try:
        while True:
            now = time.perf_counter()
            if now >= next_check:
                if done():
                    break
                next_check = now + 0.05
            if now >= next_rescan:
                threads.rescan()
                next_rescan = now + rescan_every
            states = threads.states()
            st = state.tolist()
            where = None if states.get(pid, "R") in "RD" else threads.main_blocked_in()
            samples.add(states, threads.names, where, st)
            left = period - (time.perf_counter() - now)
            if left > 0:
                time.sleep(left)
    finally:
        threads.close()
    samples.finish()
    return samples, time.perf_counter() - started


class WithConsumer:
    """A worker variant with one more librdkafka consumer setting in its configuration."""

    def __init__(self, variant: Any, setting: str) -> None:
        self.variant = variant
        self.key, _, self.value = setting.partition("=")
        self.source = variant.source
        self.one_destination = variant.one_destination
        self.label = f"{variant.label} {self.key}={self.value}"

    def apply(self, config: dict[str, Any], mix: str) -> dict[str, Any]:
        out: dict[str, Any] = self.variant.apply(config, mix)
        out["kafka"].setdefault("consumer", {})[self.key] = self.value
        return out


# -- driving it ----------------------------------------------------------------------------------------
def run_variant(
    e2e: Any, variant: Any, ctx: dict[str, Any], args: argparse.Namespace, round_no: int
) -> dict[str, Any]:
    import uuid

    import yaml

    out: dict[str, Any] = {"variant": variant.label, "round": round_no}
    group = f"{ctx['tag']}-{uuid.uuid4().hex[:6]}"
    data = variant.apply(
        e2e.base_config(ctx["bootstrap"], [ctx["topic"]], ctx["dlq"], group, ctx["sink"]), ctx["mix"]
    )
    config = ctx["work"] / f"{group}.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    state_path = ctx["work"] / f"{group}.probe"
    state_path.write_bytes(b"\0" * SLOTS * 8)
    with open(state_path, "r+b") as f:
        shared = mmap.mmap(f.fileno(), SLOTS * 8)
    state = memoryview(shared).cast("q")
    env = dict(os.environ)
    if variant.source != e2e.ROOT:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(variant.source), env.get("PYTHONPATH")]))
    log_path = ctx["work"] / f"{group}.log"
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--probe-worker",
        str(state_path),
        "--",
        "run",
        "--config",
        str(config),
    ]
    import subprocess

    before = e2e.sink_stats(ctx["sink"])
    with log_path.open("ab") as log:
        worker = subprocess.Popen(
            e2e.pinned(argv, ctx["cpus"][0]),
            stdout=log,
            stderr=log,
            cwd=variant.source,
            env=env,
            start_new_session=bool(args.nice),
        )
    if args.nice:
        prioritise(worker.pid, args.nice)
    try:
        while e2e.delivered(e2e.sink_stats(ctx["sink"]), before) == 0:
            if worker.poll() is not None:
                out["error"] = f"worker ended: {e2e.log_tail(log_path)}"
                return out
            time.sleep(0.005)
        cpu0 = e2e.cpu_seconds(worker.pid)
        polls0, batches0 = state[POLLS], state[BATCHES]
        target = ctx["expected"]

        def done() -> bool:
            return worker.poll() is not None or e2e.delivered(e2e.sink_stats(ctx["sink"]), before) >= target

        samples, wall = sample_drain(worker.pid, state, done, args.hz)
        cpu = e2e.cpu_seconds(worker.pid) - cpu0
        got = e2e.delivered(e2e.sink_stats(ctx["sink"]), before)
        if got < target:
            out["error"] = f"{got} of {target} deliveries arrived: {e2e.log_tail(log_path)}"
        out.update(
            {
                "source": next(
                    (
                        line.split(" from ", 1)[1]
                        for line in log_path.read_text().splitlines()
                        if line.startswith("streamproc imported from")
                    ),
                    None,
                ),
                "drain_s": wall,
                "events_per_s": ctx["events"] / wall,
                "cpu_share_wall": cpu / wall,
                "events_per_cpu_s": ctx["events"] / cpu,
                "samples": samples.total,
                "idle_share": samples.idle / max(1, samples.total),
                "idle_where": {k: v / max(1, samples.total) for k, v in samples.idle_where.most_common()},
                "idle_why": {k: v / max(1, samples.total) for k, v in samples.idle_why.most_common()},
                "runnable_share": {k: v / max(1, samples.total) for k, v in samples.runnable.most_common()},
                "idle_by_tenth": [
                    sum(1 for i in samples.idle_at if (i - 1) * 10 // max(1, samples.total) == t)
                    / max(1, samples.total)
                    for t in range(10)
                ],
                "selector_share": samples.selector / max(1, samples.total),
                "selector_why": {k: v / max(1, samples.total) for k, v in samples.selector_why.most_common()},
                "idle_runs": len(samples.idle_runs),
                "idle_run_ms_p50": percentile(samples.idle_runs, 0.5) * 1000 / args.hz,
                "idle_run_ms_p99": percentile(samples.idle_runs, 0.99) * 1000 / args.hz,
                "idle_run_ms_max": max(samples.idle_runs, default=0) * 1000 / args.hz,
                "idle_mean_on_wire": samples.idle_on_wire / max(1, samples.idle),
                "idle_mean_window": samples.idle_window / max(1, samples.idle),
                "polls": state[POLLS] - polls0,
                "polls_with_messages": state[BATCHES] - batches0,
            }
        )
        return out
    finally:
        e2e.stop(worker)


def prioritise(pid: int, nice: int) -> None:
    """Give a process started in its own session this niceness, and its session's scheduling
    group too: where the kernel groups processes by session (autogroup), a niceness counts only
    within the group, and each other session gets as much of a core as the whole group."""
    os.setpriority(os.PRIO_PROCESS, pid, nice)
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))


def start_sink(cpu: int | None, nice: int) -> tuple[Any, str]:
    """The Go sink (bench/gosink.py), in a session of its own when it gets a niceness."""
    import subprocess

    from bench.gosink import pinned, sink_binary

    proc = subprocess.Popen(
        pinned([str(sink_binary()), "-addr", "127.0.0.1:0"], cpu),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=bool(nice),
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise SystemExit(f"the partner sink did not start (exit {proc.wait()})")
    if nice:
        prioritise(proc.pid, nice)
    return proc, url


def percentile(values: list[int], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def print_result(r: dict[str, Any]) -> None:
    print(f"  {r['variant']} (round {r['round']})")
    if "drain_s" not in r:
        print(f"    failed: {r.get('error')}")
        return
    print(
        f"    drain {r['events_per_s']:,.0f} events/s, {r['events_per_cpu_s']:,.0f} events per CPU-second, "
        f"wall-clock core share {r['cpu_share_wall']:.0%} (distorted by the machine's load)"
    )
    print(
        f"    idle (every thread asleep) {r['idle_share']:.1%} of {r['samples']:,} samples; "
        f"idle runs: {r['idle_runs']:,}, p50 {r['idle_run_ms_p50']:.1f} ms, "
        f"p99 {r['idle_run_ms_p99']:.1f} ms, max {r['idle_run_ms_max']:.1f} ms"
    )
    tenths = " ".join(f"{v:.1%}" for v in r["idle_by_tenth"])
    print(f"    idle by tenth of the drain: {tenths}")
    where = ", ".join(f"{k} {v:.1%}" for k, v in r["idle_where"].items())
    print(f"    while idle the loop thread slept in: {where or '-'}; what the worker waited for:")
    for why, share in r["idle_why"].items():
        print(f"      {share:6.1%}  {why}")
    print(f"    the loop thread asleep in its selector (other threads aside) {r['selector_share']:.1%}:")
    for why, share in r["selector_why"].items():
        print(f"      {share:6.1%}  {why}")
    print(
        f"    at idle, on average: {r['idle_mean_on_wire']:.0f} requests on the wire, "
        f"window {r['idle_mean_window']:,.0f} events at the last poll"
    )
    runnable = ", ".join(f"{k} {v:.0%}" for k, v in r["runnable_share"].items())
    print(f"    runnable, by thread: {runnable}")
    print(f"    polls {r['polls']:,} ({r['polls_with_messages']:,} with messages)")
    if r.get("error"):
        print(f"    !! {r['error']}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=40000, help="backlog events per mix")
    parser.add_argument("--mix", default="stackadapt,tiktok")
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--baseline", default=None, metavar="REV|PATH")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--hz", type=float, default=1000.0, help="samples per second")
    parser.add_argument("--one-destination", action="store_true", help="the mix's own partner only")
    parser.add_argument(
        "--consumer",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="also run the current worker with this librdkafka consumer setting (kafka.consumer); repeatable",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the worker and the sink at this niceness, each in a session (scheduling group) of its "
        "own: e.g. -10 on a busy machine (root), so that their waits are their own rather than the CPU's",
    )
    parser.add_argument("--json", default=None, metavar="PATH")
    parser.add_argument("--probe-worker", default=None, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.probe_worker:
        probe_main(args.probe_worker, [a for a in rest if a != "--"])
        return 0

    import tempfile
    import uuid

    import orjson
    import yaml

    from bench import e2e

    work = Path(tempfile.mkdtemp(prefix="streamproc-idle-"))
    if args.bootstrap:
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = args.bootstrap
    cpus = e2e.choose_cpus(True)
    bootstrap, run_dir = e2e.start_broker(work)
    sink_proc, sink_url = start_sink(cpus[1], args.nice)
    if cpus[1] is not None:
        os.sched_setaffinity(0, {cpus[1]})  # the sampler beside the sink, off the worker's core
    topics: list[str] = []
    baseline_tree = None
    results: list[dict[str, Any]] = []
    try:
        revisions = [("current", e2e.ROOT)]
        if args.baseline:
            name, source, baseline_tree = e2e.prepare_baseline(args.baseline, work)
            revisions.append((name, source))
        worker_variants: list[Any] = [
            e2e.Variant(n, s, one_destination=args.one_destination) for n, s in revisions
        ]
        worker_variants += [
            WithConsumer(e2e.Variant("current", e2e.ROOT, one_destination=args.one_destination), setting)
            for setting in args.consumer
        ]
        print(f"broker {bootstrap}, sink {sink_url}, worker on core {cpus[0]}, {args.hz:.0f} samples/s")
        for mix in args.mix.split(","):
            mix = mix.strip()
            tag = f"idle-{mix}-{uuid.uuid4().hex[:6]}"
            topic, dlq, events = e2e.backlog(bootstrap, tag, mix, args.events, topics)
            cfg = work / f"{tag}.yaml"
            cfg.write_text(
                yaml.safe_dump(e2e.base_config(bootstrap, [topic], dlq, tag, sink_url), sort_keys=False)
            )
            router = e2e.Router(e2e.load_config(cfg))
            requests = [r for e in events for d in router.route(e) for r in d.requests]
            print(f"\n== {mix}-heavy mix: {len(events):,} events, {len(requests):,} requests")
            for round_no in range(1, args.rounds + 1):
                for variant in worker_variants:
                    wanted = sum(
                        1
                        for r in requests
                        if not variant.one_destination
                        or e2e.partner_of(e2e.url_path(r.url)) == e2e.MIX_DESTINATION[mix][1]
                    )
                    ctx = {
                        "tag": tag,
                        "bootstrap": bootstrap,
                        "topic": topic,
                        "dlq": dlq,
                        "sink": sink_url,
                        "work": work,
                        "mix": mix,
                        "cpus": cpus,
                        "events": len(events),
                        "expected": wanted,
                    }
                    r = run_variant(e2e, variant, ctx, args, round_no)
                    r["mix"] = mix
                    results.append(r)
                    print_result(r)
    finally:
        sink_proc.terminate()
        sink_proc.wait(30)
        e2e.delete_topics(bootstrap, topics)
        if baseline_tree is not None:
            import subprocess

            subprocess.run(
                ["git", "worktree", "remove", "--force", str(baseline_tree)],
                cwd=e2e.ROOT,
                capture_output=True,
            )
        if run_dir is not None:
            import subprocess

            subprocess.run(
                [str(e2e.ROOT / "scripts" / "kafka-local"), "stop", "--dir", str(run_dir)],
                capture_output=True,
            )
    if args.json:
        text = orjson.dumps(results, option=orjson.OPT_INDENT_2).decode()
        print(text) if args.json == "-" else Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
