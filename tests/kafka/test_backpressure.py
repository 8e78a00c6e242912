"""The pause decision: events and bytes held past the watermarks, each with its resume mark, and
librdkafka's prefetch bounded by the bytes bound."""

from __future__ import annotations

import pytest

from streamproc.config import parse_config
from streamproc.errors import ConfigError
from streamproc.kafka.backpressure import HeldBytes, InFlightBound, prefetch_settings


def test_bytes_alone_pause_and_both_marks_must_be_met_to_resume() -> None:
    bound = InFlightBound(max_events=100, resume_events=50, max_bytes=1000, resume_bytes=500)
    assert not bound.update(3, 999)
    assert bound.update(3, 1000)  # three events, far below the event bound: paused on bytes
    assert bound.update(3, 600)
    assert bound.update(60, 400)  # bytes below their mark, events not
    assert not bound.update(50, 500)
    assert bound.update(100, 0)  # the event bound still works alone


def test_bytes_are_held_until_the_watermark_passes_them() -> None:
    held = HeldBytes()
    for offset, size in ((10, 100), (11, 200), (12, 300)):
        held.add(offset, size)
    assert held.release_below(None) == 600
    assert held.release_below(10) == 600
    assert held.release_below(12) == 300
    assert held.release_below(13) == 0


def test_prefetch_is_an_eighth_of_the_bound_within_what_librdkafka_takes() -> None:
    assert prefetch_settings(64 << 20) == {
        "queued.max.messages.kbytes": 8192,
        "fetch.max.bytes": 8 << 20,
        "max.partition.fetch.bytes": 1 << 20,
    }
    assert prefetch_settings(1 << 20)["fetch.max.bytes"] == 1 << 20
    assert prefetch_settings(1 << 40)["queued.max.messages.kbytes"] == 65536


def test_the_bytes_limits_are_checked() -> None:
    config = parse_config({"limits": {"max_in_flight_bytes": 8 << 20}}, "cfg.yaml", {})
    assert config.limits.resume_in_flight_bytes == 4 << 20
    with pytest.raises(
        ConfigError, match=r"limits\.resume_in_flight_bytes: must be below max_in_flight_bytes"
    ):
        parse_config(
            {"limits": {"max_in_flight_bytes": 8 << 20, "resume_in_flight_bytes": 8 << 20}}, "cfg.yaml", {}
        )
    with pytest.raises(ConfigError, match=r"limits\.max_in_flight_bytes: must be at least 1048576"):
        parse_config({"limits": {"max_in_flight_bytes": 1000}}, "cfg.yaml", {})
