"""`streamproc dlq redrive` and `inspect` after a partner outage, on the real broker: every dead letter
of that destination is delivered, nothing that succeeded is sent again, a second redrive sends nothing,
and what fails again goes back to the dead-letter topic with its history. Headers named
`streamproc.*` on input events are the producer's: copied into a dead letter they are renamed
`original.streamproc.*`, so inspect and redrive count and redrive every dead letter as if they were
not there; header values that are not UTF-8 crash neither tool."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_helpers import produce, read_all, unique_name
from ops_helpers import KEY_A, cli_args, make_events, predicted, received, run_worker_until_done, write_config

from streamproc.commands.dlq import inspect, redrive

pytestmark = pytest.mark.kafka

N = 150


def letters_in(bootstrap: str, dlq: str) -> list[Any]:
    """The dead letters on the topic, without the redrive markers."""
    return [r for r in read_all(bootstrap, dlq) if r.header("streamproc.redriven") is None]


@pytest.fixture
async def outage(kafka_bootstrap: str, topic, sims, tmp_path: Path):
    """seg-a answers 503 to everything while the worker runs: all its deliveries are dead-lettered."""
    return await dead_letters_of_an_outage(kafka_bootstrap, topic, sims, tmp_path, N)


async def dead_letters_of_an_outage(
    kafka_bootstrap: str, topic, sims, tmp_path: Path, n: int, headers: Any = None
) -> tuple[Path, list[dict[str, Any]], str]:
    """`n` events (with `headers`, one list per event) run through a worker while seg-a is down."""
    a, b = sims
    source = topic("redrive", partitions=2)
    dlq = topic("redrive-dlq", partitions=2)
    group = unique_name("live")
    events = make_events(n, prefix="r")
    produce(
        kafka_bootstrap,
        source,
        [orjson.dumps(e) for e in events],
        keys=[e["userId"] for e in events],
        headers=headers,
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
    assert received(b) == predicted(cfg, events)["seg-b"]
    b.clear()
    return cfg, events, dlq


async def test_redrive_after_an_outage_delivers_exactly_the_dead_letters_once(
    kafka_bootstrap: str, outage, sims
) -> None:
    cfg, events, dlq = outage
    a, b = sims
    letters = letters_in(kafka_bootstrap, dlq)
    assert len(letters) == N  # every event matched seg-a's subscription

    inspected = await inspect(cli_args("dlq", "inspect", "--config", str(cfg), "--json"), out=io.StringIO())
    assert inspected.by_destination == {"seg-a": N}
    assert inspected.by_status == {"503": N}
    shown = orjson.dumps(inspected.to_json()).decode() + inspected.render()
    names = {e["event"] for e in events if isinstance(e, dict) and e.get("event")}
    # Samples show events, without their PII.
    assert inspected.samples and any(n in shown for n in names) and "<email:" in shown
    assert "@example.com" not in shown and "198.51.100." not in shown

    code, summary = await redrive(
        cli_args("dlq", "redrive", "--config", str(cfg)), out=io.BytesIO(), err=io.StringIO()
    )
    assert code == 0
    assert received(a) == predicted(cfg, events)["seg-a"]
    assert not b.requests  # seg-b's successes are not repeated
    assert summary.destinations["seg-a"].delivered == N
    assert len(letters_in(kafka_bootstrap, dlq)) == N  # nothing new was dead-lettered

    a.clear()
    code, summary = await redrive(
        cli_args("dlq", "redrive", "--config", str(cfg)), out=io.BytesIO(), err=io.StringIO()
    )
    assert code == 0
    assert summary.read == summary.markers  # only the markers the first redrive wrote
    assert not a.requests and not b.requests


async def test_failures_during_redrive_go_back_with_their_history(kafka_bootstrap: str, outage, sims) -> None:
    cfg, _events, dlq = outage
    a, _b = sims
    before = letters_in(kafka_bootstrap, dlq)
    a.fault("seg", down=400)  # still failing, now permanently
    code, summary = await redrive(
        cli_args("dlq", "redrive", "--config", str(cfg), "--destination", "seg-a", "--status", "5xx"),
        out=io.BytesIO(),
        err=io.StringIO(),
    )
    assert code == 0
    assert summary.destinations["seg-a"].dead_lettered == N
    after = letters_in(kafka_bootstrap, dlq)
    seen = {(r.partition, r.offset) for r in before}
    new = [r for r in after if (r.partition, r.offset) not in seen]
    assert len(new) == N
    old_by_id = {r.header("streamproc.delivery_id"): r for r in before}
    for record in new:
        old = old_by_id[record.header("streamproc.delivery_id")]
        assert record.value == old.value and record.key == old.key
        assert record.header("streamproc.http.status") == b"400"
        assert int(record.header("streamproc.attempts")) == int(old.header("streamproc.attempts")) + 1
        for name in ("topic", "partition", "offset", "timestamp"):
            assert record.header(f"streamproc.original.{name}") == old.header(f"streamproc.original.{name}")
        assert record.header("streamproc.first_attempt_at") == old.header("streamproc.first_attempt_at")


async def test_a_dry_run_sends_and_commits_nothing(kafka_bootstrap: str, outage, sims) -> None:
    cfg, _events, _dlq = outage
    a, b = sims
    out = io.BytesIO()
    code, summary = await redrive(
        cli_args("dlq", "redrive", "--config", str(cfg), "--dry-run"), out=out, err=io.StringIO()
    )
    assert code == 0
    assert not a.requests and not b.requests
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == N and {line["destination"] for line in lines} == {"seg-a"}
    # Printed like `send`: the Website Id in the path and the buyers' emails are masked.
    printed = out.getvalue().decode()
    assert KEY_A not in printed and "@example.com" not in printed
    assert all(
        line["requests"][0]["url"].endswith("/track") and "<secret:" in line["requests"][0]["url"]
        for line in lines
    )
    code, summary = await redrive(
        cli_args("dlq", "redrive", "--config", str(cfg)), out=io.BytesIO(), err=io.StringIO()
    )
    assert summary.destinations["seg-a"].delivered == N


async def test_what_one_filter_redrove_is_not_sent_again_by_another(
    kafka_bootstrap: str, outage, sims
) -> None:
    cfg, events, _dlq = outage
    a, b = sims
    code, summary = await redrive(
        cli_args("dlq", "redrive", "--config", str(cfg), "--destination", "seg-a"),
        out=io.BytesIO(),
        err=io.StringIO(),
    )
    assert code == 0 and summary.destinations["seg-a"].delivered == N
    assert received(a) == predicted(cfg, events)["seg-a"]
    a.clear()
    code, summary = await redrive(
        cli_args("dlq", "redrive", "--config", str(cfg)), out=io.BytesIO(), err=io.StringIO()
    )
    assert code == 0
    assert summary.already_redriven == N
    assert not summary.destinations
    assert not a.requests and not b.requests
    inspected = await inspect(cli_args("dlq", "inspect", "--config", str(cfg)), out=io.StringIO())
    assert inspected.total == 0 and inspected.redriven == N
    everything = await inspect(cli_args("dlq", "inspect", "--config", str(cfg), "--all"), out=io.StringIO())
    assert everything.total == N and everything.by_destination == {"seg-a": N}


FORGED = 30


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
    cfg, events, dlq = await dead_letters_of_an_outage(
        kafka_bootstrap, topic, sims, tmp_path, FORGED, [forged(i) for i in range(FORGED)]
    )
    # Someone with access to the dead-letter topic writes a marker whose value is not UTF-8.
    produce(kafka_bootstrap, dlq, [None], headers=[[("streamproc.redriven", b"\xff\xfe")]])

    letters = [r for r in read_all(kafka_bootstrap, dlq) if r.value is not None]
    assert len(letters) == FORGED
    for letter in letters:
        assert letter.header("streamproc.destination") == b"seg-a"
        assert letter.header("streamproc.error.type") == b"RetryableError"
        assert letter.header("original.streamproc.destination") == b"seg-b"
        assert letter.header("original.streamproc.redriven") in (b"0:0", b"\xff\xfe:\x80")
        assert not any(k == "streamproc.redriven" for k, _v in letter.headers)

    inspected = await inspect(cli_args("dlq", "inspect", "--config", str(cfg), "--json"), out=io.StringIO())
    assert inspected.total == FORGED and inspected.redriven == 0
    assert inspected.by_destination == {"seg-a": FORGED}
    assert inspected.by_error_type == {"RetryableError": FORGED}

    code, summary = await redrive(
        cli_args("dlq", "redrive", "--config", str(cfg)), out=io.BytesIO(), err=io.StringIO()
    )
    assert code == 0
    assert summary.destinations["seg-a"].delivered == FORGED and summary.already_redriven == 0
    assert received(a) == predicted(cfg, events)["seg-a"]
    assert not b.requests

    after = await inspect(cli_args("dlq", "inspect", "--config", str(cfg)), out=io.StringIO())
    assert after.total == 0 and after.redriven == FORGED
