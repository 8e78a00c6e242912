"""Turns input message bytes into Segment event dicts: JSON, plain Avro, or Confluent-framed Avro.

`make_decoder(input_config)` is called once at start and returns a plain function for the hot path.
Every message that cannot become an event raises `DecodeError` with the reason (the worker
dead-letters it). A message whose writer schema the registry decoder does not know yet raises
`SchemaPending`: the caller awaits its `fetch()` (off the event loop) and decodes again. A registry
that cannot be reached for the whole wait ends that fetch with `SchemaRegistryUnavailable`: that
says nothing about the message, so it must not turn good data into dead letters.

Avro events keep their open maps (properties, traits, context, integrations) as JSON texts, marked
`"logicalType": "json"` in the schema (see schemas/segment-event.avsc); the decoder parses them
back, so an Avro event and the same event in JSON decode to equal dicts. Fields that are null in
the Avro record are left out of the event, because Segment events omit what they do not have.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import orjson

from streamproc.core.events import decode_json
from streamproc.errors import ConfigError, DecodeError, StreamprocError

__all__ = [
    "CONFLUENT_MAGIC",
    "AvroCodec",
    "SchemaPending",
    "SchemaRegistryUnavailable",
    "decode_json",
    "encode_avro",
    "frame_confluent",
    "load_schema",
    "make_decoder",
]

CONFLUENT_MAGIC = 0
_HEADER = struct.Struct(">bI")


class InputSettings(Protocol):
    """What the decoder reads from `Config.input`."""

    @property
    def format(self) -> str: ...

    @property
    def schema_registry_url(self) -> str | None: ...

    @property
    def schema_file(self) -> str | None: ...

    @property
    def schema_registry_timeout(self) -> float: ...

    @property
    def schema_registry_wait(self) -> float: ...


class SchemaRegistryUnavailable(StreamprocError):
    """The schema registry did not answer; the message itself may be fine, so do not dead-letter it."""


def parse_schema(schema: Any) -> Any:
    """fastavro's `parse_schema`. fastavro is imported on first use: a worker reading JSON never
    loads it (memory it would carry for nothing)."""
    from fastavro import parse_schema as parse

    return parse(schema)


def load_schema(path: str | Path) -> dict[str, Any]:
    """Read and parse an Avro schema file once; raises ConfigError naming the file when it is unusable."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"input.schema_file: cannot read {path}: {exc.strerror}") from None
    try:
        parsed = parse_schema(orjson.loads(text))
    except Exception as exc:
        raise ConfigError(f"input.schema_file: {path} is not a valid Avro schema: {exc}") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"input.schema_file: {path} must hold one Avro record schema")
    return parsed


def _json_fields(schema: Mapping[str, Any]) -> tuple[str, ...]:
    """Names of the record's top-level fields whose string values are JSON texts."""

    def is_json(t: Any) -> bool:
        if isinstance(t, list):
            return any(is_json(b) for b in t)
        return isinstance(t, dict) and t.get("type") == "string" and t.get("logicalType") == "json"

    return tuple(f["name"] for f in schema.get("fields", ()) if is_json(f["type"]))


class AvroCodec:
    """One parsed Avro schema with the knowledge of which fields carry JSON; decodes and encodes events."""

    __slots__ = ("_read", "_write", "json_fields", "reader", "writer")

    def __init__(self, writer: dict[str, Any], reader: dict[str, Any] | None = None) -> None:
        from fastavro import schemaless_reader, schemaless_writer

        self._read = schemaless_reader
        self._write = schemaless_writer
        self.writer = writer
        self.reader = reader
        self.json_fields = _json_fields(reader if reader is not None else writer)

    def decode(self, raw: bytes | memoryview, what: str = "Avro record") -> dict[str, Any]:
        buf = io.BytesIO(raw)
        try:
            record = self._read(buf, self.writer, self.reader)
        except Exception as exc:  # fastavro raises EOFError, IndexError, ValueError, ... for bad bytes
            raise DecodeError(f"{what} does not decode: {type(exc).__name__}: {exc}") from None
        if buf.tell() != len(raw):
            raise DecodeError(
                f"{what} does not decode: {len(raw) - buf.tell()} bytes left over after the record "
                "(written with another schema?)"
            )
        if not isinstance(record, dict):
            raise DecodeError(f"{what} is not a record but {type(record).__name__}")
        event = {k: v for k, v in record.items() if v is not None}
        for name in self.json_fields:
            text = event.get(name)
            if isinstance(text, str):
                try:
                    event[name] = orjson.loads(text)
                except orjson.JSONDecodeError as exc:
                    raise DecodeError(f"{what}: field {name!r} is not JSON: {exc}") from None
        return event

    def encode(self, event: Mapping[str, Any]) -> bytes:
        """The Avro bytes of a Segment event dict (the JSON fields are serialised as JSON texts)."""
        record = dict(event)
        for name in self.json_fields:
            if name in record and record[name] is not None:
                record[name] = orjson.dumps(record[name]).decode()
        out = io.BytesIO()
        self._write(out, self.writer, record)
        return out.getvalue()


def encode_avro(event: Mapping[str, Any], schema: dict[str, Any]) -> bytes:
    """Plain Avro bytes of one event written with `schema` (a parsed schema)."""
    return AvroCodec(schema).encode(event)


def frame_confluent(schema_id: int, payload: bytes) -> bytes:
    """Confluent wire format: magic byte 0, the schema id as 4 bytes big-endian, then the Avro bytes."""
    return _HEADER.pack(CONFLUENT_MAGIC, schema_id) + payload


UNKNOWN_ID_TTL = 30.0
"""Seconds an id the registry says it does not have is remembered as unknown (its messages are
dead-lettered without asking again; after that the registry is asked again, once)."""


class SchemaPending(Exception):
    """The writer schema of this message is not known yet: await `fetch()`, then decode again.

    Raised by a registry decoder instead of blocking: the caller waits for the schema off the
    event loop while other partitions go on."""

    def __init__(self, schema_id: int, fetch: Callable[[], Awaitable[None]]) -> None:
        super().__init__(f"schema id {schema_id} is being fetched from the schema registry")
        self.schema_id = schema_id
        self.fetch = fetch


class _RegistryDecoder:
    """Decodes Confluent-framed Avro, fetching each writer schema from the registry once per id.

    Every registry call runs on the decoder's own threads with a timeout (`timeout` seconds, no
    retries inside the client), so a registry that accepts connections and never answers holds
    neither the event loop nor the default executor. A call that fails (timeout, connection,
    5xx) is tried again with backoff for up to `wait` seconds, then `fetch` raises
    SchemaRegistryUnavailable. An id the registry answers it does not have (404) is remembered for
    UNKNOWN_ID_TTL seconds: its messages fail to decode at once (they are dead-lettered).
    """

    def __init__(
        self,
        url: str,
        reader: dict[str, Any] | None,
        client: Any = None,
        *,
        timeout: float = 10.0,
        wait: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if client is None:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            client = SchemaRegistryClient({"url": url, "timeout": timeout, "max.retries": 0})
        self._client = client
        self._url = url
        self._reader = reader
        self._timeout = timeout
        self._wait = wait
        self._clock = clock
        self._codecs: dict[int, AvroCodec] = {}
        self._unknown: dict[int, tuple[float, str]] = {}
        self._fetching: dict[int, asyncio.Future[None]] = {}
        self._threads = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="registry")

    def __call__(self, raw: bytes) -> dict[str, Any]:
        if len(raw) < _HEADER.size:
            raise DecodeError(f"message of {len(raw)} bytes is too short for the Confluent wire format")
        magic, schema_id = _HEADER.unpack_from(raw)
        if magic != CONFLUENT_MAGIC:
            raise DecodeError(f"unknown magic byte {magic} (the Confluent wire format starts with 0)")
        codec = self._codecs.get(schema_id)
        if codec is None:
            unknown = self._unknown.get(schema_id)
            if unknown is not None and unknown[0] > self._clock():
                raise DecodeError(unknown[1])
            raise SchemaPending(schema_id, partial(self.fetch, schema_id))
        return codec.decode(memoryview(raw)[_HEADER.size :], f"Avro record (schema id {schema_id})")

    async def fetch(self, schema_id: int) -> None:
        """Fetch one writer schema (one fetch per id however many messages wait for it)."""
        running = self._fetching.get(schema_id)
        if running is None:
            running = self._fetching[schema_id] = asyncio.ensure_future(self._fetch(schema_id))
            running.add_done_callback(lambda _f: self._fetching.pop(schema_id, None))
        await asyncio.shield(running)

    async def _fetch(self, schema_id: int) -> None:
        loop = asyncio.get_running_loop()
        give_up = self._clock() + self._wait
        delay = min(0.5, self._wait / 4) or 0.01
        while True:
            try:
                # The client's own timeout ends the call; the extra second guards a client that
                # would not (the thread is then left to finish on its own).
                codec = await asyncio.wait_for(
                    loop.run_in_executor(self._threads, self._lookup, schema_id), self._timeout + 1.0
                )
            except DecodeError as exc:
                self._unknown[schema_id] = (self._clock() + UNKNOWN_ID_TTL, str(exc))
                return
            except (SchemaRegistryUnavailable, TimeoutError) as exc:
                reason = str(exc) or f"no answer within {self._timeout:g}s"
                if self._clock() + delay >= give_up:
                    raise SchemaRegistryUnavailable(
                        f"schema registry {self._url} gave no schema for id {schema_id} for "
                        f"{self._wait:g}s ({reason}); check input.schema_registry_url and that the "
                        "registry is up, then restart the worker (nothing past this message was "
                        "committed)"
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self._codecs[schema_id] = codec
            self._unknown.pop(schema_id, None)
            return

    def _lookup(self, schema_id: int) -> AvroCodec:
        """One registry call, on the decoder's thread: the codec, DecodeError (the registry does not
        have a usable Avro schema for the id) or SchemaRegistryUnavailable."""
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            schema = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise DecodeError(f"schema id {schema_id} is not in the schema registry") from None
            raise SchemaRegistryUnavailable(
                f"schema registry {self._url} answered {exc.http_status_code} for schema id "
                f"{schema_id}: {exc.error_message}"
            ) from None
        except Exception as exc:  # connection refused, timeout, TLS
            raise SchemaRegistryUnavailable(
                f"schema registry {self._url} cannot be reached ({type(exc).__name__}: {exc})"
            ) from None
        if (schema.schema_type or "AVRO") != "AVRO":
            raise DecodeError(f"schema id {schema_id} is a {schema.schema_type} schema, not Avro")
        try:
            writer = parse_schema(orjson.loads(schema.schema_str))
            if not isinstance(writer, dict):
                raise TypeError("not a record schema")
            return AvroCodec(writer, self._reader)
        except Exception as exc:
            raise DecodeError(f"schema id {schema_id} is not a usable Avro schema: {exc}") from None


def make_decoder(
    input_config: InputSettings, *, registry_client: Any = None
) -> Callable[[bytes], dict[str, Any]]:
    """The decode function for the configured input format (schema files are read and parsed here, once).

    format "json": orjson. format "avro" with `schema_registry_url`: Confluent wire format, writer
    schemas from the registry (a `schema_file` then serves as the reader schema). format "avro"
    with only `schema_file`: plain Avro bytes written with that schema.
    """
    fmt = input_config.format
    if fmt == "json":
        return decode_json
    if fmt != "avro":
        raise ConfigError(f"input.format: unknown format {fmt!r} (json or avro)")
    reader = load_schema(input_config.schema_file) if input_config.schema_file else None
    if input_config.schema_registry_url:
        return _RegistryDecoder(
            input_config.schema_registry_url,
            reader,
            registry_client,
            timeout=input_config.schema_registry_timeout,
            wait=input_config.schema_registry_wait,
        )
    if reader is None:
        raise ConfigError("input: format avro needs schema_file or schema_registry_url")
    codec = AvroCodec(reader)
    return codec.decode
