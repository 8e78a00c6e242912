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


def _envelope(code: Any, message: str = "m") -> bytes:
    return orjson.dumps({"code": code, "message": message, "request_id": "r", "data": {}})


def test_envelope_code_zero_is_delivered() -> None:
    ok = tiktok_offline.classify(200, {}, _envelope(0, "OK"))
    assert (ok.verdict, ok.message, ok.partial) == (Verdict.DELIVERED, "", False)
    assert tiktok_offline.classify(200, {}, b"not json").verdict is Verdict.DELIVERED
    assert tiktok_offline.classify(200, {}, b"").verdict is Verdict.DELIVERED
    assert tiktok_offline.classify(200, {}, b'{"message":"no code"}').verdict is Verdict.DELIVERED


def test_envelope_partial_success_is_delivered_and_marked() -> None:
    outcome = tiktok_offline.classify(200, {}, _envelope(20001, "Partial success"))
    assert (outcome.verdict, outcome.partial) == (Verdict.DELIVERED, True)
    assert outcome.message == "TikTok code 20001: Partial success"


@pytest.mark.parametrize("code", [40100, 40016, 40133, 40132, "40100"])
def test_envelope_too_frequent_codes_are_retried_as_throttling(code: Any) -> None:
    outcome = tiktok_offline.classify(200, {}, _envelope(code, "Too many requests"))
    assert outcome.verdict is Verdict.RETRY
    assert outcome.message == f"TikTok code {code}: Too many requests (throttled)"


@pytest.mark.parametrize("code", [50000, 50002, 60001])
def test_envelope_server_codes_are_retried(code: int) -> None:
    outcome = tiktok_offline.classify(200, {}, _envelope(code, "System error"))
    assert (outcome.verdict, outcome.status) == (Verdict.RETRY, 200)
    assert outcome.message == f"TikTok code {code}: System error"


@pytest.mark.parametrize("code", [40001, 40002, 40105, 41000, 1])
def test_other_envelope_codes_are_permanent_with_code_and_message(code: int) -> None:
    outcome = tiktok_offline.classify(200, {}, _envelope(code, "No permission to operate"))
    assert (outcome.verdict, outcome.status) == (Verdict.FAIL, 200)
    assert outcome.message == f"TikTok code {code}: No permission to operate"


def test_the_http_status_decides_first_and_the_code_is_named() -> None:
    throttled = tiktok_offline.classify(429, {"retry-after": "3"}, _envelope(40100, "Too many"))
    assert (throttled.verdict, throttled.retry_after) == (Verdict.RETRY, 3.0)
    assert throttled.message == "HTTP 429, TikTok code 40100: Too many"
    # A 4xx is permanent even with a code that would be retried on a 200.
    assert tiktok_offline.classify(400, {}, _envelope(50000)).verdict is Verdict.FAIL
    assert tiktok_offline.classify(503, {}, b"").verdict is Verdict.RETRY


# ---------------------------------------------------------------------------------------------
# Batching


def _requests(*events: dict[str, Any], settings: dict[str, Any] = SETTINGS) -> list[Request]:
    mapping = {**DEST.default_mapping("reportOfflineEvent"), "event": "Purchase"}
    out = []
    for event in events:
        out.extend(_run("reportOfflineEvent", mapping, event, settings))
    return out


def _users(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [_event(messageId=f"m{i}", userId=f"u{i}", **extra) for i in range(n)]


def test_combined_request_holds_each_event_exactly_as_sent_alone() -> None:
    singles = _requests(*_users(3, properties={"value": 1.5, "note": ',"data":[x]}'}))
    keys = [tiktok_offline.batch_key(r) for r in singles]
    assert all(k is not None for k in keys) and len({k[0] for k in keys if k}) == 1
    combined = tiktok_offline.combine_events(singles)
    assert (combined.method, combined.url, combined.headers) == (
        singles[0].method,
        singles[0].url,
        singles[0].headers,
    )
    assert combined.body is not None
    body = orjson.loads(combined.body)
    firsts = [orjson.loads(r.body or b"") for r in singles]
    assert body["data"] == [f["data"][0] for f in firsts]
    assert {k: v for k, v in body.items() if k != "data"} == {
        k: v for k, v in firsts[0].items() if k != "data"
    }
    # The bytes of each event are spliced, not re-encoded.
    for single in singles:
        assert single.body is not None
        assert single.body[single.body.index(b'"data":[') + 8 : -2] in combined.body
    # The sizes batch_key reports add up to the combined body.
    assert len(combined.body) == len(singles[0].body or b"") + sum(k[1] for k in keys[1:] if k)


def test_a_batch_of_one_is_the_single_request_unchanged() -> None:
    [single] = _requests(_event(userId="u"))
    assert tiktok_offline.combine_events([single]) is single


def test_batch_groups_differ_by_access_token_and_event_set() -> None:
    event = _event(userId="u")
    [a] = _requests(event)
    [b] = _requests(event, settings={"accessToken": "other", "eventSetID": "ES1"})
    [c] = _requests(event, settings={"accessToken": "tok", "eventSetID": "ES2"})
    keys = [tiktok_offline.batch_key(r) for r in (a, b, c)]
    assert len({k[0] for k in keys if k}) == 3


def test_test_events_go_alone() -> None:
    mapping = {**DEST.default_mapping("reportOfflineEvent"), "event": "Purchase", "test_event_code": "T1"}
    [req] = _run("reportOfflineEvent", mapping, _event(userId="u"), SETTINGS)
    assert tiktok_offline.batch_key(req) is None
    # A property value that merely mentions the key is escaped inside its string and still batches.
    [plain] = _requests(_event(userId="u", properties={"query": '"test_event_code":"x"'}))
    assert tiktok_offline.batch_key(plain) is not None


def test_every_action_can_batch_up_to_tiktoks_limit() -> None:
    for action in DEST.actions.values():
        assert action.batching is not None and action.batching.max_events == 1000
