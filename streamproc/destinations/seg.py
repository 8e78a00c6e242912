"""Seg, the e-commerce email-marketing tracker: settings, actions, presets and request building."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from streamproc.core.fields import Field
from streamproc.core.js import UNDEFINED
from streamproc.destinations.base import (
    Action,
    BuildContext,
    Destination,
    Preset,
    Request,
    Skip,
    http_classifier,
    new_request,
)
from streamproc.errors import SettingsError

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


def _pick(
    out: dict[str, Any], source: Mapping[str, Any], table: tuple[tuple[str, str], ...]
) -> dict[str, Any]:
    """Copy `source[in_key]` to `out[out_key]` where the value is present; missing keys are omitted."""
    get = source.get
    for out_key, in_key in table:
        value = get(in_key)
        if value is not None and value is not UNDEFINED:
            out[out_key] = value
    return out


def _either(source: Mapping[str, Any], first: str, second: str) -> Any:
    value = source.get(first)
    if value is None or value == "":
        value = source.get(second)
    return value


def _list_or_single(source: Mapping[str, Any], many: str, one: str) -> Any:
    values = source.get(many)
    if values is not None:
        return values
    value = source.get(one)
    return None if value is None else [value]


_PRODUCT = (
    ("Sku", "sku"),
    ("Name", "name"),
    ("Price", "price"),
    ("OriginalPrice", "original_price"),
    ("Quantity", "quantity"),
    ("ImageUrl", "image_url"),
    ("VariantName", "variant_name"),
)


def _product(item: Any) -> dict[str, Any]:
    if type(item) is not dict and not isinstance(item, Mapping):
        return {}
    product: dict[str, Any] = {}
    product_id = _either(item, "id", "product_id")
    if product_id is not None:
        product["Id"] = product_id
    _pick(product, item, _PRODUCT)
    categories = _list_or_single(item, "categories", "category")
    if categories is not None:
        product["Categories"] = categories
    brands = item.get("brands")
    if brands is not None:
        product["Brands"] = brands
    return product


def _range_view(props: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    categories = _list_or_single(props, "categories", "category")
    if categories is not None:
        out["Categories"] = categories
    brands = props.get("brands")
    if brands is not None:
        out["Brands"] = brands
    return out


def _added_to_basket(props: Mapping[str, Any]) -> dict[str, Any]:
    line = _product(props)
    line["Added"] = True
    return {"OrderLines": [line]}


_ORDER = (
    ("Total", "total"),
    ("DeliveryRevenue", "shipping"),
    ("Tax", "tax"),
    ("Discount", "discount"),
    ("Coupon", "coupon"),
    ("Currency", "currency"),
    ("Repeat", "repeat"),
    ("DeliveryMethod", "delivery_method"),
    ("_p", "_p"),
)


def _order_placed(props: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    order_id = _either(props, "orderId", "order_id")
    if order_id is not None:
        out["Id"] = order_id
    revenue = _either(props, "revenue", "total")
    if revenue is not None:
        out["Revenue"] = revenue
    _pick(out, props, _ORDER)
    products = props.get("products")
    out["OrderLines"] = [_product(p) for p in products] if isinstance(products, list) else []
    return out


_PROPERTIES_BUILDERS = {
    "RangeView": _range_view,
    "ProductView": _product,
    "AddedToBasket": _added_to_basket,
    "OrderPlaced": _order_placed,
}

_COMMON_KEYS = (("MessageId", "messageId"), ("Timestamp", "timestamp"), ("Id", "id"))
_IDENTIFY_KEYS = (
    *_COMMON_KEYS,
    ("Email", "email"),
    ("FirstName", "firstName"),
    ("LastName", "lastName"),
    ("CountryCode", "countryCode"),
    ("Title", "title"),
    ("Gender", "gender"),
    ("DateOfBirth", "dateOfBirth"),
    ("Traits", "traits"),
)
_TRACK_KEYS = (*_COMMON_KEYS, ("Email", "email"))
_PAGE_KEYS = (*_COMMON_KEYS, ("Url", "url"), ("Title", "title"), ("Referrer", "referrer"), ("Email", "email"))


def _post(ctx: BuildContext, operation: str, body: Mapping[str, Any]) -> list[Request]:
    url = f"{ctx.endpoint.rstrip('/')}/{_PATH_PREFIX}/{ctx.settings['apiKey']}/{operation}"
    return [new_request("POST", url, _HEADERS, orjson.dumps(body))]


def build_identify(payload: Mapping[str, Any], ctx: BuildContext) -> list[Request] | Skip:
    return _post(ctx, "identify", _pick({}, payload, _IDENTIFY_KEYS))


def build_track(payload: Mapping[str, Any], ctx: BuildContext) -> list[Request] | Skip:
    seg_event = payload["segEvent"]
    body = _pick({"Event": seg_event}, payload, _TRACK_KEYS)
    props = payload.get("properties")
    if type(props) is not dict and not isinstance(props, Mapping):
        props = {}
    body["Properties"] = _PROPERTIES_BUILDERS[seg_event](props)
    return _post(ctx, "track", body)


def build_page(payload: Mapping[str, Any], ctx: BuildContext) -> list[Request] | Skip:
    return _post(ctx, "page", _pick({}, payload, _PAGE_KEYS))


def _is_email(value: Any) -> bool:
    return isinstance(value, str) and _EMAIL.fullmatch(value) is not None


def build_alias(payload: Mapping[str, Any], ctx: BuildContext) -> list[Request] | Skip:
    previous, new = payload.get("previousId"), payload.get("userId")
    if not (_is_email(previous) and _is_email(new)):
        # Seg ignores aliases between anything but two email addresses.
        return Skip("alias is sent to Seg only when previousId and userId are both email addresses")
    body = _pick({}, payload, _COMMON_KEYS)
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
        raise SettingsError(
            "apiKey", "websiteId is an alias of apiKey; give one of them, not two different values"
        )
    if key in (None, ""):
        raise SettingsError("apiKey", "the Website Id (apiKey, or its alias websiteId) is required")
    if not isinstance(key, str):
        raise SettingsError("apiKey", f"the Website Id must be a GUID string such as {_GUID_EXAMPLE}")
    text = _bare_guid(key)
    if not _GUID.fullmatch(text):
        shown = key if len(key) <= 60 else key[:57] + "..."
        raise SettingsError(
            "apiKey",
            f"the Website Id must be a GUID (8-4-4-4-12 hexadecimal digits) such as {_GUID_EXAMPLE},"
            f" got {shown!r}",
        )
    out["apiKey"] = text.lower()
    endpoint = out.get("endpoint")
    if endpoint is not None and not (isinstance(endpoint, str) and re.match(r"https?://[^\s/]+", endpoint)):
        raise SettingsError("endpoint", f"must be an http(s) URL such as {DEFAULT_ENDPOINT}")
    return out


classify = http_classifier(retryable_4xx=frozenset({408, 429}))
"""2xx delivered; 408, 429 and 5xx except 501 retried; every other status permanent. Seg is no
Segment destination: among client errors its contract retries only 408 and 429 (423 is permanent)."""


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
    integration_names=("Seg",),
    endpoint=DEFAULT_ENDPOINT,
    settings={
        "apiKey": Field(
            label="Website Id",
            description="Your Seg Website Id, a GUID such as abc8fb18-7559-4324-9921-a4b5015b4a1c.",
            secret=True,
        ),
        "websiteId": Field(
            label="Website Id (alias of apiKey)", hidden=True, extra={"aliasOf": "apiKey"}, secret=True
        ),
        "endpoint": Field(label="Endpoint", description="Seg's tracker base URL.", format="uri"),
    },
    actions=_ACTIONS,
    presets=_PRESETS,
    classify=classify,
    normalize_settings=normalize_settings,
    presets_enabled_by_default=True,
)
