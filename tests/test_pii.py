"""PII detection shared by log scrubbing and dead-letter bodies: what counts as an email, IP or phone."""

from __future__ import annotations

import signal

import pytest

from streamproc.pii import kind_of_key, sub_pii


def mark(kind: str, _: str) -> str:
    return f"<{kind}>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("to a.b+c@mail.example.com now", "to <email> now"),
        ("from 10.0.0.7 and fe80::1ff:fe23:4567:890a", "from <ip> and <ip>"),
        ("at 13:56:05 on 2026-11-23, build 1.2.3.4567, host 999.1.1.1", None),
        ("call +44 7911 123456 or (415) 555-0100", "call <phone> or <phone>"),
    ],
)
def test_each_kind_is_found_and_ordinary_values_are_not(text: str, expected: str | None) -> None:
    assert sub_pii(text, mark) == (text if expected is None else expected)


def test_local_addresses_can_be_kept() -> None:
    assert sub_pii("bind 127.0.0.1 or 0.0.0.0, peer ::1", mark, keep_local=True) == (
        "bind 127.0.0.1 or 0.0.0.0, peer ::1"
    )
    assert sub_pii("bind 127.0.0.1", mark) == "bind <ip>"


def test_bare_digit_runs_are_phones_only_when_asked() -> None:
    assert sub_pii("offset 4155550100", mark) == "offset 4155550100"
    assert sub_pii("phone 4155550100", mark, digit_runs=True) == "phone <phone>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # URL-encoded: the at sign as %40 (and a plus as %2B), inside a query or a JSON query value.
        ("?email=jane.doe%40example.com&x=1", "?email=<email>&x=1"),
        ("?e=jane%2Bwork%40example.com", "?e=<email>"),
        ("args=%7B%22email%22%3A%22jane%40example.com%22%7D", "args=%7B%22email%22%3A%22<email>%22%7D"),
        # Letters of any script.
        ("from josé.müller@exämple.de today", "from <email> today"),
        ("to 用户@例子.广告", "to <email>"),
    ],
)
def test_encoded_and_non_ascii_emails_are_found(text: str, expected: str) -> None:
    assert sub_pii(text, mark) == expected


@pytest.mark.parametrize(
    "text",
    [
        "commit 4f2a9c1 on 2026-11-23T12:00:00Z",
        "offset=1234567890&partition=3",
        "id%3D42%26n%3D7",
        "50%40off",
    ],
)
def test_ordinary_encoded_text_is_left_alone(text: str) -> None:
    assert sub_pii(text, mark) == text


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("email", "email"),
        ("customer_email", "email"),
        ("phone", "phone"),
        ("mobile_number", "phone"),
        ("customerPhone", "phone"),
        ("tel", "phone"),
        ("ip", "ip"),
        ("ip_fwd", "ip"),
        ("x-forwarded-for", "ip"),
        ("clientIpAddress", "ip"),
    ],
)
def test_keys_that_hold_personal_data(key: str, kind: str) -> None:
    assert kind_of_key(key) == kind


@pytest.mark.parametrize(
    "key", ["zip", "tip", "hotel", "shipping", "telemetry", "order_id", "offset", "description"]
)
def test_ordinary_keys_hold_no_personal_data(key: str) -> None:
    assert kind_of_key(key) is None


def test_long_runs_are_searched_in_linear_time() -> None:
    # Trying every position inside a run for an address would take minutes here (quadratic).
    text = "a" * 300_000 + " write to x@y.org " + "%2B" * 100_000 + "@" + "b." * 100_000

    def too_slow(*_: object) -> None:
        raise TimeoutError("sub_pii took more than 10 s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(10)
    try:
        result = sub_pii(text, mark)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert "write to <email>" in result and "x@y.org" not in result
