"""Input decoding: JSON, plain Avro with the shipped schema, Confluent-framed Avro via a registry."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError
from manual_clock import ManualClock

from streamproc.decoding import (
    UNKNOWN_ID_TTL,
    AvroCodec,
    SchemaPending,
    SchemaRegistryUnavailable,
    encode_avro,
    frame_confluent,
    load_schema,
    make_decoder,
)
from streamproc.errors import ConfigError, DecodeError

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schemas" / "segment-event.avsc"


@dataclass(frozen=True)
class Input:
    format: str = "json"
    schema_registry_url: str | None = None
    schema_file: str | None = None
    schema_registry_timeout: float = 10.0
    schema_registry_wait: float = 300.0


EVENTS: list[dict[str, Any]] = [
    {
        "type": "track",
        "event": "Order Completed",
        "messageId": "m-1",
        "userId": "u-1",
        "timestamp": "2026-11-23T12:00:00.000Z",
        "properties": {
            "revenue": 12.5,
            "count": 3,
            "big": 12345678901234567,
            "products": [{"sku": "a", "price": 1}, None, True, "x"],
            "empty": {},
            "nothing": None,
        },
        "context": {"ip": "203.0.113.9", "traits": {"email": "a@example.com"}},
        "integrations": {"All": False, "Seg": True},
    },
    {"type": "identify", "anonymousId": "anon", "traits": {"email": "b@example.com", "age": 40}},
    {"type": "page", "name": "Home", "category": "Docs", "properties": {"url": "https://x.test/"}},
    {"type": "screen", "name": "Cart", "userId": "u-2"},
    {"type": "group", "groupId": "g-1", "traits": {"plan": "pro"}, "userId": "u-3"},
    {"type": "alias", "previousId": "old", "userId": "new", "version": 2},
]


def test_json_decodes_objects() -> None:
    decode = make_decoder(Input())
    assert decode(b'{"type":"track","event":"A"}') == {"type": "track", "event": "A"}


@pytest.mark.parametrize("raw", [b"not json", b"[1,2]", b'"text"', b""])
def test_json_rejects_what_is_not_an_object(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        make_decoder(Input())(raw)


@pytest.mark.parametrize("event", EVENTS, ids=[e["type"] for e in EVENTS])
def test_plain_avro_round_trips_every_event_type(event: dict[str, Any]) -> None:
    decode = make_decoder(Input(format="avro", schema_file=str(SCHEMA_FILE)))
    raw = encode_avro(event, load_schema(SCHEMA_FILE))
    assert decode(raw) == event


def test_avro_json_fields_keep_integers_and_floats_apart() -> None:
    codec = AvroCodec(load_schema(SCHEMA_FILE))
    out = codec.decode(codec.encode({"type": "track", "properties": {"i": 1, "f": 1.5}}))
    assert out["properties"] == {"i": 1, "f": 1.5}
    assert isinstance(out["properties"]["i"], int)


def test_plain_avro_garbage_is_a_decode_error() -> None:
    decode = make_decoder(Input(format="avro", schema_file=str(SCHEMA_FILE)))
    with pytest.raises(DecodeError, match="does not decode"):
        decode(b"\x7f\xff\xff")
    with pytest.raises(DecodeError):
        decode(b"")


def test_plain_avro_with_trailing_bytes_is_a_decode_error() -> None:
    decode = make_decoder(Input(format="avro", schema_file=str(SCHEMA_FILE)))
    raw = encode_avro({"type": "track", "event": "A"}, load_schema(SCHEMA_FILE))
    with pytest.raises(DecodeError, match="left over"):
        decode(raw + b"\x00\x00")


def test_avro_json_field_that_is_not_json_is_a_decode_error() -> None:
    schema = load_schema(SCHEMA_FILE)
    codec = AvroCodec(schema)
    import io

    from fastavro import schemaless_writer

    out = io.BytesIO()
    schemaless_writer(out, schema, {"type": "track", "properties": "{broken"})
    with pytest.raises(DecodeError, match="properties"):
        codec.decode(out.getvalue())


def test_avro_config_problems_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="schema_file or schema_registry_url"):
        make_decoder(Input(format="avro"))
    with pytest.raises(ConfigError, match="cannot read"):
        make_decoder(Input(format="avro", schema_file=str(tmp_path / "missing.avsc")))
    bad = tmp_path / "bad.avsc"
    bad.write_text('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}')
    with pytest.raises(ConfigError, match="not a valid Avro schema"):
        make_decoder(Input(format="avro", schema_file=str(bad)))
    with pytest.raises(ConfigError, match="unknown format"):
        make_decoder(Input(format="xml"))


@dataclass
class _Schema:
    schema_str: str
    schema_type: str = "AVRO"


class FakeRegistry:
    """Stands in for SchemaRegistryClient.get_schema; counts lookups."""

    def __init__(self, schemas: dict[int, str], down: bool = False) -> None:
        self.schemas = schemas
        self.down = down
        self.lookups = 0

    def get_schema(self, schema_id: int) -> _Schema:
        self.lookups += 1
        if self.down:
            raise ConnectionRefusedError("connection refused")
        if schema_id not in self.schemas:
            raise SchemaRegistryError(404, 40403, "Schema not found")
        return _Schema(self.schemas[schema_id])


def _registry_decoder(registry: Any, schema_file: str | None = None, **options: Any) -> Any:
    cfg = Input(format="avro", schema_registry_url="http://registry.test", schema_file=schema_file)
    decode = make_decoder(cfg, registry_client=registry)
    for name, value in options.items():
        setattr(decode, f"_{name}", value)
    return decode


async def decoded(decode: Any, raw: bytes) -> Any:
    """What the worker does: decode, and when the schema must be fetched first, fetch and decode again."""
    for _ in range(3):
        try:
            return decode(raw)
        except SchemaPending as pending:
            await pending.fetch()
    raise AssertionError("the schema was fetched but is still pending")


async def test_confluent_framed_avro_decodes_and_caches_the_writer_schema() -> None:
    registry = FakeRegistry({7: SCHEMA_FILE.read_text()})
    decode = _registry_decoder(registry)
    schema = load_schema(SCHEMA_FILE)
    with pytest.raises(SchemaPending):  # never a registry call on the caller's thread
        decode(frame_confluent(7, encode_avro(EVENTS[0], schema)))
    assert registry.lookups == 0
    for event in EVENTS:
        assert await decoded(decode, frame_confluent(7, encode_avro(event, schema))) == event
    assert registry.lookups == 1


async def test_confluent_framing_errors_are_decode_errors() -> None:
    registry = FakeRegistry({7: SCHEMA_FILE.read_text()})
    decode = _registry_decoder(registry)
    payload = encode_avro({"type": "track"}, load_schema(SCHEMA_FILE))
    with pytest.raises(DecodeError, match="too short"):
        await decoded(decode, b"\x00\x00")
    with pytest.raises(DecodeError, match="magic byte"):
        await decoded(decode, b"\x01" + frame_confluent(7, payload)[1:])
    with pytest.raises(DecodeError, match="not in the schema registry"):
        await decoded(decode, frame_confluent(99, payload))
    with pytest.raises(DecodeError, match="schema id 7"):
        await decoded(decode, frame_confluent(7, b"\xff\xff\xff\xff\xff"))


async def test_an_unknown_id_is_remembered_briefly() -> None:
    registry = FakeRegistry({})
    clock = ManualClock(100.0)
    decode = _registry_decoder(registry, clock=clock)
    for _ in range(5):
        with pytest.raises(DecodeError, match="not in the schema registry"):
            await decoded(decode, frame_confluent(99, b"\x00"))
    assert registry.lookups == 1
    clock.now += UNKNOWN_ID_TTL + 1
    registry.schemas[99] = SCHEMA_FILE.read_text()  # registered since
    payload = encode_avro(EVENTS[0], load_schema(SCHEMA_FILE))
    assert await decoded(decode, frame_confluent(99, payload)) == EVENTS[0]
    assert registry.lookups == 2


async def test_registry_outage_is_not_a_decode_error() -> None:
    registry = FakeRegistry({}, down=True)
    decode = _registry_decoder(registry, wait=0.3)
    with pytest.raises(SchemaRegistryUnavailable, match="cannot be reached"):
        await decoded(decode, frame_confluent(1, b"\x00"))
    assert registry.lookups > 1  # tried again with backoff before giving up


async def test_a_registry_that_never_answers_holds_neither_the_loop_nor_the_message_for_ever() -> None:
    class Silent:
        def __init__(self) -> None:
            self.release = threading.Event()

        def get_schema(self, schema_id: int) -> Any:
            self.release.wait(30)  # the client's own timeout is the test's `timeout` below
            raise TimeoutError("read timed out")

    silent = Silent()
    decode = _registry_decoder(silent, timeout=0.2, wait=1.0)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    try:
        with pytest.raises(SchemaRegistryUnavailable, match="for 1s"):
            await decoded(decode, frame_confluent(5, b"\x00"))
    finally:
        ticker.cancel()
        silent.release.set()
    assert time.monotonic() - started < 5
    assert ticks > 30  # the event loop kept running the whole time


async def test_reader_schema_resolves_an_older_writer_schema() -> None:
    old = json.loads(SCHEMA_FILE.read_text())
    old["fields"] = [f for f in old["fields"] if f["name"] in ("type", "event", "properties")]
    registry = FakeRegistry({3: json.dumps(old)})
    decode = _registry_decoder(registry, schema_file=str(SCHEMA_FILE))
    from fastavro import parse_schema

    raw = encode_avro({"type": "track", "event": "A", "properties": {"k": [1]}}, parse_schema(old))
    expected = {"type": "track", "event": "A", "properties": {"k": [1]}}
    assert await decoded(decode, frame_confluent(3, raw)) == expected
