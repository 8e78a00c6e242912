"""`streamproc replay`: backfill a time or offset range of a topic through the configured routing."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamproc import masking
from streamproc.compose import build_dispatcher, build_senders
from streamproc.config import Config, KafkaConfig, load_config
from streamproc.decoding import make_decoder
from streamproc.dispatch import Dispatcher
from streamproc.errors import StreamprocError
from streamproc.kafka.producer import AckedProducer, acked_producer
from streamproc.kafka.redrive import RedriveMarks, marking
from streamproc.kafka.replay import (
    RangeFeed,
    RangeReader,
    ReplayState,
    parse_position,
    range_consumer_config,
    resolve_ranges,
    run_replay,
)
from streamproc.kafka.replay_progress import GroupProgress
from streamproc.logging import configure_logging, flush_suppressed, register_secrets
from streamproc.masking import Masker, config_secrets
from streamproc.metrics import Metrics
from streamproc.output import json_line
from streamproc.pipeline import EventProcessor, Undecodable, kafka_section
from streamproc.progress import Progress
from streamproc.router import Delivery, Router
from streamproc.summary import Summary


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "replay",
        help="backfill a time or offset range of a topic through the routing (own consumer, no group commit)",
        description=(
            "Read a range of a topic with partitions assigned (the live consumer group is never touched),"
            " route every event like the worker, deliver, and dead-letter what fails. Positions are"
            " ISO-8601 times, one offset for every partition (1200), per-partition offsets"
            " (0:1200,1:980), beginning or end; --to is exclusive."
        ),
    )
    p.add_argument("--config", "-c", required=True, metavar="FILE")
    p.add_argument("--from", dest="start", metavar="POSITION", help="first position (default: beginning)")
    p.add_argument(
        "--to", dest="end", metavar="POSITION", help="end position, exclusive (default: the end now)"
    )
    p.add_argument("--topic", help="the topic to replay (default: the configured topic, if only one)")
    add_filter_arguments(p)
    p.add_argument("--rate", type=positive_float, metavar="N", help="at most N events per second")
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be sent (like `send`), send nothing"
    )
    progress = p.add_mutually_exclusive_group()
    progress.add_argument(
        "--state", type=Path, metavar="FILE", help="save progress here; rerun with it to resume"
    )
    progress.add_argument(
        "--progress-group",
        metavar="GROUP",
        help="save progress in Kafka as the commits of this consumer group (not the live one); rerun"
        " with it to resume, e.g. in a Job whose pod may be retried; a finished replay sends nothing again",
    )
    p.add_argument("--max-in-flight", type=int, default=1000, metavar="N", help="events in flight (1000)")
    masking.add_arguments(p)
    p.set_defaults(handler=run)


def add_filter_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--destination", "-d", action="append", metavar="ID", help="only this destination (repeatable)"
    )
    p.add_argument(
        "--subscription",
        "-s",
        action="append",
        metavar="ID/NAME",
        help="only this subscription: DESTINATION_ID/NAME, or NAME when unambiguous (repeatable)",
    )


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def route_filters(
    router: Router, destinations: list[str] | None, subscriptions: list[str] | None
) -> tuple[set[str] | None, set[tuple[str, str]] | None]:
    """Check --destination/--subscription against the configuration and turn them into Router filters."""
    known = router.destinations
    dests = set(destinations) if destinations else None
    if dests:
        unknown = sorted(dests - set(known))
        if unknown:
            raise StreamprocError(
                f"unknown destination id(s): {', '.join(unknown)} (known: {', '.join(known)})"
            )
    subs: set[tuple[str, str]] | None = None
    if subscriptions:
        subs = set()
        all_subs = [(d, s.name) for d, (_dest, cfg) in known.items() for s in cfg.subscriptions]
        for text in subscriptions:
            if "/" in text:
                d, _, name = text.partition("/")
                found = [(d, name)] if (d, name) in all_subs else []
            else:
                found = [pair for pair in all_subs if pair[1] == text]
            if not found:
                raise StreamprocError(f"unknown subscription {text!r}")
            if len(found) > 1:
                options = ", ".join(f"{d}/{n}" for d, n in found)
                raise StreamprocError(
                    f"subscription {text!r} is in several destinations; use one of {options}"
                )
            subs.add(found[0])
    return dests, subs


@dataclass
class DeliveryStack:
    """The worker's delivery machinery, built the same way for replay and redrive."""

    config: Config
    kafka: KafkaConfig
    router: Router
    metrics: Metrics
    dispatcher: Dispatcher | None
    dlq: AckedProducer | None

    async def close(self) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.close()
        if self.dlq is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.dlq.close)


def load(config_path: str, command: str) -> tuple[Config, KafkaConfig]:
    config = load_config(config_path)
    configure_logging(config.log)
    register_secrets(config_secrets(config))
    return config, kafka_section(config, command)


def build_stack(config: Config, kafka: KafkaConfig, *, dry_run: bool) -> DeliveryStack:
    router = Router(config)
    metrics = Metrics()
    if dry_run:
        return DeliveryStack(config, kafka, router, metrics, None, None)
    dispatcher = build_dispatcher(config, router, metrics)
    dlq = acked_producer(kafka, [kafka.dead_letter_topic])
    return DeliveryStack(config, kafka, router, metrics, dispatcher, dlq)


def dry_run_printer(out: Any, masker: Masker) -> Callable[[Any, Delivery], None]:
    from streamproc.commands.send import delivery_json

    def show(msg: Any, delivery: Delivery) -> None:
        mid = delivery.delivery_id.rsplit(":", 2)[0] or None
        line = delivery_json(msg.offset(), delivery, mid, masker)
        line["partition"] = msg.partition()
        line["offset"] = msg.offset()
        out.write(json_line(line))

    return show


def start_run(
    stack: DeliveryStack,
    topic: str,
    summary: Summary,
    args: argparse.Namespace,
    out: Any,
    *,
    undecodable: Undecodable = "dead-letter",
    destinations: set[str] | None = None,
    subscriptions: set[tuple[str, str]] | None = None,
    marks: RedriveMarks | None = None,
) -> tuple[RangeFeed, EventProcessor]:
    """The feed and the event processor of a replay or redrive run (--max-in-flight, --rate,
    --dry-run), stoppable by the first Ctrl-C or SIGTERM."""
    feed = RangeFeed(
        topic,
        summary=summary,
        max_in_flight=args.max_in_flight,
        max_bytes=stack.config.limits.max_in_flight_bytes,
        rate=args.rate,
        on_drain=stack.dispatcher.flush if stack.dispatcher is not None else None,
    )
    senders = build_senders(stack.dispatcher) if stack.dispatcher is not None else None
    if senders is not None and marks is not None:
        senders = marking(senders, marks)
    processor = EventProcessor(
        router=stack.router,
        decode=make_decoder(stack.config.input),
        senders=senders,
        dead_letters=stack.dlq,
        metrics=stack.metrics,
        complete=feed.complete,
        halt=feed.fail,
        destinations=destinations,
        subscriptions=subscriptions,
        summary=summary,
        undecodable=undecodable,
        on_dry_run=dry_run_printer(out, masking.for_config(stack.config, args)) if args.dry_run else None,
    )
    install_stop(feed.stop)
    return feed, processor


async def close_run(progress: Progress | None, reader: RangeReader, stack: DeliveryStack) -> None:
    """End a replay or redrive run: progress line, reading consumer, then dispatch and dead letters."""
    if progress is not None:
        progress.close()
    await reader.close()
    await stack.close()


def install_stop(stop: asyncio.Event) -> None:
    """First Ctrl-C or SIGTERM: stop reading and finish in-flight work, then save."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def replay(args: argparse.Namespace, out: Any = None, err: Any = None) -> tuple[int, Summary]:
    """The whole command, callable from tests; returns the exit code and the summary."""
    out = out if out is not None else sys.stdout.buffer
    err = err if err is not None else sys.stderr
    config, kafka = load(args.config, "replay")
    topic = args.topic
    if topic is None:
        if len(kafka.topics) != 1:
            raise StreamprocError(
                f"the configuration has topics {', '.join(kafka.topics)}; choose one with --topic"
            )
        topic = kafka.topics[0]
    stack = build_stack(config, kafka, dry_run=args.dry_run)
    dests, subs = route_filters(stack.router, args.destination, args.subscription)

    state_path: Path | None = None if args.dry_run else args.state
    progress_group: str | None = None if args.dry_run else args.progress_group
    if progress_group is not None and progress_group == kafka.group_id:
        raise StreamprocError(f"--progress-group must not be the workers' group ({kafka.group_id})")
    state = ReplayState.load(state_path) if state_path is not None else None
    group = progress_group or f"{kafka.group_id}.replay.{uuid.uuid4().hex[:8]}"
    reader = RangeReader(range_consumer_config(kafka, group), topic)
    in_kafka = GroupProgress(reader, group) if progress_group is not None else None
    saved_in = f"consumer group {progress_group}" if in_kafka is not None else str(state_path)
    summary = Summary()
    feed, processor = start_run(stack, topic, summary, args, out, destinations=dests, subscriptions=subs)
    progress: Progress | None = None
    try:
        consumer = await reader.open()
        if in_kafka is not None:
            state = await in_kafka.load(topic)
        if state is not None:
            if state.topic != topic or (args.start, args.end) not in ((state.start, state.end), (None, None)):
                where = "another state file" if in_kafka is None else "another --progress-group"
                raise StreamprocError(
                    f"{saved_in} belongs to a replay of {state.topic} --from {state.start} --to"
                    f" {state.end}; use {where} for a different range"
                )
            print(f"resuming from {saved_in}: {state.total_left()} events left", file=err)
        else:
            start = parse_position(args.start, edge="beginning")
            end = parse_position(args.end, edge="end")
            ranges = await reader.call(resolve_ranges, consumer, topic, start, end)
            state = ReplayState(
                state_path, topic, args.start, args.end, ranges, {p: s for p, (s, _e) in ranges.items()}
            )
            # Saved before any delivery, so a rerun replays the same ranges even when --to was "now".
            if in_kafka is not None:
                await in_kafka.save(state)
            else:
                state.save()
        progress = Progress(state.total_left(), stream=err)
        await run_replay(
            reader,
            state,
            feed,
            processor.process,
            shutdown_timeout=config.limits.shutdown_timeout,
            on_progress=progress.update,
            store=in_kafka.save if in_kafka is not None else None,
        )
    finally:
        await close_run(progress, reader, stack)
    out.flush()
    flush_suppressed(force=True)
    interrupted = feed.stop.is_set() and state.total_left() > 0
    print(summary.render(dry_run=args.dry_run), file=err)
    if interrupted:
        again = f"--progress-group {progress_group}" if in_kafka is not None else f"--state {state_path}"
        print(f"interrupted: {state.total_left()} events left; rerun with {again} to resume", file=err)
        return 130, summary
    if args.dry_run:
        print("dry run: nothing was sent", file=err)
    return 0, summary


def run(args: argparse.Namespace) -> int:
    code, _summary = asyncio.run(replay(args))
    return code
