"""Routing: which subscriptions an event selects and what each delivery carries (requests, error, skip)."""

from __future__ import annotations

import copy
import functools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_config import register_fake

from streamproc.config import parse_config
from streamproc.core.js import parse_iso_time
from streamproc.errors import DeliveryError, MappingError, PayloadValidationError
from streamproc.mapping import compile as compile_mapping
from streamproc.router import Router


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    return register_fake(monkeypatch)


def make(destinations: list[dict[str, Any]], **kw: Any) -> Router:
    return Router(parse_config({"destinations": destinations}, "t.yaml", {}), **kw)


def dest(id: str = "f1", **extra: Any) -> dict[str, Any]:
    return {"id": id, "type": "fake", "settings": {"key": "k"}, **extra}


def sub(name: str, trigger: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "trigger": trigger, "action": "send", **extra}


def body(delivery: Any) -> dict[str, Any]:
    (request,) = delivery.requests
    return orjson.loads(request.body)


def test_a_matching_event_becomes_one_delivery(fake: Any) -> None:
    r = make([dest(subscriptions=[sub("orders", 'event = "Order Completed"')])])
    event = {
        "type": "track",
        "event": "Order Completed",
        "messageId": "m1",
        "userId": "u1",
        "anonymousId": "a",
    }
    (d,) = r.route(event)
    assert d.delivery_id == "m1:f1:orders"
    assert (d.destination, d.subscription, d.action) == ("f1", "orders", "send")
    assert d.error is None and d.skipped is None
    assert d.ordering_key == "u1"
    (request,) = d.requests
    assert request.url == "https://fake.example/send?key=k"
    assert body(d) == {"name": "Order Completed", "user": "u1"}
    assert r.route({"type": "track", "event": "Order Started", "messageId": "m2"}) == []


def test_every_matching_subscription_of_every_destination_in_config_order(fake: Any) -> None:
    r = make(
        [
            dest("a", presets=True, subscriptions=[sub("all tracks", 'type = "track"')]),
            dest(
                "b",
                subscriptions=[sub("big", "properties.revenue > 100"), sub("signup", 'event = "Signed Up"')],
            ),
        ]
    )
    event = {"type": "track", "event": "Signed Up", "messageId": "m", "properties": {"revenue": 500}}
    assert [(d.destination, d.subscription) for d in r.route(event)] == [
        ("a", "Signed Up"),
        ("a", "all tracks"),
        ("b", "big"),
        ("b", "signup"),
    ]


def test_disabled_subscriptions_are_not_routed(fake: Any) -> None:
    r = make([dest(subscriptions=[sub("s", 'type = "track"', enabled=False)])])
    assert r.route({"type": "track"}) == []
    assert r.subscription("f1", "s").enabled is False


def test_equality_triggers_need_a_string_value(fake: Any) -> None:
    r = make([dest(subscriptions=[sub("s", 'event = "5" or type = "page"')])])
    assert r.route({"event": 5}) == []
    assert r.route({"event": ["5"]}) == []
    assert len(r.route({"event": "5"})) == 1
    assert len(r.route({"event": "5", "type": "page"})) == 1  # reached twice, delivered once
    assert r.route({"type": "Page"}) == []


def test_filters_by_destination_and_subscription(fake: Any) -> None:
    r = make([dest("a", presets=True), dest("b", presets=True)])
    event = {"type": "page", "messageId": "m"}
    assert [d.destination for d in r.route(event)] == ["a", "b"]
    assert [d.destination for d in r.route(event, destinations={"b"})] == ["b"]
    assert [d.delivery_id for d in r.route(event, subscriptions={("a", "Pages")})] == ["m:a:Pages"]
    assert r.route(event, subscriptions={("a", "Signed Up")}) == []


def test_validation_failure_is_a_delivery_error_not_an_exception(fake: Any) -> None:
    r = make([dest(subscriptions=[sub("s", 'type = "track"')])])
    (d,) = r.route({"type": "track", "messageId": "m"})  # no event name: required field missing
    assert d.requests == []
    assert isinstance(d.error, PayloadValidationError)
    assert d.error.status == 400 and not d.error.retryable


def test_mapping_failure_is_a_delivery_error(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamproc.errors import MappingError

    r = make([dest(subscriptions=[sub("s", 'type = "track"')])])

    def broken(event: Any) -> Any:
        raise MappingError("@path: expected string, got number")

    route = r._routes[0]
    object.__setattr__(route, "resolve", broken)
    object.__setattr__(route, "validated", broken)
    (d,) = r.route({"type": "track", "event": "x"})
    assert isinstance(d.error, DeliveryError)
    assert d.error.message == "@path: expected string, got number" and not d.error.retryable


def test_an_event_too_deep_to_map_fails_as_in_the_mapping_kit(fake: Any) -> None:
    mapping = {"name": {"@path": "$.properties"}}
    r = make([dest(subscriptions=[sub("s", 'type = "track"', mapping=mapping)])])
    deep: dict[str, Any] = {}
    for _ in range(5000):
        deep = {"a": deep}
    event = {"type": "track", "event": "x", "properties": deep}
    with pytest.raises(MappingError) as caught:
        compile_mapping(mapping).resolve(event)
    (d,) = r.route(event)
    assert isinstance(d.error, DeliveryError) and d.error.message == str(caught.value)


def test_an_unexpected_build_failure_is_a_delivery_error(fake: Any) -> None:
    r = make([dest(subscriptions=[sub("s", 'type = "track"')])])

    def broken(payload: Any, ctx: Any) -> Any:
        raise KeyError("oops")

    object.__setattr__(r._routes[0], "run", broken)
    object.__setattr__(r._routes[0], "build", broken)
    (d,) = r.route({"type": "track", "event": "x"})
    assert d.error is not None and "KeyError" in d.error.message and not d.error.retryable


def test_skip_becomes_a_skipped_delivery(fake: Any) -> None:
    r = make([dest(subscriptions=[sub("s", 'type = "track"', mapping={"skip": True})])])
    (d,) = r.route({"type": "track", "event": "x", "messageId": "m"})
    assert d.skipped == "asked to skip" and d.requests == [] and d.error is None


def test_frozen_clock_reaches_the_action(fake: Any) -> None:
    seen: list[datetime] = []
    when = datetime(2026, 1, 1, tzinfo=UTC)
    r = make([dest(subscriptions=[sub("s", 'type = "track"')])], now=when)

    def spy(original: Any) -> Any:
        def call(payload: Any, ctx: Any) -> Any:
            seen.append(ctx.now)
            return original(payload, ctx)

        return call

    # The action is reached through `build` (payload validated with the mapping) or `run`.
    for name in ("run", "build"):
        object.__setattr__(r._routes[0], name, spy(getattr(r._routes[0], name)))
    r.route({"type": "track", "event": "x"})
    assert seen == [when]


def test_event_without_message_id_or_user(fake: Any) -> None:
    r = make([dest(subscriptions=[sub("s", 'type = "track"')])])
    (d,) = r.route({"type": "track", "event": "x"})
    assert d.delivery_id == ":f1:s" and d.ordering_key is None


def test_destination_lookup(fake: Any) -> None:
    r = make([dest("a")])
    definition, config = r.destination("a")
    assert definition is fake and config.id == "a"
    with pytest.raises(KeyError):
        r.destination("nope")


@pytest.mark.parametrize(
    "trigger",
    [
        'event = "A"',
        'event = "A" or event = "B"',
        ' type = "page"  or event = "A" ',
        'userId = "u1"',
        'name = "Home" or type = "screen"',
    ],
)
def test_indexed_triggers_select_like_the_trigger_itself(fake: Any, trigger: str) -> None:
    from streamproc import fql

    r = make([dest(subscriptions=[sub("s", trigger)])])
    assert r._evaluated == []  # answered by the index
    parsed = fql.parse(trigger)
    for event in (
        {"event": "A"},
        {"event": "B"},
        {"event": "a"},
        {"type": "page"},
        {"type": "screen", "name": "x"},
        {"userId": "u1"},
        {"name": "Home"},
        {"event": None},
        {},
    ):
        assert bool(r.route(event)) == parsed.matches(event), event


def test_other_triggers_are_evaluated(fake: Any) -> None:
    r = make([dest(subscriptions=[sub("s", 'event = "A" and properties.n > 1')])])
    assert len(r._evaluated) == 1
    assert len(r.route({"event": "A", "properties": {"n": 2}})) == 1
    assert r.route({"event": "A", "properties": {"n": 1}}) == []


# --- Segment's own answers, through configuration and routing ------------------------------------


def _differential_rows() -> list[Any]:
    from spec_data import differential

    return [pytest.param(row, id=row["input"]["id"]) for row in differential("action")]


@pytest.mark.parametrize("in_one", [True, False], ids=["map-and-validate-in-one", "apart"])
@pytest.mark.parametrize("row", _differential_rows())
def test_segment_differential_cases_through_the_router(row: dict[str, Any], in_one: bool) -> None:
    """A preset (or an action with its mapping merged over the defaults) selects and builds what
    Segment's published packages did for the same event, settings and clock."""
    from streamproc.errors import ConfigError

    case, expected = row["input"], row["expected"]
    if "preset" in case:
        subscription: dict[str, Any] = {"preset": case["preset"]}
    else:
        subscription = {
            "name": "s",
            "trigger": 'type != "-"',
            "action": case["action"],
            "mapping": case["mapping"],
            "defaults": case["merge_defaults"],
        }
    destination = {
        "id": "d",
        "type": case["destination"],
        "settings": case["settings"],
        "presets": False,
        "subscriptions": [subscription],
    }
    now = parse_iso_time(case["now"])
    try:
        config = parse_config({"destinations": [destination]}, "t.yaml", {})
        router = Router(config, now=now, map_and_validate_in_one=in_one)
    except ConfigError as exc:
        # Segment rejects bad settings per event; streamproc refuses them at start-up.
        assert "error" in expected, exc
        return
    deliveries = router.route(case["event"])
    if expected.get("subscribed") is False:
        assert deliveries == []
        return
    (delivery,) = deliveries
    if "error" in expected:
        assert delivery.error is not None, delivery.requests
        assert delivery.error.message == expected["error"]["message"]
        assert delivery.error.status == expected["error"]["status"]
        return
    assert delivery.error is None, delivery.error
    got = [
        {"method": r.method, "url": r.url, "headers": dict(r.headers), "body": r.to_json()["body"]}
        for r in delivery.requests
    ]
    want = [{k: r[k] for k in ("method", "url", "headers", "body")} for r in expected["requests"]]
    assert got == want


def test_many_distinct_values_of_an_indexed_field(fake: Any) -> None:
    r = make([dest(subscriptions=[sub("s", 'userId = "u1"'), sub("t", 'type = "track"')])])
    for i in range(5000):
        assert [d.subscription for d in r.route({"type": "track", "userId": f"x{i}"})] == ["t"]
    assert [d.subscription for d in r.route({"type": "track", "userId": "u1"})] == ["s", "t"]
    assert [d.subscription for d in r.route({"type": "page", "userId": "u1"})] == ["s"]


# --- Mapping and validation in one: the same deliveries as one after the other ------------------


def _example_events() -> list[dict[str, Any]]:
    """The example events that are JSON objects (the file also holds a few broken lines)."""
    events = []
    for line in (Path(__file__).resolve().parents[1] / "examples" / "events.jsonl").read_bytes().splitlines():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


_EXAMPLE_EVENTS = _example_events()
_PRESETS = {
    "destinations": [
        {"id": "sa", "type": "stackadapt", "settings": {"pixelId": "px"}, "presets": True},
        {
            "id": "tt",
            "type": "tiktok-offline-conversions",
            "settings": {"accessToken": "t", "eventSetID": "1"},
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
_PATHS = [
    ("userId",),
    ("anonymousId",),
    ("timestamp",),
    ("context", "ip"),
    ("context", "page"),
    ("context", "page", "url"),
    ("context", "userAgent"),
    ("context", "traits", "email"),
    ("traits",),
    ("traits", "email"),
    ("properties", "email"),
    ("properties", "phone"),
    ("properties", "products"),
    ("properties", "price"),
    ("properties", "currency"),
    ("properties", "value"),
    ("properties", "order_id"),
]
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "x", "a@b.co", "USD", "product", "2026-03-02T09:01:07.000Z"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["price", "name", "id", "quantity", "0"]), inner, max_size=3)
    ),
    max_leaves=6,
)


@functools.cache
def _preset_routers() -> tuple[Router, Router]:
    """Every preset of the three partners, routed with mapping and validation in one and apart."""
    config = parse_config(_PRESETS, "t.yaml", {})
    when = datetime(2026, 1, 1, tzinfo=UTC)
    together = Router(config, now=when)
    apart = Router(config, now=when, map_and_validate_in_one=False)
    assert all(route.validated is not None for route in together._routes)
    return together, apart


def _outcome(router: Router, event: dict[str, Any]) -> list[Any]:
    return [
        (d.delivery_id, d.requests, type(d.error), d.error and d.error.message, d.skipped)
        for d in router.route(event)
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    template=st.sampled_from(_EXAMPLE_EVENTS),
    edits=st.lists(st.tuples(st.sampled_from(_PATHS), _VALUES), max_size=4),
)
def test_mapping_and_validation_in_one_give_the_same_deliveries(
    template: dict[str, Any], edits: list[tuple[tuple[str, ...], Any]]
) -> None:
    together, apart = _preset_routers()
    event = copy.deepcopy(template)
    for path, value in edits:
        holder = event
        for key in path[:-1]:
            if not isinstance(holder.get(key), dict):
                holder[key] = {}
            holder = holder[key]
        holder[path[-1]] = value
    assert _outcome(together, event) == _outcome(apart, event)


# --- Memory held by deliveries in flight -----------------------------------------------------------


def test_a_delivery_in_flight_holds_about_the_size_of_its_request() -> None:
    """A backlog keeps thousands of deliveries in memory until they are sent: each must cost about
    its request's URL and body, not the 4 KiB buffer orjson writes a body into."""
    import tracemalloc

    together, _ = _preset_routers()
    events = [copy.deepcopy(e) for e in _EXAMPLE_EVENTS] * 10
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = [together.route(e) for e in events]
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    requests = [r for deliveries in held for d in deliveries for r in d.requests]
    with_body = [r for r in requests if r.body]
    assert len(with_body) > 100
    payload = sum(len(r.url) + len(r.body or b"") for r in requests)
    # Besides URL and body: the delivery, its id, the request, its headers (~1 KiB a request).
    assert grown < payload + 1200 * len(requests), (grown, payload, len(requests))
