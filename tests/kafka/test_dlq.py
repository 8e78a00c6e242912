"""Dead letters: the header contract, PII scrubbing, and never losing track of a write that failed."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kafka_helpers import read_all

from streamproc.errors import KafkaError
from streamproc.kafka.dlq import RECORD_OVERHEAD, DeadLetter, fit, iso_utc, record_size, scrub_pii
from streamproc.kafka.producer import AckedProducer, producer_config


def letter(**kw: Any) -> DeadLetter:
    base: dict[str, Any] = dict(
        topic="events",
        partition=3,
        offset=42,
        timestamp_ms=1_700_000_000_123,
        key=b"user-1",
        value=b'{"type":"track"}',
        original_headers=[("trace", b"abc"), ("empty", None)],
        error_type="PermanentError",
        error_message="HTTP 400",
        delivery_id="m1:tiktok:purchase",
        destination="tiktok",
        action="trackPaymentOfflineConversion",
        subscription="purchase",
        http_status=400,
        response_body='{"message":"bad email jane@example.com from 10.1.2.3"}',
        attempts=1,
        first_attempt_at=1_700_000_001.5,
        last_attempt_at=1_700_000_001.5,
    )
    base.update(kw)
    return DeadLetter(**base)


def test_headers_follow_the_contract_after_the_original_ones() -> None:
    headers = letter().headers()
    assert headers[:2] == [("trace", b"abc"), ("empty", None)]
    named = dict(headers[2:])
    assert named == {
        "streamproc.dlq.version": b"1",
        "streamproc.delivery_id": b"m1:tiktok:purchase",
        "streamproc.destination": b"tiktok",
        "streamproc.action": b"trackPaymentOfflineConversion",
        "streamproc.subscription": b"purchase",
        "streamproc.error.type": b"PermanentError",
        "streamproc.error.message": b"HTTP 400",
        "streamproc.http.status": b"400",
        "streamproc.response.body": b'{"message":"bad email [email] from [ip]"}',
        "streamproc.attempts": b"1",
        "streamproc.first_attempt_at": b"2023-11-14T22:13:21.500Z",
        "streamproc.last_attempt_at": b"2023-11-14T22:13:21.500Z",
        "streamproc.original.topic": b"events",
        "streamproc.original.partition": b"3",
        "streamproc.original.offset": b"42",
        "streamproc.original.timestamp": b"2023-11-14T22:13:20.123Z",
    }


def test_undecodable_message_has_no_delivery_headers() -> None:
    names = [
        k
        for k, _ in letter(
            error_type="DecodeError",
            error_message="not valid JSON",
            delivery_id=None,
            destination=None,
            action=None,
            subscription=None,
            http_status=None,
            response_body=None,
            attempts=0,
            first_attempt_at=None,
            last_attempt_at=None,
        ).headers()
    ]
    assert "streamproc.destination" not in names and "streamproc.http.status" not in names
    assert "streamproc.error.type" in names and "streamproc.original.offset" in names


def test_response_body_is_cut_to_2_kb() -> None:
    value = dict(letter(response_body="x" * 10_000).headers())["streamproc.response.body"]
    assert value is not None and len(value) == 2048


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail Jane.Doe+x@example.co.uk now", "mail [email] now"),
        ("from 192.168.1.20 and 2001:db8::ff00:42:8329", "from [ip] and [ip]"),
        ("call +1 (555) 123-4567 or 555-123-4567 or +447911123456", "call [phone] or [phone] or [phone]"),
        (
            "at 2026-11-23T13:56:05.123Z status 400 code 12345678",
            "at 2026-11-23T13:56:05.123Z status 400 code 12345678",
        ),
    ],
)
def test_pii_is_scrubbed(text: str, expected: str) -> None:
    assert scrub_pii(text) == expected


def test_iso_utc() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"


def test_producer_is_idempotent_and_waits_for_all_replicas() -> None:
    conf = producer_config("b:9092", {"security.protocol": "SSL", "enable.idempotence": "false"})
    assert conf["enable.idempotence"] is True and conf["acks"] == "all"
    assert conf["security.protocol"] == "SSL"


class _RefusingProducer:
    """A producer whose every write fails after being accepted (like a topic that is gone)."""

    def __init__(self) -> None:
        self.calls = 0

    def produce(self, topic: str, *, value: Any, key: Any, headers: Any, on_delivery: Any) -> None:
        self.calls += 1
        threading.Timer(0.01, on_delivery, args=("Broker: Unknown topic or partition", None)).start()

    def poll(self, timeout: float) -> int:
        threading.Event().wait(timeout)
        return 0

    def flush(self, timeout: float) -> int:
        return 0


async def test_a_dead_letter_that_cannot_be_written_raises_after_retries() -> None:
    refusing = _RefusingProducer()
    producer = AckedProducer("dlq", {}, attempts=3, backoff=0.01, producer=refusing)
    try:
        with pytest.raises(
            KafkaError,
            match=r"the dead letter of events\[3\]@42: could not write a dead letter to topic 'dlq' after 3",
        ):
            await producer.send(letter())
    finally:
        producer.close()
    assert refusing.calls == 3


@pytest.mark.kafka
async def test_dead_letter_is_written_with_bytes_unchanged(kafka_bootstrap: str, topic: Any) -> None:
    dlq = topic("dlq", partitions=1)
    producer = AckedProducer(dlq, producer_config(kafka_bootstrap, {}))
    value = b"\xff\x00 not utf-8"
    try:
        await producer.send(letter(value=value, key=None))
    finally:
        producer.close()
    [record] = read_all(kafka_bootstrap, dlq)
    assert record.value == value and record.key is None
    assert record.header("streamproc.error.type") == b"PermanentError"
    assert record.headers[0] == ("trace", b"abc")


def test_a_letter_that_fits_is_written_whole() -> None:
    whole = letter(value=b"x" * 1000)
    assert fit(whole, 10_000) is whole


def test_a_letter_too_large_for_its_topic_keeps_the_beginning_of_its_value_and_says_so() -> None:
    big = letter(value=b"v" * 50_000)
    cut = fit(big, 20_000)
    assert cut.value == b"v" * len(cut.value) and 15_000 < len(cut.value) < 20_000
    headers = dict(cut.headers())
    assert headers["streamproc.value_truncated"] == b"50000"
    assert (
        headers["streamproc.original.offset"] == b"42" and headers["streamproc.original.topic"] == b"events"
    )
    assert record_size(cut.key, cut.value, cut.headers()) + RECORD_OVERHEAD <= 20_000
    # Cut again (a dead letter of a dead letter), it keeps the first size it had.
    assert fit(cut, 10_000).value_truncated == 50_000


def test_original_headers_are_left_out_when_they_alone_are_too_large() -> None:
    heavy = letter(value=b"v" * 100, original_headers=[("a", b"h" * 5000), ("b", b"h" * 5000)])
    cut = fit(heavy, 4000)
    assert cut.original_headers == () and cut.dropped_headers == 2
    headers = dict(cut.headers())
    assert headers["streamproc.original.headers_dropped"] == b"2"
    assert headers["streamproc.value_truncated"] == b"100"
    assert record_size(cut.key, cut.value, cut.headers()) + RECORD_OVERHEAD <= 4000


@pytest.mark.kafka
def test_a_topic_whose_limit_cannot_be_read_counts_as_the_broker_default(
    kafka_bootstrap: str, topic: Any
) -> None:
    from structlog.testing import capture_logs

    from streamproc.kafka.admin import max_message_bytes

    small = topic("small", partitions=1, config={"max.message.bytes": "200000"})
    assert max_message_bytes(kafka_bootstrap, {}, [small], fallback=1) == 200000
    with capture_logs() as logs:
        found = max_message_bytes(kafka_bootstrap, {}, [small, "no-such-topic-here"], fallback=123_456)
    assert found == 123_456
    (line,) = [entry for entry in logs if entry["event"] == "topic_limit_unknown"]
    assert line["topic"] == "no-such-topic-here" and line["assumed_max_message_bytes"] == 123_456
