"""StackAdapt Events & Conversions: forwards events to StackAdapt's pixel endpoint as one GET each."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from streamproc.core.fields import Field
from streamproc.core.js import UNDEFINED, FormTemplate, form_encode, json_bytes_exact, to_js_string
from streamproc.core.js import json_bytes as js_json
from streamproc.destinations.base import Action, BuildContext, Destination, Preset, Request, Skip, new_request

__all__ = ["DESTINATION", "args_json", "build_forward_event", "form_encode"]

ENDPOINT = "https://tags.srv.stackadapt.com"
SUBSCRIBE = 'type = "identify" or type = "page" or type = "screen" or type = "track"'


def _either(first: str, second: str) -> dict[str, Any]:
    """The mapping `first` when it exists, else `second` (Segment's @if/exists pattern)."""
    return {"@if": {"exists": {"@path": first}, "then": {"@path": first}, "else": {"@path": second}}}


SETTINGS: dict[str, Field] = {
    "pixelId": Field(
        label="Universal Pixel ID",
        description="Your StackAdapt Universal Pixel ID",
        required=True,
        secret=True,
    ),
}


def _product_fields() -> dict[str, Field]:
    return {
        "product_price": Field(label="Price", type="number", description="The price of the product."),
        "product_quantity": Field(
            label="Quantity", type="integer", description="The quantity of the product."
        ),
        "product_id": Field(label="Product ID", description="An identifier for the product."),
        "product_category": Field(label="Product Category", description="A category for the product."),
        "product_name": Field(label="Product Name", description="The name of the product."),
    }


FORWARD_EVENT_FIELDS: dict[str, Field] = {
    "user_id": Field(
        label="Segment User ID",
        description="The ID of the user in Segment",
        default=_either("$.userId", "$.anonymousId"),
    ),
    "event_type": Field(
        label="Event Type",
        description="The Segment event type (page, track, etc.)",
        default={"@path": "$.type"},
    ),
    "action": Field(
        label="Event Name",
        description="The event name (e.g. Order Completed)",
        default={"@path": "$.event"},
    ),
    "ip_fwd": Field(
        label="IP Address",
        description="IP address of the user",
        required=True,
        default={"@path": "$.context.ip"},
    ),
    "title": Field(
        label="Page Title",
        description="The title of the page where the event occurred.",
        default={"@path": "$.context.page.title"},
    ),
    "url": Field(
        label="URL",
        description="The URL of the page where the event occurred.",
        default={"@path": "$.context.page.url"},
    ),
    "referrer": Field(
        label="Referrer",
        description="The referrer of the page where the event occurred.",
        default={"@path": "$.context.page.referrer"},
    ),
    "utm_source": Field(
        label="UTM Source",
        description="UTM source parameter associated with event",
        format="text",
        default={"@path": "$.context.campaign.source"},
    ),
    "user_agent": Field(
        label="User Agent",
        description="User-Agent of the user",
        required=True,
        default={"@path": "$.context.userAgent"},
    ),
    "email": Field(
        label="Email",
        description="Email address of the individual who triggered the event.",
        format="email",
        default=_either("$.traits.email", "$.properties.email"),
    ),
    "phone": Field(
        label="Phone Number",
        description="Phone number of the individual who triggered the event",
        default=_either("$.traits.phone", "$.properties.phone"),
    ),
    "first_name": Field(
        label="First Name",
        description="First name of the individual who triggered the event.",
        default=_either("$.traits.first_name", "$.properties.first_name"),
    ),
    "last_name": Field(
        label="Last Name",
        description="Last name of the individual who triggered the event.",
        default=_either("$.traits.last_name", "$.properties.last_name"),
    ),
    "ecommerce_data": Field(
        label="Ecommerce Data",
        type="object",
        description="Additional ecommerce fields that are included in the pixel payload.",
        properties={
            "revenue": Field(
                label="Revenue", type="number", description="The revenue generated from the event."
            ),
            "order_id": Field(label="Order ID", description="The ID of the order."),
            **_product_fields(),
        },
        additional_properties=True,
        default={
            "revenue": {"@path": "$.properties.revenue"},
            "order_id": {"@path": "$.properties.order_id"},
            "product_price": {"@path": "$.properties.price"},
            "product_quantity": {"@path": "$.properties.quantity"},
            "product_id": {"@path": "$.properties.product_id"},
            "product_category": {"@path": "$.properties.category"},
            "product_name": {"@path": "$.properties.name"},
        },
    ),
    "ecommerce_products": Field(
        label="Products",
        type="object",
        description=(
            "The list of products associated with the event (for events with multiple products, "
            "such as Order Completed)"
        ),
        multiple=True,
        properties=_product_fields(),
        additional_properties=True,
        default={
            "@arrayPath": [
                "$.properties.products",
                {
                    "product_price": {"@path": "price"},
                    "product_quantity": {"@path": "quantity"},
                    "product_id": {"@path": "product_id"},
                    "product_category": {"@path": "category"},
                    "product_name": {"@path": "name"},
                },
            ]
        },
    ),
}


def args_json(args: dict[str, Any]) -> str:
    """`JSON.stringify(args)`."""
    return js_json(args).decode("utf-8")


def _text(value: Any) -> str:
    """`value ?? ''` as text."""
    if value.__class__ is str:
        return value
    if value is None or value is UNDEFINED:
        return ""
    return to_js_string(value)


def _or_empty(value: Any) -> Any:
    """`value ?? ''`."""
    return "" if value is None or value is UNDEFINED else value


@dataclass(frozen=True, slots=True)
class _Encoders:
    """URLSearchParams and JSON.stringify for `build_forward_event`: `_FAST` with their shortcuts,
    `_EXACT` (the action's `build_exact`) without; the requests are the same."""

    query: Callable[[tuple[str, ...]], str]
    json: Callable[[Any], bytes]


_QUERY = FormTemplate(("segment_ss", "event_type", "title", "url", "ref", "ip_fwd", "ua_fwd", "uid", "args"))
_FAST = _Encoders(query=_QUERY.encode, json=js_json)
_EXACT = _Encoders(query=_QUERY.encode_exact, json=json_bytes_exact)
_IDENTITY_KEYS = ("user_id", "first_name", "last_name", "email", "phone")


def build_forward_event(
    payload: Mapping[str, Any], ctx: BuildContext, encoders: _Encoders = _FAST
) -> list[Request] | Skip:
    """One GET to /saq_pxl with the event as query parameters; ecommerce data and identity in `args`."""
    get = payload.get
    args: dict[str, Any] = {}
    ecommerce = get("ecommerce_data")
    if isinstance(ecommerce, dict):
        args.update(ecommerce)
    products = get("ecommerce_products")
    if isinstance(products, list) and products:
        args["products"] = products
    args["action"] = _or_empty(get("action"))
    args["utm_source"] = _or_empty(get("utm_source"))
    for key in _IDENTITY_KEYS:
        value = get(key, UNDEFINED)
        if value is not UNDEFINED:
            args[key] = value
    ip = _text(get("ip_fwd"))
    user_agent = _text(get("user_agent"))
    query = (
        "1",  # segment_ss
        _text(get("event_type")),
        _text(get("title")),
        _text(get("url")),
        _text(get("referrer")),  # ref
        ip,
        user_agent,  # ua_fwd
        _text(ctx.settings.get("pixelId")),  # uid
        encoders.json(args).decode("utf-8"),  # args
    )
    url = f"{ctx.endpoint}/saq_pxl?{encoders.query(query)}"
    headers = {"content-type": "application/json", "x-forwarded-for": ip, "user-agent": user_agent}
    return [new_request("GET", url, headers, None)]


FORWARD_EVENT = Action(
    key="forwardEvent",
    title="Forward Event",
    description="Forward Segment events to StackAdapt for conversion tracking",
    fields=FORWARD_EVENT_FIELDS,
    build=build_forward_event,
    build_exact=partial(build_forward_event, encoders=_EXACT),
    default_subscription=SUBSCRIBE,
)

DESTINATION = Destination(
    type="stackadapt",
    name="StackAdapt Events & Conversions",
    integration_names=(
        "StackAdapt Cloud (Actions)",
        "StackAdapt - Actions",
        "StackAdapt",
        "StackAdapt Events & Conversions",
    ),
    endpoint=ENDPOINT,
    settings=SETTINGS,
    actions={"forwardEvent": FORWARD_EVENT},
    presets=(
        Preset(
            name="Forward Event",
            subscribe=SUBSCRIBE,
            action="forwardEvent",
            mapping={k: f.default for k, f in FORWARD_EVENT_FIELDS.items() if f.default is not UNDEFINED},
        ),
    ),
)
