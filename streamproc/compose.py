"""The composition root: builds what a run delivers with (dispatcher, bulkheads, batchers) from a
Config, the same way for the worker, replay and redrive."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from streamproc.batching import Batcher, batchers_for
from streamproc.client import DEFAULT_CLIENT
from streamproc.destinations import registry
from streamproc.destinations.base import ClassifyFn
from streamproc.dispatch import Bulkhead, BulkheadPolicy, Dispatcher
from streamproc.handoff import Sender
from streamproc.metrics import Metrics
from streamproc.senders import senders_for

if TYPE_CHECKING:
    from streamproc.config import Config
    from streamproc.parking import Parking
    from streamproc.router import Router

__all__ = ["build_dispatcher", "build_senders", "dispatcher_of"]


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
