"""PII detection shared by log scrubbing and dead-letter bodies: what counts as an email, IP or phone."""

from __future__ import annotations

import pytest

from streamproc.pii import sub_pii


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
