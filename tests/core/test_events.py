"""Event decoding and the keys read from events: messageId and the per-user ordering key."""

from __future__ import annotations

import pytest

from streamproc.core.events import decode_json, message_id, ordering_key
from streamproc.errors import DecodeError


def test_decode_an_object() -> None:
    assert decode_json(b'{"type":"track","properties":{"n":1.5}}') == {
        "type": "track",
        "properties": {"n": 1.5},
    }
    assert decode_json('{"a": "é"}') == {"a": "é"}
    assert decode_json(bytearray(b"{}")) == {}


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1,2]", "got an array"),
        (b'"track"', "got a string"),
        (b"null", "got null"),
        (b"3", "got a number"),
        (b"true", "got a boolean"),
    ],
)
def test_decode_refuses_what_is_not_an_event(raw: bytes, words: str) -> None:
    with pytest.raises(DecodeError, match=words):
        decode_json(raw)


def test_message_id() -> None:
    assert message_id({"messageId": "m-1"}) == "m-1"
    assert message_id({"messageId": 42}) == "42"
    assert message_id({"messageId": ""}) is None
    assert message_id({"messageId": True}) is None
    assert message_id({}) is None


def test_ordering_key_prefers_user_id() -> None:
    assert ordering_key({"userId": "u1", "anonymousId": "a1"}) == "u1"
    assert ordering_key({"userId": "", "anonymousId": "a1"}) == "a1"
    assert ordering_key({"userId": None, "anonymousId": "a1"}) == "a1"
    assert ordering_key({"userId": 7}) == "7"
    assert ordering_key({"anonymousId": {"x": 1}}) is None
    assert ordering_key({}) is None
