"""Seg, the e-commerce email-marketing tracker: settings, actions, presets and request building."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from streamproc.core.fields import Field
from streamproc.core.jsvalues import UNDEFINED
from streamproc.destinations.base import (
    Action,
    BuildContext,
    Destination,
    Outcome,
    Preset,
    Request,
    Skip,
    Verdict,
    parse_retry_after,
)

__all__ = ["DEFAULT_ENDPOINT", "DESTINATION", "SEG_EVENTS", "classify", "normalize_settings"]

DEFAULT_ENDPOINT = "https://tracker.segapp.com"
# Seg never published a path layout for Segment-fed events; this one is ours (see README) and the
# partner simulator serves exactly it. Everything Seg-specific stays in this module.
_PATH_PREFIX = "segment"

_HEADERS: Mapping[str, str] = {"content-type": "application/json", "accept": "application/json"}

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Deliberately simple: Seg only needs to tell an email address from an id; the seed document asks
# for "email address types", not RFC 5322.
_EMAIL = re.compile(r"[^\s@]+@[^\s@.]+(\.[^\s@.]+)+")

SEG_EVENTS = ("RangeView", "ProductView", "AddedToBasket", "OrderPlaced")


def _path(path: str) -> dict[str, str]:
    return {"@path": path}


def _first(*paths: str) -> Any:
    """`a` if it is not blank, else `b`, else ... (a chain of mapping-kit `@if ... blank`)."""
    mapping: Any = _path(paths[-1])
    for path in reversed(paths[:-1]):
        mapping = {"@if": {"blank": _path(path), "then": _path(path), "else": mapping}}
    return mapping


_COMMON: dict[str, Field] = {
    "id": Field(
        label="Id",
        description="The visitor's id: userId, else anonymousId.",
        default=_first("$.userId", "$.anonymousId"),
    ),
    "messageId": Field(
        label="Message Id", description="The event's messageId.", default=_path("$.messageId")
    ),
    "timestamp": Field(
        label="Timestamp",
        description="When the event happened, ISO-8601 as received.",
        default=_path("$.timestamp"),
    ),
}

_EMAIL_FROM_CONTEXT = _first("$.context.traits.email", "$.properties.email")

_IDENTIFY_FIELDS: dict[str, Field] = {
    **_COMMON,
    "email": Field(
        label="Email", description="The visitor's email address.", default=_path("$.traits.email")
    ),
    "firstName": Field(label="First Name", default=_first("$.traits.firstName", "$.traits.first_name")),
    "lastName": Field(label="Last Name", default=_first("$.traits.lastName", "$.traits.last_name")),
    "countryCode": Field(label="Country Code", default=_path("$.traits.address.country")),
    "title": Field(label="Title", default=_path("$.traits.title")),
    "gender": Field(label="Gender", default=_path("$.traits.gender")),
    "dateOfBirth": Field(label="Date Of Birth", default=_path("$.traits.birthday")),
    "traits": Field(
        label="Traits", type="object", description="Every trait, passed through.", default=_path("$.traits")
    ),
}

_TRACK_FIELDS: dict[str, Field] = {
    "segEvent": Field(
        label="Seg Event",
        description="Which Seg event the Segment event becomes.",
        required=True,
        choices=SEG_EVENTS,
    ),
    **_COMMON,
    "email": Field(label="Email", default=_EMAIL_FROM_CONTEXT),
    "properties": Field(
        label="Properties",
        type="object",
        description="The event's properties; products and orders are read from them.",
        default=_path("$.properties"),
    ),
}

_PAGE_FIELDS: dict[str, Field] = {
    **_COMMON,
    "url": Field(label="Url", default=_first("$.context.page.url", "$.properties.url")),
    "title": Field(label="Title", default=_first("$.context.page.title", "$.properties.title", "$.name")),
    "referrer": Field(label="Referrer", default=_first("$.context.page.referrer", "$.properties.referrer")),
    "email": Field(label="Email", default=_EMAIL_FROM_CONTEXT),
}

_ALIAS_FIELDS: dict[str, Field] = {
    **_COMMON,
    "previousId": Field(
        label="Previous Id", description="The old email address.", default=_path("$.previousId")
    ),
    "userId": Field(label="User Id", description="The new email address.", default=_path("$.userId")),
}


def _present(value: Any) -> bool:
    return value is not None and value is not UNDEFINED


def _put(body: dict[str, Any], key: str, value: Any) -> None:
    if value is not None and value is not UNDEFINED:
        body[key] = value


def _either(source: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = source.get(key)
        if value is not None and value != "":
            return value
    return None


def _list_or_single(source: Mapping[str, Any], many: str, one: str) -> Any:
    values = source.get(many)
    if _present(values):
        return values
    value = source.get(one)
    if _present(value):
        return [value]
    return None


def _product(item: Any) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        return {}
    product: dict[str, Any] = {}
    _put(product, "Id", _either(item, "id", "product_id"))
    _put(product, "Sku", item.get("sku"))
    _put(product, "Name", item.get("name"))
    _put(product, "Price", item.get("price"))
    _put(product, "OriginalPrice", item.get("original_price"))
    _put(product, "Quantity", item.get("quantity"))
    _put(product, "ImageUrl", item.get("image_url"))
    _put(product, "VariantName", item.get("variant_name"))
    _put(product, "Categories", _list_or_single(item, "categories", "category"))
    _put(product, "Brands", item.get("brands"))
    return product


def _range_view(props: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put(out, "Categories", _list_or_single(props, "categories", "category"))
    _put(out, "Brands", props.get("brands"))
    return out


def _product_view(props: Mapping[str, Any]) -> dict[str, Any]:
    return _product(props)


def _added_to_basket(props: Mapping[str, Any]) -> dict[str, Any]:
    line = _product(props)
    line["Added"] = True
    return {"OrderLines": [line]}


def _order_placed(props: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put(out, "Id", _either(props, "orderId", "order_id"))
    _put(out, "Revenue", _either(props, "revenue", "total"))
    _put(out, "Total", props.get("total"))
    _put(out, "DeliveryRevenue", props.get("shipping"))
    _put(out, "Tax", props.get("tax"))
    _put(out, "Discount", props.get("discount"))
    _put(out, "Coupon", props.get("coupon"))
    _put(out, "Currency", props.get("currency"))
    _put(out, "Repeat", props.get("repeat"))
    _put(out, "DeliveryMethod", props.get("delivery_method"))
    _put(out, "_p", props.get("_p"))
    products = props.get("products")
    out["OrderLines"] = [_product(p) for p in products] if isinstance(products, list) else []
    return out


_PROPERTIES_BUILDERS = {
    "RangeView": _range_view,
    "ProductView": _product_view,
    "AddedToBasket": _added_to_basket,
    "OrderPlaced": _order_placed,
}


def _common(payload: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    _put(body, "MessageId", payload.get("messageId"))
    _put(body, "Timestamp", payload.get("timestamp"))
    _put(body, "Id", payload.get("id"))
    return body


def _post(ctx: BuildContext, operation: str, body: Mapping[str, Any]) -> list[Request]:
    url = f"{ctx.endpoint.rstrip('/')}/{_PATH_PREFIX}/{ctx.settings['apiKey']}/{operation}"
    return [Request("POST", url, _HEADERS, orjson.dumps(body))]


def build_identify(payload: Mapping[str, Any], ctx: BuildContext) -> list[Request] | Skip:
    body = _common(payload)
    _put(body, "Email", payload.get("email"))
    _put(body, "FirstName", payload.get("firstName"))
    _put(body, "LastName", payload.get("lastName"))
    _put(body, "CountryCode", payload.get("countryCode"))
    _put(body, "Title", payload.get("title"))
    _put(body, "Gender", payload.get("gender"))
    _put(body, "DateOfBirth", payload.get("dateOfBirth"))
    _put(body, "Traits", payload.get("traits"))
    return _post(ctx, "identify", body)


def build_track(payload: Mapping[str, Any], ctx: BuildContext) -> list[Request] | Skip:
    seg_event = payload["segEvent"]
    body: dict[str, Any] = {"Event": seg_event, **_common(payload)}
    _put(body, "Email", payload.get("email"))
    props = payload.get("properties")
    body["Properties"] = _PROPERTIES_BUILDERS[seg_event](props if isinstance(props, Mapping) else {})
    return _post(ctx, "track", body)


def build_page(payload: Mapping[str, Any], ctx: BuildContext) -> list[Request] | Skip:
    body = _common(payload)
    _put(body, "Url", payload.get("url"))
    _put(body, "Title", payload.get("title"))
    _put(body, "Referrer", payload.get("referrer"))
    _put(body, "Email", payload.get("email"))
    return _post(ctx, "page", body)


def _is_email(value: Any) -> bool:
    return isinstance(value, str) and _EMAIL.fullmatch(value) is not None


def build_alias(payload: Mapping[str, Any], ctx: BuildContext) -> list[Request] | Skip:
    previous, new = payload.get("previousId"), payload.get("userId")
    if not (_is_email(previous) and _is_email(new)):
        # Seg ignores aliases between anything but two email addresses.
        return Skip("alias is sent to Seg only when previousId and userId are both email addresses")
    body = _common(payload)
    body["PreviousEmail"] = previous
    body["Email"] = new
    return _post(ctx, "alias", body)


def _bare_guid(value: str) -> str:
    text = value.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    return text


_GUID_EXAMPLE = "abc8fb18-7559-4324-9921-a4b5015b4a1c"


def normalize_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve the `websiteId` alias and normalise the Website Id GUID (lower case, no braces)."""
    out = dict(settings)
    alias = out.pop("websiteId", None)
    key = out.get("apiKey")
    if key in (None, ""):
        key = alias
    elif alias not in (None, "") and (
        not isinstance(alias, str) or _bare_guid(alias).lower() != _bare_guid(str(key)).lower()
    ):
        raise ValueError(
            "apiKey: websiteId is an alias of apiKey; give one of them, not two different values"
        )
    if key in (None, ""):
        raise ValueError("apiKey: the Website Id (apiKey, or its alias websiteId) is required")
    if not isinstance(key, str):
        raise ValueError(f"apiKey: the Website Id must be a GUID string such as {_GUID_EXAMPLE}")
    text = _bare_guid(key)
    if not _GUID.fullmatch(text):
        shown = key if len(key) <= 60 else key[:57] + "..."
        raise ValueError(
            f"apiKey: the Website Id must be a GUID (8-4-4-4-12 hexadecimal digits) such as {_GUID_EXAMPLE},"
            f" got {shown!r}"
        )
    out["apiKey"] = text.lower()
    endpoint = out.get("endpoint")
    if endpoint is not None and not (isinstance(endpoint, str) and re.match(r"https?://[^\s/]+", endpoint)):
        raise ValueError(f"endpoint: must be an http(s) URL such as {DEFAULT_ENDPOINT}")
    return out


def classify(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """2xx delivered; 408, 429 and 5xx except 501 retried; every other status permanent."""
    if 200 <= status < 300:
        return Outcome(Verdict.DELIVERED, status)
    retryable = status in (408, 429) or (500 <= status <= 599 and status != 501)
    retry_after = None
    if retryable:
        retry_after = parse_retry_after(headers.get("retry-after") or headers.get("Retry-After"))
    return Outcome(Verdict.RETRY if retryable else Verdict.FAIL, status, f"HTTP {status}", retry_after)


_ACTIONS = {
    "identify": Action(
        key="identify",
        title="Identify",
        description="Create or update the visitor's Seg profile from identify traits.",
        fields=_IDENTIFY_FIELDS,
        build=build_identify,
        default_subscription='type = "identify"',
    ),
    "track": Action(
        key="track",
        title="Track",
        description="Send an e-commerce event (range view, product view, basket, order) to Seg.",
        fields=_TRACK_FIELDS,
        build=build_track,
    ),
    "page": Action(
        key="page",
        title="Page",
        description="Send a page view to Seg.",
        fields=_PAGE_FIELDS,
        build=build_page,
        default_subscription='type = "page"',
    ),
    "alias": Action(
        key="alias",
        title="Alias",
        description="Tell Seg a visitor changed email address (sent only between two email addresses).",
        fields=_ALIAS_FIELDS,
        build=build_alias,
        default_subscription='type = "alias"',
    ),
}


def _defaults(action: str, **extra: Any) -> dict[str, Any]:
    fields = _ACTIONS[action].fields
    return {**{k: f.default for k, f in fields.items() if f.default is not UNDEFINED}, **extra}


_PRESETS = (
    Preset("Identify", 'type = "identify"', "identify", _defaults("identify")),
    Preset(
        "Range View",
        'event = "Viewed Product Category" or event = "Product List Viewed"',
        "track",
        _defaults("track", segEvent="RangeView"),
    ),
    Preset(
        "Product View",
        'event = "Viewed Product" or event = "Product Viewed"',
        "track",
        _defaults("track", segEvent="ProductView"),
    ),
    Preset(
        "Added To Basket",
        'event = "Added Product" or event = "Product Added"',
        "track",
        _defaults("track", segEvent="AddedToBasket"),
    ),
    Preset(
        "Order Placed",
        'event = "Order Completed" or event = "Completed Order"',
        "track",
        _defaults("track", segEvent="OrderPlaced"),
    ),
    Preset("Page", 'type = "page"', "page", _defaults("page")),
    Preset("Alias", 'type = "alias"', "alias", _defaults("alias")),
)

DESTINATION = Destination(
    type="seg",
    name="Seg",
    endpoint=DEFAULT_ENDPOINT,
    settings={
        "apiKey": Field(
            label="Website Id",
            description="Your Seg Website Id, a GUID such as abc8fb18-7559-4324-9921-a4b5015b4a1c.",
        ),
        "websiteId": Field(label="Website Id (alias of apiKey)", hidden=True),
        "endpoint": Field(label="Endpoint", description="Seg's tracker base URL.", format="uri"),
    },
    actions=_ACTIONS,
    presets=_PRESETS,
    classify=classify,
    normalize_settings=normalize_settings,
    presets_enabled_by_default=True,
)
