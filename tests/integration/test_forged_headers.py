"""Headers named `streamproc.*` on input events are the producer's, not streamproc's: copied into a
dead letter they are renamed `original.streamproc.*`, and `dlq inspect` and `dlq redrive` count and
redrive every dead letter as if they were not there. Header values that are not UTF-8, on the
events or written straight onto the dead-letter topic, crash neither tool."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_helpers import produce, read_all, unique_name
from ops_helpers import cli_args, make_events, predicted, received, run_worker_until_done, write_config

from streamproc.commands.dlq import inspect, redrive

pytestmark = pytest.mark.kafka

N = 30


def forged(i: int) -> list[tuple[str, bytes | None]]:
    """What anyone who can write the input topic can put on an event."""
    return [
        ("trace", f"t-{i}".encode()),
        # Would hide this event's dead letter and mark dead letter 0:0 as redriven.
        ("streamproc.redriven", b"0:0" if i % 2 else b"\xff\xfe:\x80"),
        # Would attribute the dead letter to the other destination.
        ("streamproc.destination", b"seg-b"),
        ("streamproc.error.type", b"\xc3\x28"),
    ]


async def test_forged_streamproc_headers_change_nothing_in_inspect_and_redrive(
    kafka_bootstrap: str, topic: Any, sims: Any, tmp_path: Path
) -> None:
    a, b = sims
    source, dlq, group = topic("forged", partitions=2), topic("forged-dlq", partitions=1), unique_name("g")
    events = make_events(N, prefix="f")
    produce(
        kafka_bootstrap,
        source,
        [orjson.dumps(e) for e in events],
        keys=[e["userId"] for e in events],
        headers=[forged(i) for i in range(N)],
    )
    cfg = write_config(
        tmp_path / "config.yaml",
        bootstrap=kafka_bootstrap,
        topic=source,
        dlq=dlq,
        group=group,
        url_a=a.base_url,
        url_b=b.base_url,
    )
    a.fault("seg", down=503)
    await run_worker_until_done(cfg, kafka_bootstrap, source, group)
    a.clear()
    b.clear()
    # Someone with access to the dead-letter topic writes a marker whose value is not UTF-8.
    produce(kafka_bootstrap, dlq, [None], headers=[[("streamproc.redriven", b"\xff\xfe")]])

    letters = [r for r in read_all(kafka_bootstrap, dlq) if r.value is not None]
    assert len(letters) == N
    for letter in letters:
        assert letter.header("streamproc.destination") == b"seg-a"
        assert letter.header("streamproc.error.type") == b"RetryableError"
        assert letter.header("original.streamproc.destination") == b"seg-b"
        assert letter.header("original.streamproc.redriven") in (b"0:0", b"\xff\xfe:\x80")
        assert not any(k == "streamproc.redriven" for k, _v in letter.headers)

    inspected = await inspect(cli_args("dlq", "inspect", "--config", str(cfg), "--json"), out=io.StringIO())
    assert inspected.total == N and inspected.redriven == 0
    assert inspected.by_destination == {"seg-a": N}
    assert inspected.by_error_type == {"RetryableError": N}

    code, summary = await redrive(
        cli_args("dlq", "redrive", "--config", str(cfg)), out=io.BytesIO(), err=io.StringIO()
    )
    assert code == 0
    assert summary.destinations["seg-a"].delivered == N and summary.already_redriven == 0
    assert received(a) == predicted(cfg, events)["seg-a"]
    assert not b.requests

    after = await inspect(cli_args("dlq", "inspect", "--config", str(cfg)), out=io.StringIO())
    assert after.total == 0 and after.redriven == N
