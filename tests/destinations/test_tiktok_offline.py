"""TikTok Offline Conversions: exact requests, hashing, the PII rule, presets and response handling."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from spec_data import cases

from streamproc.destinations import tiktok_offline
from streamproc.destinations.base import BuildContext, Request, Verdict
from streamproc.destinations.runtime import CompiledAction, validate_settings
from streamproc.errors import PayloadValidationError
from streamproc.fql import parse
from streamproc.mapping import compile as compile_mapping

DEST = tiktok_offline.DESTINATION
URL = "https://business-api.tiktok.com/open_api/v1.3/event/track/"
NOW = datetime(2026, 1, 1, tzinfo=UTC)

# Segment's createTestEvent defaults (the destination tests' events are these, shallow-merged).
TEST_EVENT_DEFAULTS: dict[str, Any] = {
    "anonymousId": "anonId1234",
    "userId": "user1234",
    "type": "track",
    "event": "Test Event",
    "properties": {},
    "traits": {},
    "context": {
        "ip": "8.8.8.8",
        "library": {"name": "analytics.js", "version": "2.11.1"},
        "locale": "en-US",
        "location": {
            "city": "San Francisco",
            "country": "United States",
            "latitude": 40.2964197,
            "longitude": -76.9411617,
            "speed": 0,
        },
        "page": {
            "path": "/academy/",
            "referrer": "",
            "search": "",
            "title": "Analytics Academy",
            "url": "https://segment.com/academy/",
        },
        "timezone": "Europe/Amsterdam",
        "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 9_1 like Mac OS X) AppleWebKit/601.1.46 "
        "(KHTML, like Gecko) Version/9.0 Mobile/13B143 Safari/601.1",
    },
}


def _mapping(case_mapping: dict[str, Any], action: str) -> dict[str, Any]:
    mapping = dict(case_mapping)
    if mapping.pop("<default field mappings>", False):
        mapping = {**DEST.default_mapping(action), **mapping}
    return mapping


def _run(
    action: str, mapping: dict[str, Any], event: dict[str, Any], settings: dict[str, Any]
) -> list[Request]:
    ctx = BuildContext(
        settings=validate_settings(DEST, settings), endpoint=DEST.endpoint, event=event, now=NOW
    )
    payload = compile_mapping(mapping).resolve(event)
    built = CompiledAction(DEST, action).run(payload, ctx)
    assert isinstance(built, list)
    return built


def _assert_request(req: Request, expected: dict[str, Any], body: Any) -> None:
    assert req.method == expected.get("method", "POST")
    assert req.url == expected.get("url", URL)
    assert dict(req.headers) == expected.get(
        "headers",
        {
            "access-token": req.headers["access-token"],
            "content-type": "application/json",
            "user-agent": "Segment (Actions)",
        },
    )
    assert req.body is not None
    assert orjson.loads(req.body) == body


REQUEST_CASES = [c for c in cases("H") if "expected_request" in c or "expected_error" in c]


@pytest.mark.parametrize("case", REQUEST_CASES, ids=[c["id"] for c in REQUEST_CASES])
def test_segment_request_case(case: dict[str, Any]) -> None:
    mapping = _mapping(case["mapping"], case["action"])
    if "expected_error" in case:
        with pytest.raises(PayloadValidationError) as info:
            _run(case["action"], mapping, case["event"], case["settings"])
        assert info.value.message == case["expected_error"]["message"]
        assert info.value.status == 400
        return
    [req] = _run(case["action"], mapping, case["event"], case["settings"])
    expected = case["expected_request"]
    _assert_request(req, expected, expected["json_body"])


SNAPSHOT_CASES = [c for c in cases("H") if c["id"].startswith("TT-S-")]


@pytest.mark.parametrize("case", SNAPSHOT_CASES, ids=[c["id"] for c in SNAPSHOT_CASES])
def test_segment_snapshot_case(case: dict[str, Any]) -> None:
    event = {
        **TEST_EVENT_DEFAULTS,
        "messageId": "m",
        "timestamp": "2024-01-08T13:52:50.212Z",
        "properties": case["event_properties"],
    }
    [req] = _run(case["action"], case["mapping"], event, case["settings"])
    _assert_request(req, {}, case["expected_json_body"])
    assert req.headers["access-token"] == case["settings"]["accessToken"]


FORMAT_CASES = [c for c in cases("H") if "fn" in c]
FORMATTERS = {
    "formatEmails": tiktok_offline.format_emails,
    "formatPhones": tiktok_offline.format_phones,
    "formatUserIds": tiktok_offline.format_user_ids,
}


@pytest.mark.parametrize("case", FORMAT_CASES, ids=[c["id"] for c in FORMAT_CASES])
def test_segment_hashing_case(case: dict[str, Any]) -> None:
    assert FORMATTERS[case["fn"]](case["input"]) == case["expected"]


PRESET_CASES = [c for c in cases("H") if "preset" in c]


@pytest.mark.parametrize("case", PRESET_CASES, ids=[c["id"] for c in PRESET_CASES])
def test_segment_preset_case(case: dict[str, Any]) -> None:
    preset = DEST.preset(case["preset"])
    assert preset is not None
    assert preset.subscribe == case["subscribe"]
    if not parse(preset.subscribe).matches(case["event"]):
        assert case["expected_results"] == ["not subscribed"]
        return
    [req] = _run(preset.action, dict(preset.mapping), case["event"], case["settings"])
    _assert_request(req, {}, case["expected_json_body"])


def _event(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "X",
        "messageId": "m1",
        "timestamp": "2024-03-15T10:30:00Z",
        **overrides,
    }


SETTINGS = {"accessToken": "tok", "eventSetID": "ES1"}


def _body(mapping: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    [req] = _run(
        "reportOfflineEvent", {**DEST.default_mapping("reportOfflineEvent"), **mapping}, event, SETTINGS
    )
    assert req.body is not None
    data: dict[str, Any] = orjson.loads(req.body)["data"][0]
    return data


def test_event_time_falls_back_to_now_without_a_timestamp() -> None:
    data = _body({"event": "Contact"}, {"type": "track", "userId": "u"})
    assert data["event_time"] == int(NOW.timestamp())
    assert "event_id" not in data


def test_event_time_honours_offsets_and_date_only_timestamps() -> None:
    assert (
        _body({"event": "C"}, _event(userId="u", timestamp="2024-03-15T12:30:00+02:00"))["event_time"]
        == 1710498600
    )
    assert _body({"event": "C"}, _event(userId="u", timestamp="2024-03-15"))["event_time"] == 1710460800


def test_ttclid_comes_from_the_page_url_when_not_mapped() -> None:
    event = _event(
        userId="u", context={"page": {"url": "https://shop.example/p?x=1&ttclid=CLK%201&ttclid=2"}}
    )
    assert _body({"event": "C"}, event)["user"]["ttclid"] == "CLK 1"
    event = _event(
        userId="u", properties={"ttclid": "P"}, context={"page": {"url": "https://s.example/?ttclid=U"}}
    )
    assert _body({"event": "C"}, event)["user"]["ttclid"] == "P"
    event = _event(userId="u", context={"page": {"url": "not a url?ttclid=U"}})
    assert "ttclid" not in _body({"event": "C"}, event)["user"]


@pytest.mark.parametrize(
    ("url", "value"),
    [
        ("https://a.example/?ttclid=x+y", "x y"),
        ("https://a.example/?ttclid=", ""),
        ("https://a.example/#?ttclid=x", None),
        ("https://a b.example/?ttclid=x", None),
        ("/relative?ttclid=x", None),
        ("custom:thing?ttclid=z", "z"),
        ("https://a.example:99999/?ttclid=x", None),
    ],
)
def test_url_query_param_follows_the_url_standard(url: str, value: str | None) -> None:
    assert tiktok_offline.url_query_param(url, "ttclid") == value


def test_value_zero_is_sent_and_numbers_print_like_javascript() -> None:
    data = _body({"event": "C", "value": 0}, _event(userId="u"))
    assert data["properties"]["value"] == 0
    [req] = _run(
        "reportOfflineEvent",
        {"event": "C", "external_ids": "u", "value": "12.0", "contents": [{"price": 5.0, "quantity": "2"}]},
        _event(),
        SETTINGS,
    )
    assert req.body is not None
    assert b'"value":12}' in req.body
    assert b'"contents":[{"price":5,"quantity":2}]' in req.body


def test_identifiers_are_hashed_after_normalising() -> None:
    data = _body(
        {"event": "C"},
        _event(
            userId="User-ABC", properties={"email": " A@B.com", "phone": ["(555) 123-4567", "", 5551234567]}
        ),
    )
    sha = lambda s: hashlib.sha256(s.encode()).hexdigest()  # noqa: E731
    assert data["user"]["external_id"] == [sha("user-abc")]
    assert data["user"]["email"] == [sha(" a@b.com")]
    assert data["user"]["phone"] == [sha("+5551234567"), "", sha("+5551234567")]


def test_pii_requirement_error() -> None:
    with pytest.raises(PayloadValidationError) as info:
        _run("reportOfflineEvent", {"event": "Contact"}, _event(), SETTINGS)
    assert info.value.message == tiktok_offline.PII_REQUIRED
    assert (info.value.status, info.value.code, info.value.retryable) == (
        400,
        "PAYLOAD_VALIDATION_FAILED",
        False,
    )


def test_request_goes_to_the_configured_endpoint() -> None:
    ctx = BuildContext(settings=SETTINGS, endpoint="http://127.0.0.1:9999", event={}, now=NOW)
    [req] = CompiledAction(DEST, "reportOfflineEvent").run({"event": "C", "external_ids": ["u"]}, ctx)
    assert req.url == "http://127.0.0.1:9999/open_api/v1.3/event/track/"


def test_every_action_sends_the_same_request() -> None:
    event = _event(userId="u", properties={"email": "a@b.com", "value": 3})
    bodies = {
        key: _run(key, {**DEST.default_mapping(key), "event": "C"}, event, SETTINGS)[0].body
        for key in DEST.actions
    }
    assert len(set(bodies.values())) == 1
    assert set(bodies) == {
        "reportOfflineEvent",
        "trackPaymentOfflineConversion",
        "trackNonPaymentOfflineConversion",
    }


def test_fifteen_presets_all_on_report_offline_event() -> None:
    assert len(DEST.presets) == 15
    assert {p.action for p in DEST.presets} == {"reportOfflineEvent"}
    cart = DEST.preset("Add to Cart")
    assert cart is not None and cart.mapping["event"] == "AddToCart"
    assert cart.mapping["contents"]["@arrayPath"][0] == "$.properties"
    payment = DEST.preset("Complete Payment")
    assert payment is not None and payment.mapping["contents"]["@arrayPath"][0] == "$.properties.products"


def test_settings_are_required() -> None:
    with pytest.raises(PayloadValidationError, match="missing the required field 'eventSetID'"):
        validate_settings(DEST, {"accessToken": "t"})


def test_classify_follows_the_http_status_and_surfaces_tiktoks_code() -> None:
    ok = tiktok_offline.classify(200, {}, b'{"code":0,"message":"OK"}')
    assert ok.verdict is Verdict.DELIVERED and ok.message == ""
    envelope = tiktok_offline.classify(200, {}, b'{"code":40001,"message":"No permission"}')
    assert envelope.verdict is Verdict.DELIVERED
    assert envelope.message == "TikTok code 40001: No permission"
    assert tiktok_offline.classify(429, {"retry-after": "3"}, b"").verdict is Verdict.RETRY
    assert tiktok_offline.classify(400, {}, b'{"code":40002}').verdict is Verdict.FAIL
    assert tiktok_offline.classify(200, {}, b"not json").verdict is Verdict.DELIVERED
