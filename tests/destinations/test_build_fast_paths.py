"""Partner requests are the same with and without the shortcuts (`CompiledAction(..., fast=False)`:
full payload checks, component-wise URL encoding, the exact JSON.stringify, V8's date rules without
the ISO shortcut, phones hashed without the ASCII shortcut, the URL standard without shortcuts)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproc.destinations import stackadapt, tiktok_offline
from streamproc.destinations.base import BuildContext, Destination, Skip
from streamproc.destinations.runtime import CompiledAction
from streamproc.errors import PayloadValidationError

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TEXT = st.text(st.characters(max_codepoint=127), max_size=10) | st.text(
    st.characters(codec=None)
    | st.sampled_from([*" %+&=#?/.:-_~*!'()\x00\x01", "é", "€", "\U0001f600", "\ud800"]),
    max_size=10,
)
NUMBERS = (
    st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, 1.0, 9.5, 1e16, 1.5e-6, 1e21])
)
SCALARS = st.none() | st.booleans() | NUMBERS | TEXT
PHONES = st.sampled_from(["+1 (555) 123-4567", "٠١٢٣", "5551234567890123456", " ", "", "a" * 64]) | TEXT
URLS = (
    st.sampled_from(
        [
            "https://shop.example/p?ttclid=abc",
            "https://shop.example/p?a=1&tt%63lid=x+y",
            "https://exa mple.com/?ttclid=1",
            "https://shop.example:99999/?ttclid=1",
            "mailto:a@b?ttclid=5",
            "https://shop.example/é?ttclid=é",
        ]
    )
    | TEXT
)
TIMES = (
    st.sampled_from(
        [
            "2024-03-15T10:30:00.000Z",
            "2024-02-31T00:00:00Z",
            "0001-01-00",
            "Mar 15 2024",
            "2024-03-15T24:00:00Z",
        ]
    )
    | TEXT
)


def _requests(destination: Destination, action: str, payload: dict[str, Any], fast: bool) -> str:
    ctx = BuildContext(
        settings=SETTINGS_OF[destination.type], endpoint=destination.endpoint, event={}, now=NOW
    )
    try:
        built = CompiledAction(destination, action, fast=fast).run(payload, ctx)
    except PayloadValidationError as exc:
        return f"{type(exc).__name__}: {exc.message}"
    assert not isinstance(built, Skip)
    return repr([(r.method, r.url, dict(r.headers), r.body) for r in built])


SETTINGS_OF = {
    "stackadapt": {"pixelId": "px 1~"},
    "tiktok-offline-conversions": {"accessToken": "tok", "eventSetID": "123"},
}


@SETTINGS
@given(
    payload=st.fixed_dictionaries(
        {},
        optional={
            "event_type": TEXT,
            "title": TEXT | SCALARS,
            "url": URLS,
            "referrer": TEXT,
            "ip_fwd": st.sampled_from(["203.0.113.7", "::1"]) | TEXT,
            "user_agent": TEXT,
            "action": TEXT,
            "utm_source": TEXT,
            "user_id": TEXT,
            "email": TEXT,
            "phone": PHONES,
            "ecommerce_data": st.dictionaries(
                st.sampled_from(["revenue", "order_id", "product_price", "1", "10", "x", "é"]),
                SCALARS,
                max_size=5,
            ),
            "ecommerce_products": st.lists(
                st.dictionaries(
                    st.sampled_from(["product_price", "product_id", "0", "x"]), SCALARS, max_size=3
                ),
                max_size=3,
            ),
        },
    )
)
def test_stackadapt_requests_are_the_same_without_shortcuts(payload: dict[str, Any]) -> None:
    destination = stackadapt.DESTINATION
    assert _requests(destination, "forwardEvent", payload, True) == _requests(
        destination, "forwardEvent", payload, False
    )


@SETTINGS
@given(
    payload=st.fixed_dictionaries(
        {"event": st.sampled_from(["CompletePayment", "AddToCart"])},
        optional={
            "event_id": TEXT | NUMBERS,
            "timestamp": TIMES,
            "phone_numbers": st.lists(PHONES, max_size=3) | PHONES,
            "email_addresses": st.lists(TEXT, max_size=2),
            "external_ids": st.lists(TEXT, max_size=2),
            "ttclid": TEXT,
            "url": URLS,
            "referrer": TEXT,
            "ip": TEXT,
            "value": NUMBERS | TEXT,
            "currency": TEXT,
            "contents": st.lists(
                st.dictionaries(
                    st.sampled_from(["price", "quantity", "content_id", "0"]), SCALARS, max_size=3
                ),
                max_size=2,
            ),
            "limited_data_use": st.booleans() | TEXT,
        },
    )
)
def test_tiktok_requests_are_the_same_without_shortcuts(payload: dict[str, Any]) -> None:
    destination = tiktok_offline.DESTINATION
    assert _requests(destination, "reportOfflineEvent", payload, True) == _requests(
        destination, "reportOfflineEvent", payload, False
    )
