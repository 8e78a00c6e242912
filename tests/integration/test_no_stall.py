"""No single message stops a partition, on the real broker: a message whose header name is not
UTF-8, a dead letter larger than the dead-letter topic takes, and a schema registry that never
answers. The worker keeps running, the message is dead-lettered (or waits and the worker halts
naming it), and the messages behind it are delivered and committed."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from kafka_helpers import committed_offsets, end_offsets, produce, produce_raw_headers, read_all, unique_name
from ops_helpers import cli_args, make_events, predicted, received, write_config

from streamproc.config import load_config
from streamproc.decoding import AvroCodec, SchemaRegistryUnavailable, frame_confluent, load_schema
from streamproc.runs.worker import Worker

pytestmark = pytest.mark.kafka

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "segment-event.avsc"


class Running:
    """One in-process worker; fails the test at once if the worker stops by itself."""

    def __init__(self, cfg: Path) -> None:
        self.worker = Worker(load_config(cfg), serve_http=False)
        self.task = asyncio.create_task(self.worker.run_async())

    async def until_committed(self, bootstrap: str, group: str, topic: str, timeout: float = 60) -> None:
        ends = await asyncio.to_thread(end_offsets, bootstrap, topic)
        deadline = time.monotonic() + timeout
        while await asyncio.to_thread(committed_offsets, bootstrap, group, topic) != ends:
            if self.task.done():
                self.task.result()
                raise AssertionError("the worker stopped by itself")
            assert time.monotonic() < deadline, "the worker did not commit the end of the topic"
            await asyncio.sleep(0.2)
        assert not self.task.done()

    async def stop(self) -> None:
        self.worker.stop()
        await asyncio.wait_for(self.task, 60)


class Setup:
    """A one-partition input topic (`source_config`: its topic settings), a dead-letter topic, a
    group, and the operations config over them and the two simulators."""

    def __init__(
        self,
        tmp_path: Path,
        bootstrap: str,
        topic: Any,
        sims: Any,
        source_config: dict[str, str] | None = None,
    ) -> None:
        self.path, self.bootstrap, self.sims = tmp_path / "config.yaml", bootstrap, sims
        self.source = topic("nostall", partitions=1, config=source_config)
        self.dlq, self.group = topic("nostall-dlq", partitions=1), unique_name("g")

    def config(self, **options: Any) -> Path:
        a, b = self.sims
        return write_config(
            self.path,
            bootstrap=self.bootstrap,
            topic=self.source,
            dlq=self.dlq,
            group=self.group,
            url_a=a.base_url,
            url_b=b.base_url,
            **options,
        )


async def test_a_header_name_that_is_not_utf8_is_dead_lettered_with_the_headers_that_can_be_read(
    kafka_bootstrap: str, topic: Any, sims: Any, tmp_path: Path
) -> None:
    where = Setup(tmp_path, kafka_bootstrap, topic, sims)
    cfg, source, dlq, group = where.config(), where.source, where.dlq, where.group
    produce_raw_headers(
        kafka_bootstrap,
        source,
        b"not json {",
        [(b"trace", b"t-1"), (b"\xff\xfe", b"v"), (b"streamproc.destination", b"seg-b"), (b"bin", b"\xff")],
    )
    events = make_events(20)
    produce(kafka_bootstrap, source, [orjson.dumps(e) for e in events])
    run = Running(cfg)
    await run.until_committed(kafka_bootstrap, group, source)
    await run.stop()

    (letter,) = read_all(kafka_bootstrap, dlq)
    assert letter.value == b"not json {"
    assert letter.header("streamproc.error.type") == b"DecodeError"
    assert letter.header("streamproc.original.offset") == b"0"
    assert letter.header("streamproc.original.headers_unreadable") == b"1"
    assert ("trace", b"t-1") in letter.headers and ("bin", b"\xff") in letter.headers
    # The producer's own streamproc.* header is kept, renamed: it never poses as the dead letter's.
    assert letter.header("original.streamproc.destination") == b"seg-b"
    assert letter.header("streamproc.destination") is None
    a, _b = sims
    assert received(a) == predicted(cfg, events)["seg-a"]


async def test_dead_letters_too_large_for_their_topic_are_cut_and_the_partition_goes_on(
    kafka_bootstrap: str, topic: Any, sims: Any, tmp_path: Path
) -> None:
    from streamproc.commands.dlq import redrive

    a, _b = sims
    where = Setup(tmp_path, kafka_bootstrap, topic, sims, {"max.message.bytes": "3000000"})
    cfg, source, dlq, group = where.config(), where.source, where.dlq, where.group
    # Fits the dead-letter topic's default limit (1048588) but not librdkafka's default 1000000.
    near_limit = b"\x00" * 1_040_000
    # Too large for the dead-letter topic whatever the producer: an event the partner refuses.
    big_event = make_events(1, prefix="big")[0]
    big_event["properties"]["blob"] = "x" * 2_000_000
    big = orjson.dumps(big_event)
    produce(kafka_bootstrap, source, [near_limit, big], config={"message.max.bytes": 3_000_000})
    a.fault("seg", down=400)
    run = Running(cfg)
    await run.until_committed(kafka_bootstrap, group, source)
    a.clear()
    # The partition goes on: what comes behind is delivered and committed.
    events = make_events(20)
    produce(kafka_bootstrap, source, [orjson.dumps(e) for e in events])
    await run.until_committed(kafka_bootstrap, group, source)
    await run.stop()
    assert received(a) == predicted(cfg, events)["seg-a"]

    whole, cut = read_all(kafka_bootstrap, dlq)
    assert whole.value == near_limit and whole.header("streamproc.value_truncated") is None
    big = orjson.dumps(big_event)
    assert cut.header("streamproc.value_truncated") == str(len(big)).encode()
    assert cut.header("streamproc.http.status") == b"400"
    assert cut.value and big.startswith(cut.value) and len(cut.value) < 1_048_588
    assert cut.header("streamproc.destination") == b"seg-a"
    assert cut.header("streamproc.original.topic") == source.encode()
    assert cut.header("streamproc.original.offset") == b"1"

    a.clear()
    err = io.StringIO()
    code, summary = await redrive(cli_args("dlq", "redrive", "--config", str(cfg)), out=io.BytesIO(), err=err)
    assert code == 0
    assert summary.truncated == 1 and summary.not_redrivable == 1  # the undecodable one names no delivery
    assert not a.requests
    assert "cut to fit the dead-letter topic" in err.getvalue()


class _Registry(BaseHTTPRequestHandler):
    """The schema-by-id call of a schema registry: schema 1 is the shipped one, others are unknown."""

    lookups: ClassVar[collections.Counter[int]] = collections.Counter()

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        schema_id = int(self.path.split("?")[0].rsplit("/", 1)[1])
        type(self).lookups[schema_id] += 1
        if schema_id == 1:
            status, body = 200, {"schema": SCHEMA_FILE.read_text()}
        else:
            status, body = 404, {"error_code": 40403, "message": "Schema not found"}
        data = orjson.dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextlib.contextmanager
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """A socket that accepts connections and never answers (a hung registry); yields its URL and
    the connections it holds."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", held
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def registry_input(url: str) -> str:
    return (
        f"  format: avro\n  schema_registry_url: {url}\n"
        "  schema_registry_timeout: 2\n  schema_registry_wait: 5"
    )


async def test_a_silent_schema_registry_blocks_nothing_and_the_worker_halts_naming_the_message(
    kafka_bootstrap: str, topic: Any, sims: Any, tmp_path: Path
) -> None:
    a, b = sims
    where = Setup(tmp_path, kafka_bootstrap, topic, sims)
    source, dlq, group = where.source, where.dlq, where.group
    codec = AvroCodec(load_schema(SCHEMA_FILE))
    events = make_events(10, prefix="avro")
    unknown = make_events(3, prefix="unknown")
    values = [frame_confluent(1, codec.encode(e)) for e in events]
    produce(kafka_bootstrap, source, values)

    def config(url: str) -> Path:
        return where.config(input_yaml=registry_input(url))

    with silent_server() as (url, held):
        run = Running(config(url))
        gaps: list[float] = []

        async def ticker() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.02)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticking = asyncio.create_task(ticker())
        started = time.monotonic()
        with pytest.raises(SchemaRegistryUnavailable) as halted:
            await asyncio.wait_for(run.task, 60)
        ticking.cancel()
        asked = len(held)
    # Each request waited its 2 s timeout on the registry's thread, never on the event loop.
    assert max(gaps) < 1.0, max(gaps)
    # Asked again with backoff until the next try would pass the 5 s wait, then no longer.
    assert asked >= 2 and 4 <= time.monotonic() - started < 30
    assert f"{source}[0]@0 waits for its schema" in str(halted.value)
    assert "check input.schema_registry_url" in str(halted.value)
    assert committed_offsets(kafka_bootstrap, group, source).get(0, 0) == 0
    assert not a.requests and read_all(kafka_bootstrap, dlq) == []

    # The registry is back; ids it does not have are dead-lettered, asked for once.
    produce(kafka_bootstrap, source, [frame_confluent(2, codec.encode(e)) for e in unknown])
    handler = type("Registry", (_Registry,), {"lookups": collections.Counter()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run = Running(config(f"http://127.0.0.1:{server.server_address[1]}"))
        await run.until_committed(kafka_bootstrap, group, source)
        await run.stop()
    finally:
        server.shutdown()
    assert received(a) == predicted(where.path, events)["seg-a"]
    assert received(b) == predicted(where.path, events)["seg-b"]
    letters = read_all(kafka_bootstrap, dlq)
    assert [r.header("streamproc.error.type") for r in letters] == [b"DecodeError"] * 3
    assert handler.lookups == {1: 1, 2: 1}
