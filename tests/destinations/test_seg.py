"""Seg: the requests each Segment call becomes, the alias skip, settings and response classification."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from streamproc.config import parse_config
from streamproc.destinations import registry, seg
from streamproc.destinations.base import BuildContext, Verdict
from streamproc.errors import ConfigError
from streamproc.router import Delivery, Router

GUID = "abc8fb18-7559-4324-9921-a4b5015b4a1c"
BASE = f"https://tracker.segapp.com/segment/{GUID}"
HEADERS = {"content-type": "application/json", "accept": "application/json"}


def make_router(monkeypatch: pytest.MonkeyPatch, **dest: Any) -> Router:
    data = {"destinations": [{"id": "seg", "type": "seg", "settings": {"apiKey": GUID}, **dest}]}
    return Router(parse_config(data, "test.yaml", {}))


@pytest.fixture
def router(monkeypatch: pytest.MonkeyPatch) -> Router:
    return make_router(monkeypatch)


def only(deliveries: list[Delivery]) -> Delivery:
    assert len(deliveries) == 1, deliveries
    (d,) = deliveries
    assert d.error is None, d.error
    return d


def sent(router: Router, event: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(subscription, url, body) of the one request the event becomes."""
    d = only(router.route(event))
    assert d.skipped is None
    (request,) = d.requests
    assert request.method == "POST"
    assert dict(request.headers) == HEADERS
    assert request.body is not None
    return d.subscription, request.url, orjson.loads(request.body)


def test_registered_with_every_preset_on_by_default() -> None:
    dest = registry.get("seg")
    assert dest is seg.DESTINATION
    assert dest.presets_enabled_by_default
    assert [p.name for p in dest.presets] == [
        "Identify",
        "Range View",
        "Product View",
        "Added To Basket",
        "Order Placed",
        "Page",
        "Alias",
    ]


def test_identify_with_email_and_names(router: Router) -> None:
    traits = {
        "email": "ann@example.com",
        "firstName": "Ann",
        "last_name": "Lee",
        "address": {"country": "DK", "city": "Aarhus"},
        "title": "Dr",
        "gender": "female",
        "birthday": "1990-01-02",
        "plan": "pro",
    }
    event = {
        "type": "identify",
        "messageId": "m1",
        "timestamp": "2026-03-02T09:00:00.000Z",
        "userId": "u1",
        "anonymousId": "a1",
        "traits": traits,
    }
    assert sent(router, event) == (
        "Identify",
        f"{BASE}/identify",
        {
            "MessageId": "m1",
            "Timestamp": "2026-03-02T09:00:00.000Z",
            "Id": "u1",
            "Email": "ann@example.com",
            "FirstName": "Ann",
            "LastName": "Lee",
            "CountryCode": "DK",
            "Title": "Dr",
            "Gender": "female",
            "DateOfBirth": "1990-01-02",
            "Traits": traits,
        },
    )


def test_identify_without_email_is_still_sent(router: Router) -> None:
    event = {"type": "identify", "messageId": "m2", "anonymousId": "a9", "traits": {"plan": "free"}}
    _, url, body = sent(router, event)
    assert url == f"{BASE}/identify"
    assert body == {"MessageId": "m2", "Id": "a9", "Traits": {"plan": "free"}}


def test_order_completed_with_two_products(router: Router) -> None:
    products = [
        {
            "product_id": "p1",
            "sku": "S1",
            "name": "Shoe",
            "price": 89.9,
            "original_price": 99,
            "quantity": 1,
            "image_url": "https://img/1.jpg",
            "variant_name": "Blue 42",
            "category": "Shoes",
            "brands": ["Northpeak"],
        },
        {"id": "p2", "name": "Socks", "price": 12.5, "quantity": 3, "categories": ["Socks", "Sale"]},
    ]
    props = {
        "order_id": "o1",
        "total": 137.4,
        "revenue": 127.4,
        "shipping": 10,
        "tax": 25.48,
        "discount": 5,
        "coupon": "SPRING",
        "currency": "DKK",
        "repeat": True,
        "delivery_method": "GLS",
        "_p": 41.2,
        "email": "fallback@example.com",
        "products": products,
    }
    event = {
        "type": "track",
        "event": "Order Completed",
        "messageId": "m3",
        "timestamp": "2026-03-02T09:01:00Z",
        "userId": "u1",
        "properties": props,
        "context": {"traits": {"email": "ann@example.com"}},
    }
    sub, url, body = sent(router, event)
    assert (sub, url) == ("Order Placed", f"{BASE}/track")
    assert body == {
        "Event": "OrderPlaced",
        "MessageId": "m3",
        "Timestamp": "2026-03-02T09:01:00Z",
        "Id": "u1",
        "Email": "ann@example.com",
        "Properties": {
            "Id": "o1",
            "Revenue": 127.4,
            "Total": 137.4,
            "DeliveryRevenue": 10,
            "Tax": 25.48,
            "Discount": 5,
            "Coupon": "SPRING",
            "Currency": "DKK",
            "Repeat": True,
            "DeliveryMethod": "GLS",
            "_p": 41.2,
            "OrderLines": [
                {
                    "Id": "p1",
                    "Sku": "S1",
                    "Name": "Shoe",
                    "Price": 89.9,
                    "OriginalPrice": 99,
                    "Quantity": 1,
                    "ImageUrl": "https://img/1.jpg",
                    "VariantName": "Blue 42",
                    "Categories": ["Shoes"],
                    "Brands": ["Northpeak"],
                },
                {"Id": "p2", "Name": "Socks", "Price": 12.5, "Quantity": 3, "Categories": ["Socks", "Sale"]},
            ],
        },
    }


def test_completed_order_v1_name_and_revenue_from_total(router: Router) -> None:
    event = {
        "type": "track",
        "event": "Completed Order",
        "userId": "u1",
        "properties": {"orderId": "o2", "total": 50, "properties": None, "email": "p@example.com"},
    }
    _, _, body = sent(router, event)
    assert body["Email"] == "p@example.com"
    assert body["Properties"] == {"Id": "o2", "Revenue": 50, "Total": 50, "OrderLines": []}


def test_product_added_v1_and_v2_names_give_the_same_body(router: Router) -> None:
    props = {"product_id": "p1", "name": "Shoe", "price": 89.9, "quantity": 2, "category": "Shoes"}
    bodies = []
    for name in ("Product Added", "Added Product"):
        event = {"type": "track", "event": name, "messageId": "m4", "anonymousId": "a1", "properties": props}
        sub, url, body = sent(router, event)
        assert (sub, url) == ("Added To Basket", f"{BASE}/track")
        bodies.append(body)
    assert bodies[0] == bodies[1]
    assert bodies[0] == {
        "Event": "AddedToBasket",
        "MessageId": "m4",
        "Id": "a1",
        "Properties": {
            "OrderLines": [
                {
                    "Id": "p1",
                    "Name": "Shoe",
                    "Price": 89.9,
                    "Quantity": 2,
                    "Categories": ["Shoes"],
                    "Added": True,
                }
            ]
        },
    }


def test_product_viewed(router: Router) -> None:
    event = {
        "type": "track",
        "event": "Viewed Product",
        "userId": "u1",
        "properties": {"sku": "S", "price": 3},
    }
    sub, _, body = sent(router, event)
    assert sub == "Product View"
    assert body == {"Event": "ProductView", "Id": "u1", "Properties": {"Sku": "S", "Price": 3}}


def test_viewed_product_category_with_arrays_and_with_one_category(router: Router) -> None:
    event = {
        "type": "track",
        "event": "Viewed Product Category",
        "userId": "u1",
        "properties": {"categories": ["Shoes", "Trail"], "brands": ["A", "B"]},
    }
    sub, url, body = sent(router, event)
    assert (sub, url) == ("Range View", f"{BASE}/track")
    assert body["Event"] == "RangeView"
    assert body["Properties"] == {"Categories": ["Shoes", "Trail"], "Brands": ["A", "B"]}
    event["properties"] = {"category": "Shoes"}
    assert sent(router, event)[2]["Properties"] == {"Categories": ["Shoes"]}
    event["event"] = "Product List Viewed"
    assert sent(router, event)[2]["Properties"] == {"Categories": ["Shoes"]}


@pytest.mark.parametrize(
    "event",
    [
        {"type": "track", "event": "Video Played", "userId": "u1", "properties": {"category": "x"}},
        {"type": "track", "event": "product added", "userId": "u1"},
        {"type": "screen", "name": "Home", "userId": "u1"},
        {"type": "group", "groupId": "g1", "userId": "u1", "traits": {"email": "a@example.com"}},
    ],
)
def test_other_calls_are_not_sent(router: Router, event: dict[str, Any]) -> None:
    assert router.route(event) == []


def test_page_from_context_page(router: Router) -> None:
    event = {
        "type": "page",
        "messageId": "m5",
        "timestamp": "2026-03-02T09:02:00Z",
        "anonymousId": "a1",
        "name": "Shoes",
        "properties": {"url": "https://ignored", "title": "ignored"},
        "context": {
            "page": {"url": "https://shop/shoes", "title": "Shoes | Shop", "referrer": "https://google/"},
            "traits": {"email": "ann@example.com"},
        },
    }
    assert sent(router, event) == (
        "Page",
        f"{BASE}/page",
        {
            "MessageId": "m5",
            "Timestamp": "2026-03-02T09:02:00Z",
            "Id": "a1",
            "Url": "https://shop/shoes",
            "Title": "Shoes | Shop",
            "Referrer": "https://google/",
            "Email": "ann@example.com",
        },
    )


def test_page_falls_back_to_properties_then_name(router: Router) -> None:
    event = {"type": "page", "userId": "u1", "name": "Home", "properties": {"url": "https://shop/"}}
    assert sent(router, event)[2] == {"Id": "u1", "Url": "https://shop/", "Title": "Home"}


def test_alias_between_two_emails_is_sent(router: Router) -> None:
    event = {
        "type": "alias",
        "messageId": "m6",
        "timestamp": "2026-03-02T09:03:00Z",
        "previousId": "old@example.com",
        "userId": "new@example.com",
    }
    assert sent(router, event) == (
        "Alias",
        f"{BASE}/alias",
        {
            "MessageId": "m6",
            "Timestamp": "2026-03-02T09:03:00Z",
            "Id": "new@example.com",
            "PreviousEmail": "old@example.com",
            "Email": "new@example.com",
        },
    )


@pytest.mark.parametrize(
    ("previous", "new"),
    [("anon-123", "new@example.com"), ("old@example.com", "user-9"), ("a@b", "c@d.com"), (None, "c@d.com")],
)
def test_alias_without_two_emails_is_skipped(router: Router, previous: Any, new: Any) -> None:
    event = {"type": "alias", "messageId": "m7", "previousId": previous, "userId": new}
    (d,) = router.route(event)
    assert d.error is None and d.requests == []
    assert d.skipped is not None and "email" in d.skipped


def test_build_alias_returns_skip_directly() -> None:
    ctx = BuildContext({"apiKey": GUID}, seg.DEFAULT_ENDPOINT, {}, None)  # type: ignore[arg-type]
    result = seg.build_alias({"previousId": "x", "userId": "y@example.com"}, ctx)
    assert isinstance(result, seg.Skip)


def test_endpoint_override_and_website_id_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    r = make_router(
        monkeypatch, settings={"websiteId": f" {{{GUID.upper()}}} "}, endpoint="http://127.0.0.1:9/"
    )
    event = {"type": "page", "userId": "u1"}
    assert sent(r, event)[1] == f"http://127.0.0.1:9/segment/{GUID}/page"


def test_endpoint_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    r = make_router(monkeypatch, settings={"apiKey": GUID, "endpoint": "http://sim.local:8080"})
    assert sent(r, {"type": "page", "userId": "u1"})[1] == f"http://sim.local:8080/segment/{GUID}/page"


def test_presets_can_be_turned_off_or_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    r = make_router(monkeypatch, presets=["Page"])
    assert r.route({"type": "identify", "userId": "u1"}) == []
    assert len(r.route({"type": "page", "userId": "u1"})) == 1
    r = make_router(monkeypatch, presets=False)
    assert r.route({"type": "page", "userId": "u1"}) == []


def test_a_custom_track_subscription(monkeypatch: pytest.MonkeyPatch) -> None:
    sub = {"name": "Wishlist", "trigger": 'event = "Product Added to Wishlist"', "action": "track"}
    sub["mapping"] = {"segEvent": "ProductView"}
    r = make_router(monkeypatch, presets=False, subscriptions=[sub])
    event = {
        "type": "track",
        "event": "Product Added to Wishlist",
        "userId": "u1",
        "properties": {"sku": "S"},
    }
    assert sent(r, event)[2] == {"Event": "ProductView", "Id": "u1", "Properties": {"Sku": "S"}}


def test_a_track_subscription_without_a_seg_event_fails_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    sub = {"name": "Any", "trigger": 'type = "track"', "action": "track"}
    r = make_router(monkeypatch, presets=False, subscriptions=[sub])
    (d,) = r.route({"type": "track", "event": "X", "userId": "u1"})
    assert d.requests == [] and d.error is not None
    assert d.error.status == 400 and not d.error.retryable
    assert "segEvent" in d.error.message or "Seg Event" in d.error.message


@pytest.mark.parametrize(
    "key",
    [GUID, GUID.upper(), f"{{{GUID.upper()}}}", f"  {GUID}\n", f"{{ {GUID} }}"],
)
def test_website_id_forms_accepted(key: str) -> None:
    assert seg.normalize_settings({"apiKey": key})["apiKey"] == GUID
    assert seg.normalize_settings({"websiteId": key}) == {"apiKey": GUID}


@pytest.mark.parametrize(
    "settings",
    [
        {"apiKey": "not-a-guid"},
        {"apiKey": GUID[:-1]},
        {"apiKey": GUID.replace("-", "")},
        {"apiKey": "{" + GUID},
        {"apiKey": 12},
        {},
        {"apiKey": GUID, "websiteId": "11111111-2222-3333-4444-555555555555"},
        {"apiKey": GUID, "endpoint": "tracker.segapp.com"},
    ],
)
def test_bad_settings_rejected(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as info:
        seg.normalize_settings(settings)
    assert str(info.value).split(":")[0] in ("apiKey", "endpoint")


def test_not_a_guid_is_a_config_error_with_the_key_path(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as info:
        make_router(monkeypatch, settings={"apiKey": "not-a-guid"})
    (problem,) = info.value.problems
    assert problem.path == "destinations[0].settings.apiKey"
    assert "GUID" in problem.message


def test_braced_upper_case_guid_is_accepted_at_config_load(monkeypatch: pytest.MonkeyPatch) -> None:
    r = make_router(monkeypatch, settings={"apiKey": "{ABC8FB18-7559-4324-9921-A4B5015B4A1C}"})
    assert r.destination("seg")[1].settings["apiKey"] == GUID


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (202, Verdict.DELIVERED),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (599, Verdict.RETRY),
        (501, Verdict.FAIL),
        (400, Verdict.FAIL),
        (401, Verdict.FAIL),
        (404, Verdict.FAIL),
        (423, Verdict.FAIL),
    ],
)
def test_classify(status: int, verdict: Verdict) -> None:
    outcome = seg.classify(status, {}, b"")
    assert outcome.verdict is verdict and outcome.status == status


def test_classify_honours_retry_after() -> None:
    assert seg.classify(429, {"retry-after": "7"}, b"").retry_after == 7.0


def _serve(statuses: list[int]) -> tuple[Any, list[bytes]]:
    from aiohttp import web

    seen: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.Response(status=statuses[min(len(seen), len(statuses)) - 1], text="{}")

    app = web.Application()
    app.router.add_post("/segment/{website}/{operation}", handler)
    return app, seen


@pytest.mark.parametrize(
    ("statuses", "outcome", "calls"),
    [([503, 200], "delivered", 2), ([400], "dead_lettered", 1)],
)
async def test_retry_then_delivered_and_permanent_failure(
    monkeypatch: pytest.MonkeyPatch, statuses: list[int], outcome: str, calls: int
) -> None:
    from aiohttp import web

    from streamproc.dispatch import Bulkhead, BulkheadPolicy

    app, seen = _serve(statuses)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        r = make_router(monkeypatch, endpoint=f"http://127.0.0.1:{port}")
        (delivery,) = r.route({"type": "page", "messageId": "m8", "userId": "u1"})
        policy = BulkheadPolicy("seg", backoff_initial=0.01, backoff_max=0.02, max_attempts=3)
        bulkhead = Bulkhead(policy, classify=seg.DESTINATION.classify)
        try:
            result = await asyncio.wait_for(bulkhead.deliver(delivery), 10)
        finally:
            await bulkhead.close()
    finally:
        await runner.cleanup()
    assert result.outcome == outcome
    assert len(seen) == calls
    assert orjson.loads(seen[-1]) == {"MessageId": "m8", "Id": "u1"}
    if outcome == "dead_lettered":
        assert result.failure is not None and result.failure.status == 400
