"""Where the worker's CPU per event goes, layer by layer, in one process on one core.

    .venv/bin/python -m bench.floor [--events 20000] [--rounds 9] [--mix stackadapt,tiktok]

For each event mix of bench/e2e.py (its events, and its configuration with the mix's own partner
only, as e2e's "one destination" variant), the same events go through the worker's own code with
one more layer switched on at each step:

  decode      orjson decoding of each event (the raw decode limit)
  route       + Router.routed: triggers, gates, mapping, validation, the partner's request built
  pipeline    + EventProcessor.process: metrics, offsets, outcome; each delivery settled at once
  task        + one task per delivery, awaiting a client that answers at the next loop turn
  dispatch    + the worker's senders instead (key order, concurrency slot, the bulkhead's retry
              loop, circuit breaker, the partner's classification, latency metrics): the whole
              worker between the consumer and the HTTP client

and, measured in the same run, the raw asyncio limit: a bare task that suspends once and is awaited.
What is left out is the consumer (bench/e2e.py's raw consume+decode line is its limit) and the HTTP
client's own cost per request, its Python calls and its I/O thread (e2e's raw HTTP line). A worker
spends about its `dispatch` figure plus those two per event.

Each figure is the best of --rounds, the steps interleaved round by round so that a machine whose
speed drifts slows them alike; µs are CPU time of this process. The event loop is uvloop when it
is installed (as for `streamproc run`), and the collector is set up as the worker sets it.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import orjson
import yaml

from bench.e2e import MIX_DESTINATION, MIXES, base_config, make_events
from streamproc.config import load_config
from streamproc.core.events import decode_json
from streamproc.destinations.base import Request
from streamproc.dispatch import Bulkhead, BulkheadPolicy, Dispatcher
from streamproc.handoff import DeliveryResult, Job, Lane, Redelivery, Sender
from streamproc.kafka.offsets import OffsetTracker
from streamproc.kafka.reader import Partition
from streamproc.metrics import Metrics
from streamproc.pipeline import EventProcessor
from streamproc.router import Delivery, Router
from streamproc.runs.worker import tune_gc
from streamproc.senders import senders_for

PARTITIONS = 8
WINDOW = 5000
"""Events in flight at most (the worker's window falls to about this before it reads more)."""
ANSWER = (200, {"content-type": "application/json"}, b'{"code":0,"message":"OK"}')
"""A success for either partner (TikTok reads its envelope; StackAdapt only the status)."""
DELIVERED = DeliveryResult("delivered", attempts=1)


class Message:
    """What the pipeline reads of a consumed record."""

    __slots__ = ("_offset", "_partition", "_value")

    def __init__(self, offset: int, value: bytes, partition: int) -> None:
        self._offset = offset
        self._value = value
        self._partition = partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> None:
        return None

    def headers(self) -> None:
        return None

    def topic(self) -> str:
        return "events"

    def partition(self) -> int:
        return self._partition

    def timestamp(self) -> tuple[int, int]:
        return 1, int(time.time() * 1000)

    def __len__(self) -> int:
        return len(self._value)


class NextTurnClient:
    """An HTTP client that answers every request with a success at the event loop's next turn."""

    name = "next-turn"

    async def send(self, request: Request, timeout: float) -> tuple[int, Mapping[str, str], bytes]:
        await asyncio.sleep(0)
        return ANSWER

    async def close(self) -> None:
        pass


class SettleAtOnce:
    """A sender that settles each delivery as delivered on the spot: no task, no await."""

    def send(self, delivery: Delivery, job: Job) -> None:
        job.processor.settle(job, delivery, DELIVERED)  # type: ignore[attr-defined]

    def unrouted(self, redelivery: Redelivery, lane: Lane, event: Mapping[str, Any]) -> None:
        pass


class TaskEach:
    """A sender that starts one task per delivery, awaiting the client once per request."""

    def __init__(self, client: NextTurnClient) -> None:
        self._client = client

    def send(self, delivery: Delivery, job: Job) -> None:
        job.start(delivery, self._sent(delivery))

    async def _sent(self, delivery: Delivery) -> DeliveryResult:
        for request in delivery.requests:
            await self._client.send(request, 10.0)
        return DELIVERED

    def unrouted(self, redelivery: Redelivery, lane: Lane, event: Mapping[str, Any]) -> None:
        pass


class Mix:
    """One mix's events and configuration, and the layers to run them through."""

    def __init__(self, mix: str, n: int, work: Path) -> None:
        data = base_config("127.0.0.1:9092", ["events"], "events-dlq", "floor", "http://127.0.0.1:9")
        data["destinations"] = [d for d in data["destinations"] if d["id"] == MIX_DESTINATION[mix][0]]
        path = work / f"{mix}.yaml"
        path.write_text(yaml.safe_dump(data))
        self.config = load_config(str(path))
        self.raw = [orjson.dumps(e) for e in make_events(n, MIXES[mix], seed=1, prefix=mix)]
        self.router = Router(self.config)
        self.deliveries = sum(len(self.router.route(decode_json(v))) for v in self.raw)
        self.client = NextTurnClient()

    # -- the steps: each returns the CPU seconds of one pass over the events -----------------------
    def decode(self) -> float:
        loads = orjson.loads
        started = time.process_time()
        for value in self.raw:
            loads(value)
        return time.process_time() - started

    def route(self) -> float:
        routed = self.router.routed
        started = time.process_time()
        for value in self.raw:
            routed(decode_json(value))
        return time.process_time() - started

    def pipeline(self) -> float:
        return asyncio.run(self._through(lambda: {d: SettleAtOnce() for d in self._ids()}))

    def task(self) -> float:
        return asyncio.run(self._through(lambda: {d: TaskEach(self.client) for d in self._ids()}))

    def dispatch(self) -> float:
        def senders() -> dict[str, Sender]:
            metrics = Metrics()
            bulkheads = [
                Bulkhead(
                    BulkheadPolicy.from_config(cfg),
                    classify=dest.classify,
                    metrics=metrics,
                    client=self.client,
                )
                for dest, cfg in self.router.destinations.values()
            ]
            dispatcher = Dispatcher(bulkheads)
            return senders_for(dispatcher, dispatcher.bulkheads)

        return asyncio.run(self._through(senders))

    def _ids(self) -> list[str]:
        return list(self.router.destinations)

    async def _through(self, senders: Callable[[], Mapping[str, Sender]]) -> float:
        """Every event through an EventProcessor with these senders, at most WINDOW in flight."""
        parts = [Partition("events", p, OffsetTracker("events", p)) for p in range(PARTITIONS)]
        finished = 0

        def complete(part: Any, offset: int) -> None:
            nonlocal finished
            part.tracker.complete(offset)
            finished += 1

        def halt(exc: BaseException, reason: str | None) -> None:
            raise SystemExit(f"the pipeline stopped: {reason or exc!r}")

        processor = EventProcessor(
            router=self.router,
            decode=decode_json,
            senders=senders(),
            metrics=Metrics(),
            complete=complete,
            halt=halt,
        )
        started = time.process_time()
        for i, value in enumerate(self.raw):
            part = parts[i % PARTITIONS]
            offset = i // PARTITIONS
            part.tracker.add(offset)
            processor.process(Message(offset, value, part.partition), part)
            while i - finished >= WINDOW:
                await asyncio.sleep(0)
        while finished < len(self.raw):
            await asyncio.sleep(0)
        return time.process_time() - started


def bare_task(n: int) -> float:
    """CPU seconds of n bare tasks that suspend once each, at most WINDOW at a time."""

    async def once() -> None:
        await asyncio.sleep(0)

    async def run() -> float:
        loop = asyncio.get_running_loop()
        started = time.process_time()
        left = n
        while left:
            batch: list[Coroutine[Any, Any, None]] = [once() for _ in range(min(WINDOW, left))]
            left -= len(batch)
            await asyncio.gather(*(loop.create_task(c) for c in batch))
        return time.process_time() - started

    return asyncio.run(run())


STEPS = ("decode", "route", "pipeline", "task", "dispatch")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--mix", default="stackadapt,tiktok")
    args = ap.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    work = Path(tempfile.mkdtemp(prefix="floor-"))
    mixes = {m: Mix(m, args.events, work) for m in args.mix.split(",")}
    tune_gc()
    best: dict[tuple[str, str], float] = {}
    bare = float("inf")
    for _ in range(args.rounds):
        for name, mix in mixes.items():
            for step in STEPS:
                seconds = getattr(mix, step)()
                key = (name, step)
                best[key] = min(best.get(key, float("inf")), seconds)
        bare = min(bare, bare_task(args.events))
    print(f"CPU per event, best of {args.rounds} rounds, {args.events:,} events per mix, {loop_name}")
    print(f"  raw asyncio: a bare task that suspends once  {1e6 * bare / args.events:6.1f} us")
    for name, mix in mixes.items():
        per = {s: 1e6 * best[(name, s)] / len(mix.raw) for s in STEPS}
        per_event = mix.deliveries / len(mix.raw)
        print(f"\n== {name}-heavy mix, its own partner only: {per_event:.2f} deliveries per event")
        print(f"  {'step':10s} {'us/event':>9s} {'added':>7s}")
        previous = 0.0
        for step in STEPS:
            print(f"  {step:10s} {per[step]:9.1f} {per[step] - previous:+7.1f}")
            previous = per[step]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
