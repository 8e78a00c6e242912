"""No single message stops a partition, on the real broker: a message whose header name is not
UTF-8, a dead letter larger than the dead-letter topic takes, and a schema registry that never
answers. The worker keeps running, the message is dead-lettered (or waits and the worker halts
naming it), and the messages behind it are delivered and committed."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_helpers import committed_offsets, end_offsets, produce, produce_raw_headers, read_all, unique_name
from ops_helpers import cli_args, make_events, predicted, received, write_config

from streamproc.app import Worker
from streamproc.config import load_config

pytestmark = pytest.mark.kafka


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


def setup(
    tmp_path: Path, bootstrap: str, topic: Any, sims: Any, **options: Any
) -> tuple[Path, str, str, str]:
    source, dlq, group = topic("nostall", partitions=1), topic("nostall-dlq", partitions=1), unique_name("g")
    a, b = sims
    cfg = write_config(
        tmp_path / "config.yaml",
        bootstrap=bootstrap,
        topic=source,
        dlq=dlq,
        group=group,
        url_a=a.base_url,
        url_b=b.base_url,
        **options,
    )
    return cfg, source, dlq, group


async def test_a_header_name_that_is_not_utf8_is_dead_lettered_with_the_headers_that_can_be_read(
    kafka_bootstrap: str, topic: Any, sims: Any, tmp_path: Path
) -> None:
    cfg, source, dlq, group = setup(tmp_path, kafka_bootstrap, topic, sims)
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
    source = topic("nostall-big", partitions=1, config={"max.message.bytes": "3000000"})
    dlq, group = topic("nostall-big-dlq", partitions=1), unique_name("g")
    cfg = write_config(
        tmp_path / "config.yaml",
        bootstrap=kafka_bootstrap,
        topic=source,
        dlq=dlq,
        group=group,
        url_a=a.base_url,
        url_b=_b.base_url,
    )
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
