"""Routing throughput on one core (decode, match, map, validate, build) with every preset of every partner.

    .venv/bin/python -m bench.route [--events 20000] [--rounds 3] [--profile] [--gates] [--gate-cost N]
                                    [--fast-paths N]

Prints events/s (and deliveries/s) for the whole routing path over a mixed corpus, next to the raw
JSON decode rate of the same corpus measured in the same run. `--gates` gives every destination
consent categories and destination filters, and a share of the events an integrations object and
consent preferences, to show what the gates cost when they are used. `--gate-cost N` measures, in
this one process, what the gate step costs when no gate is configured: N rounds, each timing the same
slices of the corpus through `Router.route` and through the steps it ran before the gates existed
(match, then map and build), interleaved so that a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streamproc.config import parse_config
from streamproc.core import fast_paths
from streamproc.core.events import decode_json
from streamproc.router import Router

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples" / "events.jsonl"

CONFIG = {
    "destinations": [
        {
            "id": "stackadapt",
            "type": "stackadapt",
            "settings": {"pixelId": "sqQHa3Ob1hFi__2EcYYVZg1"},
            "presets": True,
        },
        {
            "id": "tiktok-offline",
            "type": "tiktok-offline-conversions",
            "settings": {"accessToken": "bench-token", "eventSetID": "7312"},
            "presets": True,
        },
        {
            "id": "seg",
            "type": "seg",
            "settings": {"apiKey": "abc8fb18-7559-4324-9921-a4b5015b4a1c"},
            "presets": True,
        },
    ]
}


GATES = {
    "consent_categories": ["C0004"],
    "filters": [
        {"if": "contains(lowercase(event), 'test')", "drop": True},
        {"if": "type = 'identify'", "drop_properties": ["traits.birthday"]},
    ],
}


def corpus(size: int, seed: int = 7, gates: bool = False) -> list[bytes]:
    """`size` raw events shaped like the examples (every call type, ecommerce flows), with distinct ids;
    with `gates`, a tenth carry an integrations object and a third consent preferences."""
    templates = []
    for line in EXAMPLES.read_bytes().splitlines():
        try:
            templates.append(decode_json(line))
        except Exception:
            continue
    rng = random.Random(seed)
    out = []
    for i in range(size):
        event = dict(rng.choice(templates))
        event["messageId"] = f"bench-{i}"
        if "userId" in event and rng.random() < 0.5:
            event["userId"] = f"user-{rng.randrange(50_000)}"
        if gates and rng.random() < 0.1:
            event["integrations"] = {"All": False, "Seg": True}
        if gates and rng.random() < 0.3:
            prefs = {"C0004": rng.random() < 0.7}
            event["context"] = {**event.get("context", {}), "consent": {"categoryPreferences": prefs}}
        out.append(orjson.dumps(event))
    return out


def measure(fn: Callable[[], None], rounds: int) -> tuple[float, float]:
    """Best (wall seconds, CPU seconds of this process) over `rounds` runs. CPU time is what one core
    spent, so it stays meaningful on a busy machine; wall time is shown next to it."""
    best_wall = best_cpu = float("inf")
    for _ in range(rounds):
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return best_wall, best_cpu


def breakdown(router: Router, raw: list[bytes], rounds: int) -> None:
    """Each stage timed on its own (tight loops, so a little faster than when interleaved)."""
    from streamproc.destinations.base import BuildContext

    events = [decode_json(m) for m in raw]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    _, match_cpu = measure(lambda: [router.matching(e) for e in events], rounds)
    print(f"match: {match_cpu / len(events) * 1e6:.1f} us CPU per event")
    work: dict[str, list[Any]] = {}
    for event in events:
        for route in router.matching(event):
            work.setdefault(route.destination_id, []).append((route, event))
    for dest, items in work.items():
        actions = [route.run.__self__ for route, _ in items]  # type: ignore[attr-defined]
        payloads = [route.resolve(event) for route, event in items]
        valid = [action.validate(p) for action, p in zip(actions, payloads, strict=True)]
        contexts = [BuildContext(route.settings, route.endpoint, event, now) for route, event in items]
        _, resolve_cpu = measure(lambda items=items: [r.resolve(e) for r, e in items], rounds)
        _, validate_cpu = measure(
            lambda a=actions, p=payloads: [x.validate(y) for x, y in zip(a, p, strict=True)], rounds
        )
        _, build_cpu = measure(
            lambda a=actions, v=valid, c=contexts: [
                x.action.build(y, z) for x, y, z in zip(a, v, c, strict=True)
            ],
            rounds,
        )
        n = len(items)
        per = [
            f"{label} {cpu / n * 1e6:.1f} us"
            for label, cpu in (("map", resolve_cpu), ("validate", validate_cpu))
        ]
        fused = [(route.validated, event) for route, event in items if getattr(route, "validated", None)]
        if fused:
            from streamproc.core.payload import UNDECIDED

            _, fused_cpu = measure(lambda f=fused: [v(e) for v, e in f], rounds)
            undecided = sum(v(e) is UNDECIDED for v, e in fused) / n
            per.append(f"map+validate in one {fused_cpu / n * 1e6:.1f} us ({undecided:.0%} left to validate)")
        per.append(f"build {build_cpu / n * 1e6:.1f} us")
        print(f"{dest:16} {n / len(events):.2f} deliveries/event; per delivery (CPU): {', '.join(per)}")


def interleaved(
    slices: list[list[Any]],
    first: Callable[[list[Any]], None],
    second: Callable[[list[Any]], None],
    rounds: int,
) -> list[tuple[float, float]]:
    """CPU seconds of `first` and of `second` over all slices, per round: each slice goes through
    both in turn, the order alternating, so a busy machine slows both alike."""
    out = []
    gc.disable()
    try:
        for r in range(rounds):
            spent = [0.0, 0.0]
            for i, chunk in enumerate(slices):
                order = [(0, first), (1, second)]
                for k, fn in order if (i + r) % 2 else reversed(order):
                    start = time.process_time()
                    fn(chunk)
                    spent[k] += time.process_time() - start
            out.append((spent[0], spent[1]))
    finally:
        gc.enable()
    return out


def gate_cost(router: Router, raw: list[bytes], rounds: int) -> None:
    """The gates' cost on the fast path (no gate configured): route() against match + build."""
    events = [decode_json(m) for m in raw]
    slices = [events[i : i + 500] for i in range(0, len(events), 500)]
    matching, build = router.matching, router._deliveries

    def without_gates(chunk: list[Any]) -> None:
        for event in chunk:
            routes = matching(event)
            if routes:
                build(event, routes, None)

    def with_gates(chunk: list[Any]) -> None:
        route = router.route
        for event in chunk:
            route(event)

    costs = []
    n = len(events)
    for r, spent in enumerate(interleaved(slices, without_gates, with_gates, rounds)):
        cost = spent[1] / spent[0] - 1
        costs.append(cost)
        print(
            f"round {r + 1}: without the gate step {n / spent[0]:,.0f} events/s, "
            f"with it {n / spent[1]:,.0f} events/s: {cost:+.1%}"
        )
    costs.sort()
    print(f"gate step cost: median {costs[len(costs) // 2]:+.1%}, spread {costs[0]:+.1%} .. {costs[-1]:+.1%}")


def fast_path_costs(config: Any, raw: list[bytes], rounds: int) -> None:
    """What each fast path saves: the corpus routed by a router built and run with that one fast
    path off, against all on, in slices taken in turn (so a busy machine slows both alike); the
    median over `rounds` of the extra CPU time per event. Then all of them off at once
    (STREAMPROC_EXACT_ONLY=1)."""
    events = [decode_json(m) for m in raw]
    slices = [events[i : i + 500] for i in range(0, len(events), 500)]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    on = Router(config, now=now)
    print(f"{'fast path':26} {'all on':>12} {'this one off':>14}  cost of turning it off (median, spread)")
    # Slot constructors are chosen when the router module is imported: measured on their own below.
    each = [p.name for p in fast_paths.FAST_PATHS if p.name != fast_paths.SLOT_CONSTRUCTORS]
    for names in [(name,) for name in each] + [tuple(each)]:
        with fast_paths.without(*names):
            off = Router(config, now=now)

        def run_on(chunk: list[Any]) -> None:
            for event in chunk:
                on.route(event)

        def run_off(chunk: list[Any], names: tuple[str, ...] = names, off: Router = off) -> None:
            with fast_paths.without(*names):
                for event in chunk:
                    off.route(event)

        runs = interleaved(slices, run_on, run_off, rounds)
        costs = [off_cpu / on_cpu - 1 for on_cpu, off_cpu in runs]
        spent = {"on": runs[-1][0], "off": runs[-1][1]}
        costs.sort()
        n = len(events)
        label = names[0] if len(names) == 1 else "all of these off"
        print(
            f"{label:26} {spent['on'] / n * 1e6:>9.1f} us {spent['off'] / n * 1e6:>11.1f} us"
            f"  {costs[len(costs) // 2]:+.1%} ({costs[0]:+.1%} .. {costs[-1]:+.1%})"
        )
    slot_constructor_cost(on, events, rounds)


def slot_constructor_cost(router: Router, events: list[Any], rounds: int) -> None:
    """Request and Delivery built through their slots against their own __init__, per call, and
    what that comes to per event of this corpus against the CPU time routing it takes."""
    from streamproc.destinations.base import Request, fast_constructor
    from streamproc.router import Delivery

    names = ("delivery_id", "destination", "subscription", "action", "requests", "error", "skipped")
    rows = [
        (Request, ("POST", "https://x.example/p", {}, b"{}"), ("method", "url", "headers", "body")),
        (Delivery, ("d", "seg", "s", "track", (), None, None, "k"), (*names, "ordering_key")),
    ]
    per_event = {Request: 0, Delivery: 0}
    for event in events:
        for delivery in router.route(event):
            per_event[Delivery] += 1
            per_event[Request] += len(delivery.requests)
    start = time.process_time()
    for event in events:
        router.route(event)
    route_us = (time.process_time() - start) / len(events) * 1e6
    saved_us = 0.0
    for cls, args, fields in rows:
        fast, plain = fast_constructor(cls, fields), cls
        best = {"slots": float("inf"), "init": float("inf")}
        for _ in range(rounds):
            for label, make in (("slots", fast), ("init", plain)):
                start = time.process_time()
                for _ in range(100_000):
                    make(*args)
                best[label] = min(best[label], (time.process_time() - start) / 100_000 * 1e9)
        saved_us += (best["init"] - best["slots"]) / 1000 * per_event[cls] / len(events)
        print(f"  {cls.__name__}: {best['slots']:.0f} ns through slots, {best['init']:.0f} ns by __init__")
    print(
        f"{fast_paths.SLOT_CONSTRUCTORS:26} saves {saved_us:.2f} us of {route_us:.1f} us per event"
        f" ({saved_us / route_us:+.1%})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print the top functions of one routing pass")
    parser.add_argument(
        "--breakdown", action="store_true", help="CPU time of map, validate and build per destination"
    )
    parser.add_argument(
        "--gates", action="store_true", help="consent categories and filters on every destination"
    )
    parser.add_argument(
        "--gate-cost", type=int, metavar="ROUNDS", help="the gate step's cost when no gate is configured"
    )
    parser.add_argument(
        "--fast-paths",
        type=int,
        metavar="ROUNDS",
        help="what turning off each fast path (streamproc.core.fast_paths) costs, one at a time",
    )
    args = parser.parse_args(argv)

    data = {"destinations": [{**d, **(GATES if args.gates else {})} for d in CONFIG["destinations"]]}
    config = parse_config(data, "bench", {})
    router = Router(config, now=datetime(2026, 1, 1, tzinfo=UTC))
    raw = corpus(args.events, gates=args.gates)
    subscriptions = sum(len([s for s in d.subscriptions if s.enabled]) for d in config.destinations)

    def decode_only() -> None:
        for message in raw:
            decode_json(message)

    outcomes: Counter[str] = Counter()

    def route_all() -> None:
        outcomes.clear()
        route = router.route
        for message in raw:
            for delivery in route(decode_json(message)):
                outcomes["deliveries"] += 1
                if delivery.error is not None:
                    outcomes["error"] += 1
                elif delivery.skipped is not None:
                    outcomes["skipped"] += 1
                else:
                    outcomes["requests"] += len(delivery.requests)

    decode_wall, decode_cpu = measure(decode_only, args.rounds)
    route_wall, route_cpu = measure(route_all, args.rounds)
    n = len(raw)
    deliveries = outcomes["deliveries"]
    print(f"corpus: {n} events; {len(config.destinations)} destinations, {subscriptions} subscriptions")
    rows = [
        ("raw decode (orjson)", decode_cpu, decode_wall),
        ("decode+match+map+validate+build (1 core)", route_cpu, route_wall),
    ]
    print(f"{'':42} {'per CPU second':>16} {'per wall second':>16}")
    for label, cpu, wall in rows:
        print(f"{label + ':':42} {n / cpu:>16,.0f} {n / wall:>16,.0f}  events/s")
    print(
        f"  per event: {route_cpu / n * 1e6:.1f} us CPU; per pass: {deliveries} deliveries,"
        f" {outcomes['requests']} requests, {outcomes['error']} errors, {outcomes['skipped']} skipped"
    )
    print(f"  goal 25,000 events/s per core: {'met' if n / route_cpu >= 25_000 else 'NOT met'}")

    if args.breakdown:
        breakdown(router, raw, args.rounds)

    if args.gate_cost:
        gate_cost(router, raw, args.gate_cost)

    if args.fast_paths:
        fast_path_costs(config, raw, args.fast_paths)

    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(route_all)
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(25)
        print(stream.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
