"""The composition root: builds what a run delivers with from a Config (dispatcher, bulkheads,
batchers, senders, the dead-letter producer, the event processor), the same way for the worker,
replay and redrive."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamproc import masking
from streamproc.batching import Batcher, batchers_for
from streamproc.client import DEFAULT_CLIENT
from streamproc.config import Config, KafkaConfig, load_config
from streamproc.decoding import make_decoder
from streamproc.destinations import registry
from streamproc.destinations.base import ClassifyFn
from streamproc.dispatch import Bulkhead, BulkheadPolicy, Dispatcher
from streamproc.errors import StreamprocError
from streamproc.handoff import Sender
from streamproc.kafka.producer import AckedProducer, acked_producer
from streamproc.kafka.ranges import RangeReader
from streamproc.logging import configure_logging, register_secrets
from streamproc.masking import Masker, config_secrets
from streamproc.metrics import Metrics
from streamproc.output import json_line
from streamproc.pipeline import EventProcessor, Undecodable, kafka_section
from streamproc.progress import Progress
from streamproc.router import Delivery, Router
from streamproc.runs.feed import RangeFeed
from streamproc.senders import Marks, marking, senders_for
from streamproc.summary import Summary

if TYPE_CHECKING:
    from streamproc.parking import Parking

__all__ = [
    "DeliveryStack",
    "build_dispatcher",
    "build_senders",
    "build_stack",
    "close_run",
    "dispatcher_of",
    "install_stop",
    "load",
    "route_filters",
    "start_run",
]


def build_dispatcher(config: Config, router: Router, metrics: Metrics) -> Dispatcher:
    """The dispatcher of every destination the router knows, each with its own HTTP client of the
    configuration's `http.client` kind."""
    return dispatcher_of(
        ((cfg, dest.classify) for dest, cfg in router.destinations.values()),
        metrics,
        client=config.http.client,
    )


def build_senders(dispatcher: Dispatcher, parking: Parking | None = None) -> dict[str, Sender]:
    """The sender of each destination: parking for one that parks (the worker), else admitted, or
    direct for one whose deliveries have a batch."""
    senders = senders_for(dispatcher, dispatcher.bulkheads)
    if parking is not None:
        parks = parking.sender()
        senders.update((dest, parks) for dest in senders if parking.parks(dest))
    return senders


def dispatcher_of(
    destinations: Iterable[tuple[Any, ClassifyFn]], metrics: Metrics, *, client: str = DEFAULT_CLIENT
) -> Dispatcher:
    """From (`DestinationConfig`, the destination type's `classify`) pairs: a bulkhead each, and the
    batchers of the subscriptions that turn batching on."""
    pairs = list(destinations)
    bulkheads = [
        Bulkhead(BulkheadPolicy.from_config(cfg), classify=classify, metrics=metrics, client=client)
        for cfg, classify in pairs
    ]
    return Dispatcher(bulkheads, _batchers_of(pairs, bulkheads, metrics))


def _batchers_of(
    pairs: Sequence[tuple[Any, ClassifyFn]], bulkheads: Sequence[Bulkhead], metrics: Metrics
) -> dict[tuple[str, str], Batcher]:
    """The batchers of every destination whose configuration turns batching on for a subscription."""
    out: dict[tuple[str, str], Batcher] = {}
    for (cfg, _), bulkhead in zip(pairs, bulkheads, strict=True):
        if not any(getattr(sub, "batch", None) is not None for sub in cfg.subscriptions):
            continue
        actions = registry.get(cfg.type).actions
        specs = {key: a.batching for key, a in actions.items() if a.batching is not None}
        out.update(batchers_for(cfg, specs, bulkhead, metrics))
    return out


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
    marks: Marks | None = None,
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
