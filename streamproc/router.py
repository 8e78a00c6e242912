"""Turns one event into its deliveries: gates pick the instances, triggers pick subscriptions, mappings
and actions build requests.

Before an instance's triggers, Segment's gates decide whether it may receive the event at all
(streamproc.gates: consent, the integrations object, destination filters). An instance whose
filters changed the event (drop or allow properties) is matched and mapped on its own copy.
`routed(event)` says, besides the deliveries, which instances the event did not reach and why;
`route(event)` gives the deliveries alone.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streamproc.config import Config, DestinationConfig, SubscriptionConfig
from streamproc.core import fast_paths
from streamproc.core.events import message_id as _message_id
from streamproc.core.events import ordering_key as _ordering_key
from streamproc.core.gates import consent_preferences
from streamproc.core.mapping import STACK_EXCEEDED, compile_validated
from streamproc.core.payload import UNDECIDED
from streamproc.destinations.base import BuildContext, Destination, Request, Skip, fast_constructor
from streamproc.errors import BuildFailed, DeliveryError, MappingError, MappingFailed
from streamproc.gates import NO_SUBSCRIPTION, Gate, Withheld

__all__ = ["BuildFailed", "Delivery", "MappingFailed", "Router", "Withheld"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one subscription makes of one event: requests to send, or why there are none."""

    delivery_id: str
    destination: str
    subscription: str
    action: str
    requests: list[Request]
    error: DeliveryError | None = None
    skipped: str | None = None
    ordering_key: str | None = None


_NO_REQUESTS: list[Request] = []


_delivery: Callable[..., Delivery] = fast_constructor(
    Delivery,
    ("delivery_id", "destination", "subscription", "action", "requests", "error", "skipped", "ordering_key"),
)


@dataclass(frozen=True, slots=True)
class _Route:
    """One enabled subscription, compiled: everything route() needs, with nothing left to look up."""

    index: int
    destination_id: str
    subscription: str
    action: str
    id_suffix: str
    matches: Callable[[Mapping[str, Any]], bool]
    resolve: Callable[[dict[str, Any]], Any]
    """The mapping of a dict event (RecursionError escapes: route() reports it as the mapping kit does)."""
    run: Callable[[Any, BuildContext], list[Request] | Skip]
    validated: Callable[[dict[str, Any]], Any] | None
    """Mapping and validation in one for a payload that needs no work (else UNDECIDED: `resolve`
    and `run` decide); None where the mapping or the action's fields do not allow it."""
    build: Callable[[Any, BuildContext], list[Request] | Skip]
    settings: Mapping[str, Any]
    endpoint: str


# Triggers that only compare top-level fields with string literals (most presets) are answered with a
# dictionary lookup instead of evaluating each trigger: `=` is true exactly when the field is a string
# equal to the literal (Trigger.literal_equalities reads such a trigger from its parsed form).
_TOP_FIELDS = ("type", "event", "name", "userId")
# The pairs the index is checked against the trigger with: a fixed number, so that a trigger of
# many thousand terms is still indexed in time linear in its length.
_PAIRS_CHECKED = 16


# Bounds the memory of remembered selections when a trigger indexes a high-cardinality field (userId).
_SELECTIONS_KEPT = 4096


def _by_index(route: _Route) -> int:
    return route.index


def _matches(route: _Route, event: Mapping[str, Any]) -> bool:
    try:
        return route.matches(event)
    except Exception:  # a trigger that cannot read this event does not select it
        return False


def _index_is_exact(pairs: list[tuple[str, str]], matches: Callable[[Mapping[str, Any]], bool]) -> bool:
    """Guard the shortcut with the trigger itself, on a sample of its pairs (first, last and evenly
    between), so it can never select differently."""
    step = max(1, len(pairs) // _PAIRS_CHECKED)
    sample = [*pairs[::step], pairs[-1]]
    try:
        for field, value in sample:
            if not matches({field: value}) or matches({field: value + "\x00"}):
                return False
        return not matches({}) and not matches({f: 1 for f, _ in pairs})
    except Exception:
        return False


class Router:
    """Compiled once from a Config; `route(event)` is the hot path and never raises for bad event content."""

    def __init__(
        self,
        config: Config,
        now: datetime | Callable[[], datetime] | None = None,
        *,
        map_and_validate_in_one: bool = True,
        random: Callable[[], float] | None = None,
    ) -> None:
        """`map_and_validate_in_one=False` maps and validates each payload one after the other
        (the same deliveries; without the generated function that does both for the usual payload),
        as under STREAMPROC_EXACT_ONLY=1 (core.fast_paths).
        `random` draws for sample filters without a path (default: random.random)."""
        from streamproc import fql, mapping
        from streamproc.destinations import registry
        from streamproc.destinations.runtime import CompiledAction

        self.config = config
        map_and_validate_in_one = map_and_validate_in_one and fast_paths.taken(fast_paths.MAP_AND_VALIDATE)
        indexed = fast_paths.taken(fast_paths.TRIGGER_INDEX)
        if now is None:
            self._now: Callable[[], datetime] = lambda: datetime.now(UTC)
        elif isinstance(now, datetime):
            frozen = now
            self._now = lambda: frozen
        else:
            self._now = now
        self._destinations: dict[str, tuple[Destination, DestinationConfig]] = {}
        self._random = random or _random.random
        self._gates: list[Gate] = []
        self._routes: list[_Route] = []
        self._subscriptions: dict[tuple[str, str], SubscriptionConfig] = {}
        triggers: dict[str, Any] = {}
        actions: dict[tuple[str, str], Any] = {}
        for dest_config in config.destinations:
            destination = registry.get(dest_config.type)
            self._destinations[dest_config.id] = (destination, dest_config)
            self._gates.append(Gate.of(destination, dest_config))
            for sub in dest_config.subscriptions:
                self._subscriptions[(dest_config.id, sub.name)] = sub
                if not sub.enabled:
                    continue
                trigger = triggers.get(sub.trigger)
                if trigger is None:
                    trigger = triggers[sub.trigger] = fql.parse(sub.trigger)
                key = (dest_config.type, sub.action)
                action = actions.get(key)
                if action is None:
                    action = actions[key] = CompiledAction(destination, sub.action)
                self._routes.append(
                    _Route(
                        index=len(self._routes),
                        destination_id=dest_config.id,
                        subscription=sub.name,
                        action=sub.action,
                        id_suffix=f":{dest_config.id}:{sub.name}",
                        matches=trigger.matches,
                        resolve=mapping.compile(dict(sub.mapping)).resolve_dict,
                        run=action.run,
                        validated=compile_validated(dict(sub.mapping), action.schema)
                        if map_and_validate_in_one
                        else None,
                        build=action.build,
                        settings=dest_config.settings,
                        endpoint=dest_config.endpoint,
                    )
                )
        # field -> literal -> routes; routes whose trigger is anything else are evaluated one by one.
        self._index: dict[str, dict[str, list[_Route]]] = {}
        self._evaluated: list[_Route] = []
        for route in self._routes:
            trigger = triggers[self._subscriptions[(route.destination_id, route.subscription)].trigger]
            pairs = trigger.literal_equalities()
            if indexed and pairs is not None and _index_is_exact(pairs, route.matches):
                for field, value in dict.fromkeys(pairs):
                    self._index.setdefault(field, {}).setdefault(value, []).append(route)
            else:
                self._evaluated.append(route)
        self._indexed_fields = tuple(f for f in _TOP_FIELDS if f in self._index)
        self._selections: dict[tuple[Any, ...], tuple[tuple[_Route, ...], Withheld]] = {}
        self._ids = tuple(self._destinations)
        self._routes_of: dict[str, list[_Route]] = {d: [] for d in self._ids}
        for route in self._routes:
            self._routes_of[route.destination_id].append(route)
        # Every event is looked at only for instances with consent categories or filters; the
        # integrations object only when an event carries one (the usual event: one dict lookup).
        self._screened = any(g.screens for g in self._gates)
        self._reads_integrations = any(g.names is not None for g in self._gates)
        self._reads_consent = any(g.categories for g in self._gates)

    @property
    def destinations(self) -> Mapping[str, tuple[Destination, DestinationConfig]]:
        """Every configured destination instance by id."""
        return self._destinations

    def destination(self, destination_id: str) -> tuple[Destination, DestinationConfig]:
        """The definition and configuration of one destination instance; KeyError if there is none."""
        return self._destinations[destination_id]

    def subscription(self, destination_id: str, name: str) -> SubscriptionConfig:
        return self._subscriptions[(destination_id, name)]

    def matching(self, event: Mapping[str, Any]) -> tuple[_Route, ...]:
        """The enabled subscriptions whose trigger matches, in configuration order (gates aside)."""
        return self._matched(event)[0]

    def _matched(self, event: Mapping[str, Any]) -> tuple[tuple[_Route, ...], Withheld]:
        """The matching routes, and the instances none of whose triggers matches."""
        key = tuple(map(event.get, self._indexed_fields))
        try:
            selected = self._selections.get(key)
        except TypeError:  # an object or array value, which equals no literal
            key = tuple([v if type(v) is str else None for v in key])
            selected = self._selections.get(key)
        if selected is None:
            selected = self._select(key)
        if not self._evaluated:
            return selected
        extra = [route for route in self._evaluated if _matches(route, event)]
        if not extra:
            return selected
        routes = tuple(sorted((*selected[0], *extra), key=_by_index))
        return routes, self._unmatched(self._ids, routes)

    def _select(self, key: tuple[Any, ...]) -> tuple[tuple[_Route, ...], Withheld]:
        """Indexed routes for one combination of top-level values, remembered: events repeat their
        type and event name far more often than anything else. Only a string value can select."""
        found: dict[int, _Route] = {}
        for field, value in zip(self._indexed_fields, key, strict=True):
            if type(value) is str:
                for route in self._index[field].get(value, ()):
                    found[route.index] = route
        routes = tuple(sorted(found.values(), key=_by_index))
        selected = (routes, self._unmatched(self._ids, routes))
        if len(self._selections) < _SELECTIONS_KEPT:
            self._selections[key] = selected
        return selected

    @staticmethod
    def _unmatched(ids: Collection[str], routes: Collection[_Route]) -> Withheld:
        hit = {r.destination_id for r in routes}
        return tuple((d, NO_SUBSCRIPTION) for d in ids if d not in hit)

    def route(
        self,
        event: Mapping[str, Any],
        *,
        destinations: Collection[str] | None = None,
        subscriptions: Collection[tuple[str, str]] | None = None,
    ) -> list[Delivery]:
        """Deliveries for every matching subscription of the instances the event may reach
        (optionally only some destinations/subscriptions)."""
        return self.routed(event, destinations=destinations, subscriptions=subscriptions)[0]

    def routed(
        self,
        event: Mapping[str, Any],
        *,
        destinations: Collection[str] | None = None,
        subscriptions: Collection[tuple[str, str]] | None = None,
        redelivery: bool = False,
    ) -> tuple[list[Delivery], Withheld]:
        """The deliveries, and each instance (of those asked for) the event does not reach with the
        reason: a gate's ("consent", "integrations", "filter_drop", "filter_sample") or
        "no_subscription" (it passed the gates but none of its triggers matches). A `redelivery`
        (retry, redrive) keeps what a sample filter without a path would draw for: the draw was
        made when the event was first routed."""
        if type(event) is not dict:
            event = dict(event)
        integrations = event.get("integrations") if self._reads_integrations else None
        scoped = destinations is not None or subscriptions is not None
        if self._screened or (integrations and integrations.__class__ is dict):
            return self._gated(event, integrations, destinations, subscriptions, redelivery)
        routes, unmatched = self._matched(event)
        if scoped:
            routes = self._in_scope(routes, destinations, subscriptions)
            unmatched = self._unmatched(self._scope(destinations, subscriptions), routes)
        if not routes:
            return [], unmatched
        return self._deliveries(event, routes, None), unmatched

    def _scope(
        self, destinations: Collection[str] | None, subscriptions: Collection[tuple[str, str]] | None
    ) -> tuple[str, ...]:
        """The instances asked for, in configuration order."""
        ids = self._ids
        if destinations is not None:
            ids = tuple(d for d in ids if d in destinations)
        if subscriptions is not None:
            named = {d for d, _ in subscriptions}
            ids = tuple(d for d in ids if d in named)
        return ids

    @staticmethod
    def _in_scope(
        routes: Collection[_Route],
        destinations: Collection[str] | None,
        subscriptions: Collection[tuple[str, str]] | None,
    ) -> tuple[_Route, ...]:
        return tuple(
            r
            for r in routes
            if (destinations is None or r.destination_id in destinations)
            and (subscriptions is None or (r.destination_id, r.subscription) in subscriptions)
        )

    def _gated(
        self,
        event: dict[str, Any],
        integrations: Any,
        destinations: Collection[str] | None,
        subscriptions: Collection[tuple[str, str]] | None,
        redelivery: bool,
    ) -> tuple[list[Delivery], Withheld]:
        """Routing through each instance's gates (`routed`, for events some gate must look at)."""
        scope = self._scope(destinations, subscriptions)
        integrations = integrations if integrations.__class__ is dict else None
        preferences = consent_preferences(event) if self._reads_consent else None
        withheld: list[tuple[str, str]] = []
        passed: set[str] = set()
        views: dict[str, Any] = {}  # instance -> its own copy, where a filter changed the event
        gates = (
            self._gates
            if len(scope) == len(self._ids)
            else [g for g in self._gates if g.destination in scope]
        )
        for gate in gates:
            view, reason = gate.check(event, integrations, preferences, self._random, draw=not redelivery)
            if reason is not None:
                withheld.append((gate.destination, reason))
                continue
            passed.add(gate.destination)
            if view is not event:
                views[gate.destination] = view
        routes = [
            r for r in self._matched(event)[0] if r.destination_id in passed and r.destination_id not in views
        ]
        for dest, view in views.items():
            routes.extend(r for r in self._routes_of[dest] if _matches(r, view))
        selected = self._in_scope(sorted(routes, key=_by_index), None, subscriptions)
        withheld.extend(self._unmatched([g.destination for g in gates if g.destination in passed], selected))
        if not selected:
            return [], tuple(withheld)
        return self._deliveries(event, selected, views), tuple(withheld)

    def _deliveries(
        self, event: dict[str, Any], routes: tuple[_Route, ...], views: Mapping[str, Any] | None
    ) -> list[Delivery]:
        """Map and build each route's delivery; `views` holds the instances' own copies of the event."""
        mid = event.get("messageId")
        if type(mid) is not str:
            mid = _message_id(event) or ""
        key = event.get("userId")
        if type(key) is not str or not key:
            key = _ordering_key(event)
        now = self._now()
        deliveries: list[Delivery] = []
        # Routes come in configuration order, so those of one destination are adjacent and share
        # one context.
        seen = event  # the event as the route's instance receives it
        ctx_destination = None
        ctx: BuildContext | None = None
        for route in routes:
            dest_id = route.destination_id
            if dest_id != ctx_destination or ctx is None:
                ctx_destination = dest_id
                if views:
                    seen = views.get(dest_id, event)
                ctx = BuildContext(route.settings, route.endpoint, seen, now)
            requests: list[Request] = _NO_REQUESTS
            error: DeliveryError | None = None
            skipped: str | None = None
            validated: Any = UNDECIDED
            try:
                if route.validated is not None:
                    validated = route.validated(seen)
                if validated is UNDECIDED:
                    payload = route.resolve(seen)
            except MappingError as exc:
                error = MappingFailed(str(exc))
            except RecursionError:
                error = MappingFailed(STACK_EXCEEDED)
            except Exception as exc:
                error = MappingFailed(f"{type(exc).__name__}: {exc}")
            else:
                try:
                    if validated is UNDECIDED:
                        result = route.run(payload, ctx)
                    else:
                        result = route.build(validated, ctx)
                except DeliveryError as exc:
                    error = exc
                except Exception as exc:
                    error = BuildFailed(f"{type(exc).__name__}: {exc}")
                else:
                    if type(result) is list:
                        requests = result
                    elif isinstance(result, Skip):
                        skipped = result.reason
                    else:
                        requests = list(result)
            if requests is _NO_REQUESTS:
                requests = []
            deliveries.append(
                _delivery(
                    mid + route.id_suffix,
                    dest_id,
                    route.subscription,
                    route.action,
                    requests,
                    error,
                    skipped,
                    key,
                )
            )
        return deliveries
