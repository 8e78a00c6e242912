"""Avro input end to end on the real broker: plain Avro with the shipped schema file, and the Confluent
wire format written by confluent-kafka's own AvroSerializer through a schema registry.

The registry here is a small in-test server speaking the part of the Confluent Schema Registry REST
API that serializers and decoders use (register a subject version, fetch a schema by id). Karapace is
not published on PyPI and Confluent's registry is not on Maven Central, so neither can be installed
on a test machine; both ends still use the real confluent-kafka SchemaRegistryClient over HTTP.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from kafka_helpers import produce, read_all, unique_name
from ops_helpers import make_events, predicted, received, run_worker_until_done, write_config

from streamproc.decoding import AvroCodec, load_schema

pytestmark = pytest.mark.kafka

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "segment-event.avsc"
N = 90


class _Registry(BaseHTTPRequestHandler):
    schemas: dict[int, str]

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path.startswith("/subjects/") and "/versions" in self.path:
            schemas = type(self).schemas
            for sid, text in schemas.items():
                if text == body["schema"]:
                    return self._json(200, {"id": sid})
            sid = len(schemas) + 1
            schemas[sid] = body["schema"]
            return self._json(200, {"id": sid})
        self._json(404, {"error_code": 404, "message": "not found"})

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path.startswith("/schemas/ids/"):
            sid = int(path.rsplit("/", 1)[1])
            text = type(self).schemas.get(sid)
            if text is None:
                return self._json(404, {"error_code": 40403, "message": "Schema not found"})
            return self._json(200, {"schema": text})
        self._json(404, {"error_code": 404, "message": "not found"})


@pytest.fixture
def registry() -> Iterator[str]:
    handler = type("Registry", (_Registry,), {"schemas": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


async def check(
    kafka_bootstrap: str, topic, sims, tmp_path: Path, input_yaml: str, values: list[bytes]
) -> None:
    a, b = sims
    source = topic("avro", partitions=2)
    dlq = topic("avro-dlq", partitions=1)
    group = unique_name("avro")
    events = make_events(N, prefix="avro")
    cfg = write_config(
        tmp_path / "config.yaml",
        bootstrap=kafka_bootstrap,
        topic=source,
        dlq=dlq,
        group=group,
        url_a=a.base_url,
        url_b=b.base_url,
        input_yaml=input_yaml,
    )
    produce(kafka_bootstrap, source, [*values, b"\x00\x00\x00\x00\x63garbage"])
    await run_worker_until_done(cfg, kafka_bootstrap, source, group)
    expect = predicted(cfg, events)
    assert received(a) == expect["seg-a"]
    assert received(b) == expect["seg-b"]
    (poison,) = read_all(kafka_bootstrap, dlq)
    assert poison.header("streamproc.error.type") == b"DecodeError"
    assert poison.value == b"\x00\x00\x00\x00\x63garbage"


async def test_plain_avro_with_the_local_schema(kafka_bootstrap: str, topic, sims, tmp_path: Path) -> None:
    codec = AvroCodec(load_schema(SCHEMA_FILE))
    values = [codec.encode(e) for e in make_events(N, prefix="avro")]
    await check(
        kafka_bootstrap, topic, sims, tmp_path, f"  format: avro\n  schema_file: {SCHEMA_FILE}", values
    )


async def test_confluent_framed_avro_through_a_schema_registry(
    kafka_bootstrap: str, topic, sims, tmp_path: Path, registry: str
) -> None:
    client = SchemaRegistryClient({"url": registry})
    codec = AvroCodec(load_schema(SCHEMA_FILE))
    serializer = AvroSerializer(
        client,
        SCHEMA_FILE.read_text(),
        # The open maps travel as JSON texts (see the schema's doc).
        to_dict=lambda event, _ctx: {
            k: (orjson.dumps(v).decode() if k in codec.json_fields else v) for k, v in event.items()
        },
    )
    ctx = SerializationContext("segment-events", MessageField.VALUE)
    values = [serializer(e, ctx) for e in make_events(N, prefix="avro")]
    assert values[0][:1] == b"\x00"
    await check(
        kafka_bootstrap, topic, sims, tmp_path, f"  format: avro\n  schema_registry_url: {registry}", values
    )
