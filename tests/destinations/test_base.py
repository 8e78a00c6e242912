"""Response classification shared by every partner: what is retried, what is permanent."""

import email.utils

import pytest

from streamproc.destinations.base import Request, Verdict, classify_http, parse_retry_after


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    assert classify_http(status, {}, b"").verdict is Verdict.DELIVERED


@pytest.mark.parametrize("status", [408, 423, 429, 500, 502, 503, 504, 599])
def test_retryable_statuses(status: int) -> None:
    assert classify_http(status, {}, b"").verdict is Verdict.RETRY


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 501])
def test_permanent_statuses(status: int) -> None:
    assert classify_http(status, {}, b"").verdict is Verdict.FAIL


def test_retry_after_seconds_and_http_date() -> None:
    assert classify_http(503, {"retry-after": "7"}, b"").retry_after == 7.0
    when = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert parse_retry_after(when, now=1_000_000.0) == pytest.approx(30.0)
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") == 0.0


def test_request_shows_a_json_body_parsed() -> None:
    req = Request("POST", "https://p.example/x", {"content-type": "application/json"}, b'{"a":1}')
    assert req.to_json()["body"] == {"a": 1}
    assert Request("GET", "https://p.example/y", {}).to_json()["body"] is None
