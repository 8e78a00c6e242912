"""The demo's event stream: realistic Segment traffic of a web shop and an app, with some bad input."""

from __future__ import annotations

import itertools
import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

__all__ = ["POISON_KINDS", "EventGenerator"]

# The three kinds of bad input the demo mixes in; each must end in the dead-letter topic.
POISON_KINDS = ("not-json", "not-an-object", "invalid-payload")

_FIRST = ["Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Dennis", "Frances", "Ken", "Radia"]
_LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Turing", "Liskov", "Ritchie", "Allen", "Perlman"]
_PRODUCTS = [
    ("sku-1001", "Trail Runner 42", "Shoes", 89.90),
    ("sku-1002", "Summit Shell Jacket", "Jackets", 219.00),
    ("sku-1003", "Alpine Wool Socks", "Socks", 14.50),
    ("sku-1004", "Ridge 30L Daypack", "Bags", 74.95),
    ("sku-1005", "Basecamp Fleece", "Jackets", 64.00),
    ("sku-1006", "Granite Approach Shoe", "Shoes", 129.00),
    ("sku-1007", "Headlamp 400", "Gear", 39.99),
]
_PAGES = [
    ("Home", "/"),
    ("Shoes", "/c/shoes"),
    ("Jackets", "/c/jackets"),
    ("Sale", "/sale"),
    ("Help", "/help"),
]
_SCREENS = ["Home", "Product Detail", "Cart", "Checkout", "Order Confirmation"]
_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5"
_SITE = "https://shop.example.com"


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class EventGenerator:
    """Realistic Segment traffic: visitor sessions on a web shop and a mobile app.

    A session browses pages and products, may add to the cart, check out and order, and may sign
    up (identify, alias) or join a company (group). Every `poison_every`-th message is bad input
    of one of POISON_KINDS, in turn. Keys are the visitor id, as an analytics pipeline partitions.
    """

    def __init__(self, *, seed: int = 7, poison_every: int = 50, now: Callable[[], datetime] | None = None):
        self.rng = random.Random(seed)
        self.poison_every = poison_every
        self.now = now or (lambda: datetime.now(UTC))
        self.counts: Counter[str] = Counter()
        self._n = 0
        self._poison = itertools.cycle(POISON_KINDS)
        self._session: Iterator[dict[str, Any]] = iter(())

    def __iter__(self) -> Iterator[tuple[bytes | None, bytes]]:
        return self

    def __next__(self) -> tuple[bytes | None, bytes]:
        self._n += 1
        if self.poison_every and self._n % self.poison_every == 0:
            kind = next(self._poison)
            self.counts[f"poison:{kind}"] += 1
            return self._poison_message(kind)
        event = next(self._session, None)
        while event is None:
            self._session = self._new_session()
            event = next(self._session, None)
        self.counts[event["type"]] += 1
        key = event.get("userId") or event.get("anonymousId")
        return (key.encode() if key else None), orjson.dumps(event)

    # -- sessions ------------------------------------------------------------------------------------
    def _base(self, kind: str, anonymous_id: str, user_id: str | None, ctx: dict[str, Any]) -> dict[str, Any]:
        event: dict[str, Any] = {
            "type": kind,
            "messageId": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "timestamp": _iso(self.now()),
            "anonymousId": anonymous_id,
            "context": ctx,
        }
        if user_id:
            event["userId"] = user_id
        return event

    def _new_session(self) -> Iterator[dict[str, Any]]:
        rng = self.rng
        anon = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        mobile = rng.random() < 0.25
        known = rng.random() < 0.3
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        email = f"{first}.{last}{rng.randint(1, 999)}@example.com".lower()
        user_id = f"user-{rng.randint(10000, 99999)}" if known else None
        ctx: dict[str, Any] = {
            "ip": f"203.0.113.{rng.randint(1, 254)}",
            "locale": "en-US",
            "userAgent": _UA,
        }
        if mobile:
            ctx["app"] = {"name": "Northpeak", "version": "4.2.0", "build": "420"}
            ctx["device"] = {"type": "ios", "model": "iPhone15,2", "manufacturer": "Apple"}
            ctx["library"] = {"name": "analytics-ios", "version": "1.5.0"}
        else:
            ctx["library"] = {"name": "analytics.js", "version": "5.2.0"}
        if known:
            ctx["traits"] = {"email": email}

        def view(name: str, path: str) -> dict[str, Any]:
            if mobile:
                e = self._base("screen", anon, user_id, ctx)
                e["name"] = name
                e["properties"] = {"name": name}
                return e
            page = {"path": path, "url": _SITE + path, "title": f"{name} | Northpeak", "referrer": ""}
            e = self._base("page", anon, user_id, {**ctx, "page": page})
            e["name"] = name
            e["properties"] = {"url": _SITE + path, "title": page["title"], "path": path}
            return e

        def track(name: str, props: dict[str, Any]) -> dict[str, Any]:
            e = self._base("track", anon, user_id, ctx)
            e["event"] = name
            e["properties"] = props
            return e

        def product(p: tuple[str, str, str, float], qty: int = 1) -> dict[str, Any]:
            return {
                "product_id": p[0],
                "sku": p[0].upper(),
                "name": p[1],
                "category": p[2],
                "price": p[3],
                "quantity": qty,
                "brand": "Northpeak",
                "url": f"{_SITE}/p/{p[0]}",
            }

        name, path = rng.choice(_PAGES) if not mobile else (rng.choice(_SCREENS), "")
        yield view(name, path)
        yield track(
            "Product List Viewed",
            {"list_id": "shoes", "category": "Shoes", "products": [product(p) for p in _PRODUCTS[:3]]},
        )
        cart: list[dict[str, Any]] = []
        for p in rng.sample(_PRODUCTS, k=rng.randint(1, 3)):
            yield view(p[1], f"/p/{p[0]}")
            yield track("Product Viewed", {**product(p), "currency": "USD", "value": p[3]})
            if rng.random() < 0.6:
                item = product(p, qty=rng.randint(1, 2))
                cart.append(item)
                yield track("Product Added", {**item, "cart_id": f"cart-{anon[:8]}", "currency": "USD"})
        if rng.random() < 0.2:
            yield track("Products Searched", {"query": rng.choice(["rain jacket", "socks", "headlamp"])})
        if not user_id and rng.random() < 0.35:
            # Sign-up: the anonymous visitor becomes a known user.
            user_id = f"user-{rng.randint(10000, 99999)}"
            ctx = {**ctx, "traits": {"email": email}}
            yield track("Signed Up", {"method": "email", "email": email})
            ident = self._base("identify", anon, user_id, ctx)
            ident["traits"] = {
                "email": email,
                "first_name": first,
                "last_name": last,
                "firstName": first,
                "lastName": last,
                "phone": f"+1555{rng.randint(1000000, 9999999)}",
                "address": {"country": "US", "city": "Denver"},
                "createdAt": _iso(self.now() - timedelta(days=rng.randint(0, 900))),
            }
            yield ident
            alias = self._base("alias", anon, user_id, ctx)
            alias["previousId"] = anon
            yield alias
        elif user_id and rng.random() < 0.3:
            ident = self._base("identify", anon, user_id, ctx)
            ident["traits"] = {"email": email, "firstName": first, "lastName": last, "plan": "member"}
            yield ident
        if user_id and rng.random() < 0.1:
            grp = self._base("group", anon, user_id, ctx)
            grp["groupId"] = f"org-{rng.randint(100, 999)}"
            grp["traits"] = {"name": "Trailhead Outfitters", "industry": "Retail", "employees": 42}
            yield grp
        if cart and rng.random() < 0.7:
            total = round(sum(i["price"] * i["quantity"] for i in cart), 2)
            yield track(
                "Checkout Started",
                {
                    "order_id": f"o-{anon[:8]}",
                    "value": total,
                    "revenue": total,
                    "currency": "USD",
                    "products": cart,
                },
            )
            if rng.random() < 0.8:
                order_id = f"o-{anon[:8]}"
                yield track(
                    "Order Completed",
                    {
                        "order_id": order_id,
                        "checkout_id": f"c-{anon[:8]}",
                        "total": total,
                        "revenue": total,
                        "value": total,
                        "shipping": 4.95,
                        "tax": round(total * 0.08, 2),
                        "currency": "USD",
                        "products": cart,
                        "email": email,
                    },
                )

    # -- bad input ----------------------------------------------------------------------------------
    def _poison_message(self, kind: str) -> tuple[bytes | None, bytes]:
        key = f"poison-{self._n}".encode()
        if kind == "not-json":
            return key, b'{"type": "track", "event": "Order Completed", "properties": {"revenue": 12'
        if kind == "not-an-object":
            return key, b'["track", "Order Completed", 12.5]'
        # Decodes and routes, but the revenue is not a number: every partner's payload validation fails.
        event = self._base("track", f"anon-poison-{self._n}", None, {"library": {"name": "analytics.js"}})
        event["event"] = "Order Completed"
        event["properties"] = {
            "order_id": f"o-poison-{self._n}",
            "revenue": "a lot",
            "value": "a lot",
            "total": "a lot",
            "currency": "USD",
            "products": "none",
        }
        return key, orjson.dumps(event)
