"""TikTok Offline Conversions: reports offline events (store and call-centre purchases, leads) to TikTok.

Requests are Segment's, byte for byte: one event per POST. Two things differ from Segment on purpose:

- TikTok's answer is read. TikTok reports most errors with HTTP 200 and a `code` in its JSON
  envelope, which Segment ignores (any 2xx counts as delivered there). Here code 0 is delivered,
  20001 (partial success) is delivered and counted, the "too frequent" codes 40100, 40016, 40133
  and 40132 and the server codes 50000, 50002 and 60001 are retried, and any other code is
  permanent: the delivery is dead-lettered with the code and TikTok's message.
- Batching, when a destination or subscription asks for it: the single-event requests of one
  access token, event set and event source are combined into one request whose `data` holds each
  event exactly as it would have been sent alone (`batch_key`, `combine_events`). An event with a
  `test_event_code` always goes alone.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson

from streamproc.core.fields import Choice, Field
from streamproc.core.js import (
    UNDEFINED,
    WHITESPACE,
    date_parse,
    date_parse_exact,
    json_bytes_exact,
    present,
    to_js_string,
    url_query_param,
    url_query_param_exact,
    utf8,
)
from streamproc.core.js import json_bytes as js_json
from streamproc.destinations.base import (
    Action,
    Batching,
    BuildContext,
    Destination,
    Outcome,
    Preset,
    Request,
    Skip,
    Verdict,
    classify_http,
    new_request,
)
from streamproc.errors import PayloadValidationError

__all__ = [
    "DESTINATION",
    "MAX_BATCH_EVENTS",
    "batch_key",
    "build_offline_event",
    "classify",
    "combine_events",
    "format_emails",
    "format_phones",
    "format_user_ids",
    "url_query_param",
]

ENDPOINT = "https://business-api.tiktok.com"
API_VERSION = "v1.3"
PII_REQUIRED = "TikTok Offline Conversions API requires an email address and/or phone number and or a userId"


def _either(first: str, second: str) -> dict[str, Any]:
    """The mapping `first` when it exists, else `second` (Segment's @if/exists pattern)."""
    return {"@if": {"exists": {"@path": first}, "then": {"@path": first}, "else": {"@path": second}}}


SETTINGS: dict[str, Field] = {
    "accessToken": Field(
        label="Access Token",
        type="password",
        description=(
            "Your TikTok Access Token. Please see TikTok’s [Events API 2.0 "
            "documentation](https://business-api.tiktok.com/portal/docs?id=1771101130925058) "
            "for information on how to generate an access token via the TikTok Ads Manager or"
            " API."
        ),
        required=True,
    ),
    "eventSetID": Field(
        label="Event Set ID",
        description=(
            "Your TikTok Offline Event Set ID. Please see TikTok’s [Events API 2.0 "
            "documentation](https://business-api.tiktok.com/portal/docs?id=1771101027431425) "
            "for information on how to find this value."
        ),
        required=True,
    ),
}

FIELDS: dict[str, Field] = {
    "event": Field(
        label="Event Name",
        description=(
            'Conversion event name. Please refer to the "Offline Standard Events" section on '
            "in TikTok’s [Events API 2.0 "
            "documentation](https://business-api.tiktok.com/portal/docs?id=1771101186666498) "
            "for accepted event names."
        ),
        required=True,
    ),
    "event_id": Field(
        label="Event ID",
        description="Any hashed ID that can identify a unique user/session.",
        default={"@path": "$.messageId"},
    ),
    "timestamp": Field(
        label="Event Timestamp",
        description="Timestamp that the event took place, in ISO 8601 format.",
        default={"@path": "$.timestamp"},
    ),
    "phone_numbers": Field(
        label="Phone Number",
        description=(
            "A single phone number or array of phone numbers in E.164 standard format. At "
            "least one phone number value is required if both Email and External ID fields "
            "are empty."
        ),
        multiple=True,
        default=_either("$.properties.phone", "$.context.traits.phone"),
        extra={"category": "hashedPII"},
    ),
    "email_addresses": Field(
        label="Email",
        description=(
            "A single email address or an array of email addresses. At least one email value "
            "is required if both Phone Number and External ID fields are empty."
        ),
        multiple=True,
        default=_either("$.properties.email", "$.context.traits.email"),
        extra={"category": "hashedPII"},
    ),
    "order_id": Field(
        label="Order ID",
        description="Order ID of the transaction.",
        default={"@path": "$.properties.order_id"},
    ),
    "shop_id": Field(
        label="Shop ID",
        description="Shop ID of the transaction.",
        default={"@path": "$.properties.shop_id"},
    ),
    "external_ids": Field(
        label="External ID",
        description=(
            "Uniquely identifies the user who triggered the conversion event. TikTok Offline "
            "Conversions Destination supports both string and string[] types for sending "
            "external ID(s). At least one external ID value is required if both Email and "
            "Phone Number fields are empty."
        ),
        multiple=True,
        default=_either("$.userId", "$.anonymousId"),
        extra={"category": "hashedPII"},
    ),
    "ttclid": Field(
        label="TikTok Click ID",
        description=(
            "The value of the ttclid used to match website visitor events with TikTok ads. "
            "The ttclid is valid for 7 days. See [Set up ttclid](https://ads.tiktok.com/marke"
            "ting_api/docs?rid=4eezrhr6lg4&id=1681728034437121) for details."
        ),
        default=_either("$.properties.ttclid", "$.integrations.TikTok Offline Conversions.ttclid"),
    ),
    "ttp": Field(
        label="TikTok Cookie ID",
        description=(
            "TikTok Cookie ID. If you also use Pixel SDK and have enabled cookies, Pixel SDK "
            "automatically saves a unique identifier in the `_ttp` cookie. The value of "
            "`_ttp` is used to match website visitor events with TikTok ads. You can extract "
            "the value of `_ttp` and attach the value here. To learn more about the `ttp` "
            "parameter, refer to [Events API 2.0 - Send TikTok "
            "Cookie](https://ads.tiktok.com/marketing_api/docs?id=%201771100936446977) "
            "(`_ttp`)."
        ),
        default=_either("$.properties.ttp", "$.integrations.TikTok Offline Conversions.ttp"),
    ),
    "lead_id": Field(
        label="TikTok Lead ID",
        description=(
            "ID of TikTok leads. Every lead will have its own lead_id when exported from "
            "TikTok. This feature is in Beta. Please contact your TikTok representative to "
            "inquire regarding availability"
        ),
        default={"@path": "$.properties.lead_id"},
    ),
    "locale": Field(
        label="Locale",
        description=(
            "The BCP 47 language identifier. For reference, refer to the [IETF BCP 47 "
            "standardized code](https://www.rfc-editor.org/rfc/bcp/bcp47.txt)."
        ),
        default={"@path": "$.context.locale"},
    ),
    "url": Field(
        label="Page URL",
        description="The page URL where the conversion event took place.",
        default={"@path": "$.context.page.url"},
    ),
    "referrer": Field(
        label="Page Referrer",
        description="The page referrer.",
        default={"@path": "$.context.page.referrer"},
    ),
    "ip": Field(
        label="IP Address",
        description="IP address of the browser.",
        default={"@path": "$.context.ip"},
    ),
    "user_agent": Field(
        label="User Agent",
        description="User agent from the user’s device.",
        default={"@path": "$.context.userAgent"},
    ),
    "contents": Field(
        label="Contents",
        type="object",
        description="Related item details for the event.",
        multiple=True,
        properties={
            "price": Field(
                label="Price",
                type="number",
                description="Price of the item.",
            ),
            "quantity": Field(
                label="Quantity",
                type="number",
                description="Number of items.",
            ),
            "content_category": Field(
                label="Content Category",
                description="Category of the product item.",
            ),
            "content_id": Field(
                label="Content ID",
                description="ID of the product item.",
            ),
            "content_name": Field(
                label="Content Name",
                description="Name of the product item.",
            ),
            "brand": Field(
                label="Brand",
                description="Brand name of the product item.",
            ),
        },
        extra={"defaultObjectUI": "keyvalue"},
    ),
    "content_type": Field(
        label="Content Type",
        description=(
            "Type of the product item. When the `content_id` in the `Contents` field is "
            "specified as a `sku_id`, set this field to `product`. When the `content_id` in "
            "the `Contents` field is specified as an `item_group_id`, set this field to "
            "`product_group`."
        ),
        choices=(Choice("product", "product"), Choice("product_group", "product_group")),
        default="product",
    ),
    "currency": Field(
        label="Currency",
        description="Currency for the value specified as ISO 4217 code.",
        default={"@path": "$.properties.currency"},
    ),
    "value": Field(
        label="Value",
        type="number",
        description="Value of the order or items sold.",
        default=_either("$.properties.value", "$.properties.revenue"),
    ),
    "description": Field(
        label="Description",
        description="A string description of the web event.",
    ),
    "query": Field(
        label="Query",
        description="The text string that was searched for.",
        default={"@path": "$.properties.query"},
    ),
    "limited_data_use": Field(
        label="Limited Data Use",
        type="boolean",
        description=(
            "Use this field to flag an event for limited data processing. TikTok will "
            "recognize this parameter as a request for limited data processing, and will "
            "limit its processing activities accordingly if the event shared occurred in an "
            "eligible location. To learn more about the Limited Data Use feature, refer to "
            "[Events API 2.0 - Limited Data "
            "Use](https://ads.tiktok.com/marketing_api/docs?id=1771101204435970)."
        ),
        default={"@path": "$.properties.limited_data_use"},
    ),
    "test_event_code": Field(
        label="Test Event Code",
        description=(
            "Use this field to specify that events should be test events rather than actual "
            "traffic. You can find your Test Event Code in your TikTok Events Manager under "
            'the "Test Event" tab. You\'ll want to remove your Test Event Code when sending '
            "real traffic through this integration."
        ),
    ),
}

# ---------------------------------------------------------------------------------------------
# Identifier normalisation and hashing (Segment's "smart hashing": blank stays "", a value that
# already looks like a SHA-256 hex digest is passed through, anything else is cleaned and hashed).

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_NON_DIGITS = re.compile(r"[^0-9]")


_sha256 = hashlib.sha256


def _smart_hash(value: str, clean: Any = None) -> str:
    if not value.strip(WHITESPACE):
        return ""
    if len(value) == 64 and _SHA256_HEX.fullmatch(value):
        return value
    if clean is not None:
        value = clean(value)
    # ASCII text has no lone surrogates, so it is its own UTF-8.
    return _sha256(value.encode("ascii") if value.isascii() else utf8(value)).hexdigest()


_NON_DIGIT_BYTES = bytes(c for c in range(128) if not 0x30 <= c <= 0x39)


def _clean_phone(phone: str) -> str:
    # No country-code inference: "+" then the digits, at most 15 characters in all.
    if phone.isascii():
        return ("+" + phone.encode("ascii").translate(None, _NON_DIGIT_BYTES).decode("ascii"))[:15]
    return _clean_phone_exact(phone)


def _clean_phone_exact(phone: str) -> str:
    return ("+" + _NON_DIGITS.sub("", phone))[:15]


def format_emails(emails: list[str] | None) -> list[str]:
    """Emails are lower-cased (not trimmed) before hashing."""
    return [_smart_hash(e.lower()) for e in emails or ()]


def format_phones(phones: list[str] | None) -> list[str]:
    """Phones: the pass-through check sees the raw value; otherwise "+" + digits, cut to 15, hashed."""
    return [_smart_hash(p, _clean_phone) for p in phones or ()]


def format_phones_exact(phones: list[str] | None) -> list[str]:
    """`format_phones` without the shortcut for ASCII phones (the same hashes)."""
    return [_smart_hash(p, _clean_phone_exact) for p in phones or ()]


def format_user_ids(user_ids: list[str] | None) -> list[str]:
    """External ids are lower-cased (not trimmed) before hashing."""
    return [_smart_hash(u.lower()) for u in user_ids or ()]


# ---------------------------------------------------------------------------------------------


def _event_time(timestamp: Any, ctx: BuildContext, parse: Callable[[str], float]) -> int | None:
    if present(timestamp):
        millis = parse(to_js_string(timestamp))
        return None if math.isnan(millis) else math.floor(millis / 1000)
    return math.floor(ctx.now.timestamp())


@dataclass(frozen=True, slots=True)
class _Helpers:
    """The steps of `build_offline_event` that have a shortcut for the usual input: `_FAST` takes it,
    `_EXACT` (the actions' `build_exact`) follows the rules step by step; the requests are the same."""

    format_phones: Callable[[list[str] | None], list[str]]
    url_query_param: Callable[[str, str], str | None]
    date_parse: Callable[[str], float]
    json: Callable[[Any], bytes]


def _body_json(body: dict[str, Any]) -> bytes:
    # Every key of the body is one of the builder's own or a field of `contents` (validation drops
    # any other), and none is an array index.
    return js_json(body, plain_keys=True)


_FAST = _Helpers(format_phones, url_query_param, date_parse, _body_json)
_EXACT = _Helpers(format_phones_exact, url_query_param_exact, date_parse_exact, json_bytes_exact)
_USER_KEYS = ("lead_id", "ttp", "ip", "user_agent", "locale")
_PROPERTY_KEYS = ("query", "description", "order_id", "shop_id")
_PATH = f"/open_api/{API_VERSION}/event/track/"

# One headers mapping per access token, shared by its requests (never changed once made): a request
# stays in memory while its delivery is in flight, thousands of them on a backlog.
_HEADERS_BY_TOKEN: dict[str, Mapping[str, str]] = {}
_HEADERS_KEPT = 64


def _headers(token: str) -> Mapping[str, str]:
    headers = _HEADERS_BY_TOKEN.get(token)
    if headers is None:
        headers = {
            "access-token": token,
            "content-type": "application/json",
            "user-agent": "Segment (Actions)",
        }
        if len(_HEADERS_BY_TOKEN) < _HEADERS_KEPT:
            _HEADERS_BY_TOKEN[token] = headers
    return headers


def build_offline_event(
    payload: Mapping[str, Any], ctx: BuildContext, helpers: _Helpers = _FAST
) -> list[Request] | Skip:
    """One POST to /event/track/ with a single offline event; identifiers hashed."""
    get = payload.get
    phones = helpers.format_phones(get("phone_numbers"))
    emails = format_emails(get("email_addresses"))
    user_ids = format_user_ids(get("external_ids"))
    if not phones and not emails and not user_ids:
        raise PayloadValidationError(PII_REQUIRED)

    ttclid = get("ttclid")
    if not present(ttclid):
        ttclid = None
        url = get("url")
        if present(url):
            ttclid = helpers.url_query_param(to_js_string(url), "ttclid") or None

    user: dict[str, Any] = {}
    if ttclid is not None:
        user["ttclid"] = ttclid
    user["external_id"] = user_ids
    user["phone"] = phones
    user["email"] = emails
    for key in _USER_KEYS:
        value = get(key)
        if present(value):
            user[key] = value

    contents = get("contents")
    properties: dict[str, Any] = {"contents": contents if present(contents) else []}
    value = get("content_type")
    if present(value):
        properties["content_type"] = value
    value = get("currency")
    if present(value):
        properties["currency"] = value
    value = get("value")
    if present(value) or (value.__class__ in (int, float) and value == 0):
        properties["value"] = value
    for key in _PROPERTY_KEYS:
        value = get(key)
        if present(value):
            properties[key] = value

    page: dict[str, Any] = {}
    value = get("url")
    if present(value):
        page["url"] = value
    value = get("referrer")
    if present(value):
        page["referrer"] = value

    event: dict[str, Any] = {
        "event": get("event"),
        "event_time": _event_time(get("timestamp"), ctx, helpers.date_parse),
    }
    event_id = get("event_id")
    if present(event_id):
        event["event_id"] = to_js_string(event_id)
    event["user"] = user
    event["properties"] = properties
    event["page"] = page
    limited = get("limited_data_use")
    event["limited_data_use"] = limited if present(limited) else False
    test_code = get("test_event_code")
    if present(test_code):
        event["test_event_code"] = test_code

    settings = ctx.settings
    body = {
        "event_source": "offline",
        "event_source_id": settings.get("eventSetID"),
        "partner_name": "Segment",
        "data": [event],
    }
    headers = _headers(str(settings.get("accessToken", "")))
    return [new_request("POST", f"{ctx.endpoint}{_PATH}", headers, helpers.json(body))]


PARTIAL_SUCCESS = 20001
THROTTLED_CODES = frozenset({40100, 40016, 40133, 40132})
"""TikTok's "too frequent" codes: retried with backoff, like HTTP 429."""
RETRYABLE_CODES = frozenset({50000, 50002, 60001})
"""TikTok's server-side codes worth another attempt."""


def _envelope_code(body: bytes) -> tuple[int, str] | None:
    """TikTok's `code` and `message`, or None when the body is not its JSON envelope."""
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(envelope, dict):
        return None
    code = envelope.get("code")
    if isinstance(code, str) and code.strip().lstrip("-").isdigit():
        code = int(code)
    if code.__class__ is not int:
        return None
    return code, str(envelope.get("message", ""))[:200]


def classify(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """The HTTP status first (as Segment), then, on a 2xx, TikTok's envelope code: 0 delivered, 20001
    delivered in part, the throttling and server codes retried, any other code permanent."""
    outcome = classify_http(status, headers, body)
    if not body:
        return outcome
    found = _envelope_code(body)
    if found is None:
        return outcome
    code, message = found
    text = f"TikTok code {code}: {message}"
    if outcome.verdict is not Verdict.DELIVERED:
        return Outcome(outcome.verdict, status, f"HTTP {status}, {text}", outcome.retry_after)
    if code == 0:
        return outcome
    if code == PARTIAL_SUCCESS:
        return Outcome(Verdict.DELIVERED, status, text, None, partial=True)
    if code in THROTTLED_CODES:
        return Outcome(Verdict.RETRY, status, f"{text} (throttled)", outcome.retry_after, throttled=True)
    if code in RETRYABLE_CODES:
        return Outcome(Verdict.RETRY, status, text, outcome.retry_after)
    return Outcome(Verdict.FAIL, status, text)


# ---------------------------------------------------------------------------------------------
# Batching: build_offline_event writes `data` last, so a body is a head shared by every event of
# one access token and event set, `[`, the one event, and `]}`. Combining splices the events' bytes.

MAX_BATCH_EVENTS = 1000
"""The most events TikTok's /event/track/ takes in one `data` array."""
_DATA = b',"data":['
# Inside a JSON string every quote is escaped, so these bytes only ever start a key.
_TEST_EVENT_CODE = b'"test_event_code":'


def _data_start(body: bytes) -> int:
    at = body.find(_DATA)
    return -1 if at < 0 else at + len(_DATA)


def batch_key(request: Request) -> tuple[Hashable, int] | None:
    """The group a single-event request may be batched with (URL, headers with the access token, and
    the body before `data`: event source and event set) and the bytes it adds to a batch; None for a
    test event or a body of another shape, which go alone."""
    body = request.body
    if body is None or _TEST_EVENT_CODE in body or not body.endswith(b"]}"):
        return None
    start = _data_start(body)
    if start < 0:
        return None
    key = (request.method, request.url, tuple(sorted(request.headers.items())), body[:start])
    # The event and the comma before it: a batch's body is the first request's plus these.
    return key, len(body) - start - 1


def combine_events(requests: Sequence[Request]) -> Request:
    """One request whose `data` holds every event of `requests` (one group of `batch_key`), in order."""
    first = requests[0]
    if len(requests) == 1:
        return first
    assert first.body is not None
    start = _data_start(first.body)
    events = b",".join([r.body[start:-2] for r in requests if r.body is not None])
    return Request(first.method, first.url, first.headers, first.body[:start] + events + b"]}")


BATCHING = Batching(max_events=MAX_BATCH_EVENTS, key=batch_key, combine=combine_events)


# ---------------------------------------------------------------------------------------------


def _action(key: str, title: str, description: str) -> Action:
    return Action(
        key=key,
        title=title,
        description=description,
        fields=FIELDS,
        build=build_offline_event,
        batching=BATCHING,
        build_exact=partial(build_offline_event, helpers=_EXACT),
    )


ACTIONS = {
    "trackPaymentOfflineConversion": _action(
        "trackPaymentOfflineConversion",
        "[Deprecated] Track Payment Offline Conversion",
        "[Deprecated] Send details of an in-store purchase or console purchase to the Tiktok Offline "
        "Events API. This Action has been Deprecated. Please use the 'Track Payment Offline Conversion' "
        "Action instead",
    ),
    "trackNonPaymentOfflineConversion": _action(
        "trackNonPaymentOfflineConversion",
        "[Deprecated] Track Non Payment Offline Conversion",
        "[Deprecated] Send a non payment related event to the TikTok Offline Conversions API. This Action "
        "has been Deprecated. Please use the 'Track Payment Offline Conversion' Action instead",
    ),
    "reportOfflineEvent": _action(
        "reportOfflineEvent",
        "Track Offline Conversion",
        "Send details of an in-store purchase or console purchase to the Tiktok Offline Events API",
    ),
}


def _contents_from(root: str) -> dict[str, Any]:
    return {
        "@arrayPath": [
            root,
            {
                "price": {"@path": "$.price"},
                "quantity": {"@path": "$.quantity"},
                "content_category": {"@path": "$.category"},
                "content_id": {"@path": "$.product_id"},
                "content_name": {"@path": "$.name"},
                "brand": {"@path": "$.brand"},
            },
        ]
    }


_DEFAULTS = {k: f.default for k, f in FIELDS.items() if f.default is not UNDEFINED}
_MULTI = "$.properties.products"
_SINGLE = "$.properties"

# (preset name, trigger, TikTok event name, root of the products for `contents` or None)
_PRESETS: tuple[tuple[str, str, str, str | None], ...] = (
    ("Complete Payment", 'event = "Order Completed"', "CompletePayment", _MULTI),
    ("Contact", 'event = "Callback Started"', "Contact", None),
    ("Subscribe", 'event = "Subscription Created"', "Subscribe", None),
    ("Submit Form", 'event = "Form Submitted"', "SubmitForm", None),
    ("Page View", 'type="page"', "PageView", _MULTI),
    ("View Content", 'event = "Product Viewed"', "ViewContent", _SINGLE),
    ("Click Button", 'event = "Product Clicked"', "ClickButton", _SINGLE),
    ("Search", 'event = "Products Searched"', "Search", _SINGLE),
    ("Add to Wishlist", 'event = "Product Added to Wishlist"', "AddToWishlist", _SINGLE),
    ("Add to Cart", 'event = "Product Added"', "AddToCart", _SINGLE),
    ("Initiate Checkout", 'event = "Checkout Started"', "InitiateCheckout", _MULTI),
    ("Add Payment Info", 'event = "Payment Info Entered"', "AddPaymentInfo", _MULTI),
    ("Place an Order", 'event = "Order Placed"', "PlaceAnOrder", _MULTI),
    ("Download", 'event = "Download Link Clicked"', "Download", None),
    ("Complete Registration", 'event = "Signed Up"', "CompleteRegistration", None),
)


def _preset(name: str, subscribe: str, event: str, products: str | None) -> Preset:
    mapping = dict(_DEFAULTS)
    if products is not None:
        mapping["contents"] = _contents_from(products)
    mapping["event"] = event
    return Preset(name=name, subscribe=subscribe, action="reportOfflineEvent", mapping=mapping)


DESTINATION = Destination(
    type="tiktok-offline-conversions",
    name="TikTok Offline Conversions",
    integration_names=("Tiktok Offline Conversions (Actions)", "Tiktok Offline Conversions"),
    endpoint=ENDPOINT,
    settings=SETTINGS,
    actions=ACTIONS,
    presets=tuple(_preset(*p) for p in _PRESETS),
    classify=classify,
    presets_enabled_by_default=False,
)
