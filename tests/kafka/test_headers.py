"""Consumed headers are read without trusting them: `streamproc.*` names written by a producer are
renamed when copied, values are decoded with replacement, and a header whose name cannot be read
is counted, never a crash (the real client's behaviour is in tests/integration/test_no_stall.py)."""

from __future__ import annotations

from typing import Any

from streamproc.kafka.dlq import DeadLetter, DeadLetterView, is_marker, marker_of
from streamproc.kafka.headers import read_headers, renamed, text


class Msg:
    def __init__(self, headers: Any, value: bytes | None = b"{}") -> None:
        self._headers = headers
        self._value = value

    def headers(self) -> Any:
        if isinstance(self._headers, BaseException):
            raise self._headers
        return self._headers

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_700_000_000_000


def test_streamproc_names_of_a_producer_are_renamed_when_copied() -> None:
    assert renamed([("streamproc.redriven", b"0:0"), ("trace", b"t"), ("xstreamproc.a", None)]) == [
        ("original.streamproc.redriven", b"0:0"),
        ("trace", b"t"),
        ("xstreamproc.a", None),
    ]
    letter = DeadLetter(
        topic="events",
        partition=1,
        offset=5,
        timestamp_ms=None,
        key=None,
        value=b"{}",
        original_headers=[("streamproc.destination", b"other"), ("streamproc.error.type", b"\xff")],
        error_type="DecodeError",
        error_message="bad",
        destination="seg",
        unreadable_headers=2,
    )
    headers = letter.headers()
    names = [k for k, _v in headers]
    assert names.count("streamproc.destination") == 1 and names.count("streamproc.error.type") == 1
    assert dict(headers)["streamproc.destination"] == b"seg"
    assert dict(headers)["original.streamproc.destination"] == b"other"
    assert dict(headers)["streamproc.original.headers_unreadable"] == b"2"


def test_values_are_decoded_with_replacement() -> None:
    assert text(b"\xff\xfeok") == "\ufffd\ufffdok"
    assert text(None) == ""
    view = DeadLetterView.of(Msg([("streamproc.error.type", b"\xc3\x28"), ("streamproc.attempts", b"\xff")]))
    assert view.error_type == "\ufffd("
    assert view.attempts == 0


def test_a_marker_whose_value_is_not_utf8_names_nothing() -> None:
    msg = Msg([("streamproc.redriven", b"\xff\xfe:\x80")], value=None)
    assert is_marker(msg)
    assert marker_of(msg) is None
    assert marker_of(Msg([("streamproc.redriven", b"3:14")], value=None)) == (3, 14)


def test_headers_that_keep_failing_to_read_are_counted_as_unreadable() -> None:
    assert read_headers(Msg([("a", b"1")])) == ([("a", b"1")], 0)
    assert read_headers(Msg(None)) == ([], 0)
    assert read_headers(Msg(SystemError("returned a result with an exception set"))) == ([], 1)


def test_a_retry_record_with_garbage_headers_is_read_without_crashing() -> None:
    from streamproc.kafka.dlq import RetryView, next_attempt_at

    msg = Msg(
        [
            ("streamproc.destination", b"seg"),
            ("streamproc.subscription", b"s"),
            ("streamproc.original.offset", b"\xff"),
            ("streamproc.original.partition", b"two"),
            ("streamproc.original.timestamp", b"yesterday"),
            ("streamproc.first_attempt_at", b"\xc3\x28"),
            ("streamproc.retry.parks", b"many"),
            ("streamproc.retry.next_attempt_at", b"soon"),
        ]
    )
    view = RetryView.of(msg)
    assert (view.original_offset, view.parks, view.first_attempt_at) == (-1, 1, None)
    origin = view.letter.origin()
    assert (origin.partition, origin.offset, origin.timestamp_ms) == (-1, -1, None)
    assert view.letter.redelivery() is not None
    assert next_attempt_at(msg) == 0.0


def _with_empty_name(value: bytes) -> tuple[Any, ...]:
    """A (NULL, value) pair as confluent-kafka leaves it for a name it could not decode."""
    import ctypes

    new = ctypes.pythonapi.PyTuple_New
    new.restype, new.argtypes = ctypes.py_object, [ctypes.c_ssize_t]
    pair = new(2)
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(value))
    # ob_item[1], after the object header and the size (what PyTuple_SET_ITEM writes).
    slot = id(pair) + ctypes.sizeof(ctypes.c_ssize_t) * 3 + ctypes.sizeof(ctypes.c_void_p)
    ctypes.c_void_p.from_address(slot).value = id(value)
    return pair  # type: ignore[no-any-return]


def test_a_name_left_empty_is_counted_whether_or_not_the_client_raised() -> None:
    # Only the client's first call raises (and not always: a dict lookup on the way can clear the
    # error): the list with the empty slot must be read with care every time.
    raw = [("trace", b"t"), _with_empty_name(b"v"), ("ok", None)]
    assert read_headers(Msg(raw)) == ([("trace", b"t"), ("ok", None)], 1)
