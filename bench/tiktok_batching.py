"""Requests a TikTok-only run sends with batching off and on, counted by the partner simulator.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 .venv/bin/python -m bench.tiktok_batching [--events 10000]

Each run produces the same events (every one matching a TikTok preset) to a fresh topic, runs the
worker in this process against an in-process simulator until every offset is committed, and prints
the deliveries, the requests the simulator received and the events they carried. Counts only: the
worker and the simulator share this process, so no rate is measured here (bench/e2e.py does that).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamproc.config import load_config, parse_config
from streamproc.devtools.simulator import PartnerSimulator
from streamproc.logging import configure_logging
from streamproc.router import Router
from streamproc.runs.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4


def tiktok_events(n: int, seed: int = 5) -> list[dict[str, Any]]:
    """`n` events cloned from the examples, each matching at least one TikTok preset."""
    config = {
        "destinations": [
            {
                "id": "tiktok",
                "type": "tiktok-offline-conversions",
                "settings": {"accessToken": "t", "eventSetID": "7312"},
                "presets": True,
            }
        ]
    }
    router = Router(parse_config(config, "<bench>", {}))
    base = []
    for line in (ROOT / "examples" / "events.jsonl").read_bytes().splitlines():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and any(d.requests for d in router.route(event)):
            base.append(event)
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        event = dict(rnd.choice(base))
        event["messageId"] = f"tt-{i}"
        event["userId"] = f"user-{rnd.randrange(500)}"
        out.append(event)
    return out


def write_config(path: Path, bootstrap: str, topic: str, group: str, sim_url: str, batch: Any) -> Path:
    tiktok: dict[str, Any] = {
        "id": "tiktok",
        "type": "tiktok-offline-conversions",
        "settings": {"accessToken": "bench-token", "eventSetID": "7312"},
        "endpoint": sim_url,
        "presets": True,
        "limits": {"concurrency": 64},
    }
    if batch is not None:
        tiktok["batch"] = batch
    data = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "topics": [topic],
            "group_id": group,
            "dead_letter_topic": f"{topic}.dlq",
        },
        "limits": {"commit_interval": 0.5},
        "metrics": {"enabled": False},
        "log": {"format": "json", "level": "warning"},
        "destinations": [tiktok],
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> dict[int, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for name, parts in ((topic, PARTITIONS), (f"{topic}.dlq", 1)):
        admin.create_topics([NewTopic(name, num_partitions=parts, replication_factor=1)])[name].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for event in events:
        while True:
            try:
                producer.produce(topic, orjson.dumps(event), key=event["userId"].encode())
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:8]}"})
    ends = {
        p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)
    }
    probe.close()
    return {p: e for p, e in ends.items() if e > 0}


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
    finally:
        consumer.close()


async def one_run(bootstrap: str, events: list[dict[str, Any]], batch: Any, work: Path) -> dict[str, Any]:
    sim = PartnerSimulator(seed=1, record=False)
    url = await sim.start()
    tag = uuid.uuid4().hex[:8]
    topic, group = f"bench-tiktok-{tag}", f"bench-tiktok-{tag}"
    ends = await asyncio.to_thread(produce, bootstrap, topic, events)
    config_path = write_config(work / f"{tag}.yaml", bootstrap, topic, group, url, batch)
    config = load_config(config_path)
    configure_logging(config.log)
    router = Router(config)
    deliveries = sum(1 for e in events for d in router.route(e) if d.requests)
    worker = Worker(config, router=router)
    task = asyncio.create_task(worker.run_async())
    try:
        while await asyncio.to_thread(committed, bootstrap, group, topic) != ends:
            if task.done():
                task.result()
                raise RuntimeError("the worker stopped before committing every offset")
            await asyncio.sleep(0.5)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)
        await sim.stop()
    stats = sim.stats()
    return {
        "events": len(events),
        "deliveries": deliveries,
        "requests": stats["total"],
        "answers": stats["partners"].get("tiktok", {}),
        "events_sent": stats.get("events", {}).get("tiktok", 0),
    }


async def main_async(args: argparse.Namespace) -> int:
    bootstrap = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        print("set KAFKA_BOOTSTRAP_SERVERS or --bootstrap", file=sys.stderr)
        return 2
    events = tiktok_events(args.events)
    batch = {"max_events": args.max_events, "max_wait_ms": args.max_wait_ms}
    with tempfile.TemporaryDirectory() as tmp:
        off = await one_run(bootstrap, events, None, Path(tmp))
        on = await one_run(bootstrap, events, batch, Path(tmp))
    print(f"TikTok-only run, {args.events} events, counted by the simulator")
    print(f"{'':28}{'batching off':>14}{'batching on':>14}")
    for label, key in (
        ("events", "events"),
        ("deliveries", "deliveries"),
        ("requests", "requests"),
        ("events in requests", "events_sent"),
    ):
        print(f"{label:28}{off[key]:>14}{on[key]:>14}")
    per = [r["events_sent"] / r["requests"] if r["requests"] else 0.0 for r in (off, on)]
    print(f"{'events per request':28}{per[0]:>14.1f}{per[1]:>14.1f}")
    print(f"answers off: {off['answers']}  on: {on['answers']}  (batch: {batch})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--bootstrap")
    parser.add_argument("--max-events", type=int, default=1000)
    parser.add_argument("--max-wait-ms", type=float, default=100.0)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
