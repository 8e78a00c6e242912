"""StackAdapt Events & Conversions: forwards events to StackAdapt's pixel endpoint as one GET each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamproc.core.fields import Field
from streamproc.core.js import UNDEFINED, form_bytes, form_component, form_encode, to_js_string
from streamproc.core.js import json_bytes as js_json
from streamproc.destinations.base import Action, BuildContext, Destination, Preset, Request, Skip

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


def _or_empty(value: Any) -> str:
    """`value ?? ''` as a query value."""
    if value is None or value is UNDEFINED:
        return ""
    return to_js_string(value)


def _text(value: Any) -> str:
    """`value ?? ''` as text."""
    return value if value.__class__ is str else _or_empty(value)


def _query_value(value: Any) -> str:
    """`value ?? ''`, form-encoded."""
    text = value if value.__class__ is str else _or_empty(value)
    return form_component(text)


_IDENTITY_KEYS = ("user_id", "first_name", "last_name", "email", "phone")


def build_forward_event(payload: Mapping[str, Any], ctx: BuildContext) -> list[Request] | Skip:
    """One GET to /saq_pxl with the event as query parameters; ecommerce data and identity in `args`."""
    get = payload.get
    args: dict[str, Any] = {}
    ecommerce = get("ecommerce_data")
    if isinstance(ecommerce, dict):
        args.update(ecommerce)
    products = get("ecommerce_products")
    if isinstance(products, list) and products:
        args["products"] = products
    action = get("action")
    args["action"] = "" if action is None else action
    utm_source = get("utm_source")
    args["utm_source"] = "" if utm_source is None else utm_source
    for key in _IDENTITY_KEYS:
        value = get(key, UNDEFINED)
        if value is not UNDEFINED:
            args[key] = value
    ip = get("ip_fwd")
    if ip.__class__ is not str:
        ip = _or_empty(ip)
    user_agent = get("user_agent")
    if user_agent.__class__ is not str:
        user_agent = _or_empty(user_agent)
    args_bytes = js_json(args)
    event_type = get("event_type")
    title = get("title")
    page_url = get("url")
    referrer = get("referrer")
    pixel_id = ctx.settings.get("pixelId")
    if args_bytes.isascii():
        # The whole query escaped in one pass: NUL stands for "&" and U+0001 for "=", so their
        # escapes "%00" and "%01" mark where the separators go (checked to occur nowhere else).
        raw = (
            f"segment_ss\x011\x00event_type\x01{_text(event_type)}\x00title\x01{_text(title)}"
            f"\x00url\x01{_text(page_url)}\x00ref\x01{_text(referrer)}\x00ip_fwd\x01{ip}"
            f"\x00ua_fwd\x01{user_agent}\x00uid\x01{_text(pixel_id)}\x00args\x01{args_bytes.decode('ascii')}"
        )
        if raw.isascii() and raw.count("\x00") == 8 and raw.count("\x01") == 9:
            query = form_bytes(raw.encode("ascii")).replace(b"%00", b"&").replace(b"%01", b"=")
            url = f"{ctx.endpoint}/saq_pxl?{query.decode('ascii')}"
            headers = {"content-type": "application/json", "x-forwarded-for": ip, "user-agent": user_agent}
            return [Request("GET", url, headers, None)]
    encoded_args = form_component(args_bytes.decode("utf-8"))
    # The same text as form_encode over the nine pairs; the keys need no escaping.
    url = (
        f"{ctx.endpoint}/saq_pxl?segment_ss=1&event_type={_query_value(event_type)}"
        f"&title={_query_value(title)}&url={_query_value(page_url)}"
        f"&ref={_query_value(referrer)}&ip_fwd={_query_value(ip)}&ua_fwd={_query_value(user_agent)}"
        f"&uid={_query_value(pixel_id)}&args={encoded_args}"
    )
    headers = {"content-type": "application/json", "x-forwarded-for": ip, "user-agent": user_agent}
    return [Request("GET", url, headers, None)]


FORWARD_EVENT = Action(
    key="forwardEvent",
    title="Forward Event",
    description="Forward Segment events to StackAdapt for conversion tracking",
    fields=FORWARD_EVENT_FIELDS,
    build=build_forward_event,
    default_subscription=SUBSCRIBE,
)

DESTINATION = Destination(
    type="stackadapt",
    name="StackAdapt Events & Conversions",
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
