"""Logging: JSON lines with context, no secrets or raw PII in any line, repeated errors rate-limited."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pytest
import structlog
from manual_clock import ManualClock

from streamproc.logging import (
    RepeatLimiter,
    Scrubber,
    configure_logging,
    flush_suppressed,
    get_logger,
    register_secrets,
)


@dataclass(frozen=True)
class LogConfig:
    format: str = "json"
    level: str = "info"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


@pytest.fixture
def out(clock: ManualClock) -> Iterator[io.StringIO]:
    buf = io.StringIO()
    configure_logging(LogConfig(), stream=buf, limiter=RepeatLimiter(burst=3, window=60, clock=clock))
    yield buf
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def lines(buf: io.StringIO) -> list[dict]:
    return [orjson.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_level_time_and_bound_context(out: io.StringIO) -> None:
    with structlog.contextvars.bound_contextvars(topic="events", partition=3, offset=42):
        get_logger("streamproc.test", destination="tiktok-1").warning("delivery failed", status=503)
    (line,) = lines(out)
    assert line["event"] == "delivery failed"
    assert line["level"] == "warning"
    assert line["topic"] == "events" and line["partition"] == 3 and line["offset"] == 42
    assert line["destination"] == "tiktok-1"
    assert line["status"] == 503
    assert "timestamp" in line


def test_level_filters_lower_levels() -> None:
    buf = io.StringIO()
    configure_logging(LogConfig(level="warning"), stream=buf)
    log = get_logger()
    log.info("hidden")
    log.warning("shown")
    assert [entry["event"] for entry in lines(buf)] == ["shown"]


def test_secrets_under_secret_keys_are_redacted(out: io.StringIO) -> None:
    get_logger().info(
        "request",
        headers={"authorization": "Bearer abc.def.ghi", "Access-Token": "tt-secret-1", "accept": "json"},
        settings={"apiKey": "k-123456", "accessToken": "a-987654", "password": "hunter22", "pixel": "p1"},
        client_secret="s3cr3t",
    )
    text = out.getvalue()
    for secret in ("abc.def.ghi", "tt-secret-1", "k-123456", "a-987654", "hunter22", "s3cr3t"):
        assert secret not in text
    (line,) = lines(out)
    assert line["headers"]["accept"] == "json"
    assert line["settings"]["pixel"] == "p1"


def test_pii_inside_free_text_is_hashed_consistently(out: io.StringIO) -> None:
    log = get_logger()
    log.error("bad payload for jane.doe@example.com from 203.0.113.77, phone +1 415 555 0100")
    log.error("again jane.doe@example.com via 2001:db8::8a2e:370:7334 call (415) 555-0199")
    text = out.getvalue()
    for pii in (
        "jane.doe@example.com",
        "203.0.113.77",
        "+1 415 555 0100",
        "2001:db8::8a2e:370:7334",
        "555-0199",
    ):
        assert pii not in text
    first, second = lines(out)
    email_hash = first["event"].split()[3]
    assert email_hash.startswith("<email:")
    assert email_hash in second["event"]


def test_pii_keys_are_hashed_whatever_their_format(out: io.StringIO) -> None:
    get_logger().info("event", traits={"email": "x@y.z", "phone": "5550100", "name": "N"}, ip="10.1.2.3")
    (line,) = lines(out)
    assert line["traits"]["email"].startswith("<email:")
    assert line["traits"]["phone"].startswith("<phone:")
    assert line["ip"].startswith("<ip:")
    assert line["traits"]["name"] == "N"


def test_tokens_in_urls_and_registered_secrets_are_redacted(out: io.StringIO) -> None:
    register_secrets(["wk_live_0123456789"])
    get_logger().warning(
        "call failed",
        url="https://partner.test/track?access_token=abc123&x=1",
        detail="config value wk_live_0123456789 rejected",
        jwt="eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.c2lnbmF0dXJlMTIz",
    )
    text = out.getvalue()
    assert "abc123" not in text and "wk_live_0123456789" not in text and "eyJzdWIiOiIxMjM0" not in text
    assert "x=1" in text


def test_ordinary_values_are_left_alone(out: io.StringIO) -> None:
    get_logger().info(
        "committed",
        offset=1234567890,
        at="2026-11-23T12:00:00.000Z",
        version="1.2.3",
        broker="127.0.0.1:9092",
    )
    (line,) = lines(out)
    assert line["offset"] == 1234567890
    assert line["at"] == "2026-11-23T12:00:00.000Z"
    assert line["version"] == "1.2.3"
    assert line["broker"] == "127.0.0.1:9092"


def test_exceptions_are_scrubbed_too(out: io.StringIO) -> None:
    try:
        raise ValueError("cannot send to bob@example.org")
    except ValueError:
        get_logger().exception("crashed")
    text = out.getvalue()
    assert "bob@example.org" not in text
    assert "ValueError" in text


def test_standard_library_loggers_are_scrubbed(out: io.StringIO) -> None:
    logging.getLogger("aiohttp.server").warning("client 198.51.100.4 sent token=zzz999")
    text = out.getvalue()
    assert "198.51.100.4" not in text and "zzz999" not in text
    assert lines(out)[0]["logger"] == "aiohttp.server"


def test_repeated_errors_are_rate_limited_then_summarised(out: io.StringIO, clock: ManualClock) -> None:
    log = get_logger()
    for _ in range(10):
        log.error("partner unreachable", error_type="RetryableError", destination="seg-1")
    log.error("other failure")
    assert [entry["event"] for entry in lines(out)] == ["partner unreachable"] * 3 + ["other failure"]

    clock.now += 61
    assert flush_suppressed() == 1
    summary = lines(out)[-1]
    assert summary["event"] == "repeated log lines suppressed"
    assert summary["suppressed"] == 7
    assert summary["message"] == "partner unreachable"
    log.error("partner unreachable", error_type="RetryableError")
    assert lines(out)[-1]["event"] == "partner unreachable"


def test_info_lines_are_never_rate_limited(out: io.StringIO) -> None:
    for _ in range(10):
        get_logger().info("progress")
    assert len(lines(out)) == 10


def test_console_format_renders_text() -> None:
    buf = io.StringIO()
    configure_logging(LogConfig(format="console"), stream=buf)
    get_logger().info("hello", email="a@b.cd")
    text = buf.getvalue()
    assert "hello" in text and "a@b.cd" not in text


def test_auto_format_is_json_when_not_a_terminal() -> None:
    buf = io.StringIO()
    configure_logging(LogConfig(format="auto"), stream=buf)
    get_logger().info("hello")
    assert orjson.loads(buf.getvalue())["event"] == "hello"


def test_scrubber_hash_is_keyed() -> None:
    a, b = Scrubber(hash_key=b"k1"), Scrubber(hash_key=b"k2")
    assert a.mask("email", "x@y.z") == a.mask("email", "X@Y.Z ")
    assert a.mask("email", "x@y.z") != b.mask("email", "x@y.z")


def test_config_secrets_finds_password_fields_and_secret_names() -> None:
    from types import SimpleNamespace

    from streamproc.logging import config_secrets

    config = SimpleNamespace(
        kafka=SimpleNamespace(client={"sasl.password": "kafka-pw-1", "client.id": "worker"}),
        destinations=(
            SimpleNamespace(
                type="tiktok-offline-conversions", settings={"accessToken": "tt-0001", "eventSetID": "42"}
            ),
            SimpleNamespace(type="seg", settings={"apiKey": "seg-key-1"}),
        ),
    )
    assert sorted(config_secrets(config)) == ["kafka-pw-1", "seg-key-1", "tt-0001"]


def test_personal_data_the_first_scrubber_missed_is_masked(out: io.StringIO) -> None:
    get_logger().warning(
        "partner refused",
        url="https://tags.example/px?email=jane.doe%40example.com&args=%7B%22e%22%3A%22bo%40x.org%22%7D",
        detail="contact josé.müller@exämple.de",
        order={"customer_phone": "4155550100", "mobile_number": 4155550101, "tel": "4155550102"},
        registry="http://deploy:hunter22@registry.local:8081/simple",
        webhook="https://tok_9f8e7d@hooks.example.com/x",
    )
    text = out.getvalue()
    for leaked in (
        "jane.doe",
        "bo%40x.org",
        "josé",
        "4155550100",
        "4155550101",
        "4155550102",
        "hunter22",
        "tok_9f8e7d",
    ):
        assert leaked not in text, leaked
    (line,) = lines(out)
    assert line["registry"].startswith("http://<secret:") and line["registry"].endswith(
        "@registry.local:8081/simple"
    )
    assert line["order"]["customer_phone"].startswith("<phone:")


def test_ids_and_numbers_stay_readable(out: io.StringIO) -> None:
    get_logger().info(
        "delivered",
        order_id="4155550100",
        delivery_id="msg-0001:seg:Orders",
        offset=1234567890,
        url="https://tracker.example/segment/track?offset=1234567890",
        broker="localhost:9092",
    )
    (line,) = lines(out)
    assert line["order_id"] == "4155550100"
    assert line["delivery_id"] == "msg-0001:seg:Orders"
    assert line["offset"] == 1234567890
    assert line["url"] == "https://tracker.example/segment/track?offset=1234567890"
    assert line["broker"] == "localhost:9092"
