"""`streamproc demo`: every partner receives deliveries and the bad input lands in the dead-letter topic."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from streamproc.core.events import decode_json
from streamproc.demo import POISON_KINDS, EventGenerator
from streamproc.errors import DecodeError

ROOT = Path(__file__).resolve().parents[1]


def test_generator_covers_every_event_type_and_every_poison_kind() -> None:
    gen = EventGenerator(seed=3, poison_every=20)
    messages = [next(gen) for _ in range(2000)]
    types: Counter[str] = Counter()
    undecodable = 0
    track_names: set[str] = set()
    for _key, value in messages:
        try:
            event = decode_json(value)
        except DecodeError:
            undecodable += 1
            continue
        types[event["type"]] += 1
        if event["type"] == "track":
            track_names.add(event["event"])
    assert set(types) == {"track", "identify", "page", "screen", "group", "alias"}
    assert {"Product Viewed", "Product Added", "Checkout Started", "Order Completed"} <= track_names
    assert undecodable == gen.counts["poison:not-json"] + gen.counts["poison:not-an-object"] > 0
    assert all(gen.counts[f"poison:{k}"] > 0 for k in POISON_KINDS)


def test_generator_is_reproducible_and_keys_by_visitor() -> None:
    a = _take(EventGenerator(seed=11), 200)
    b = _take(EventGenerator(seed=11), 200)
    assert [k for k, _ in a] == [k for k, _ in b]
    assert [_message_id(v) for _, v in a] == [_message_id(v) for _, v in b]
    for key, value in _take(EventGenerator(seed=5, poison_every=0), 300):
        event = orjson.loads(value)
        assert key == (event.get("userId") or event["anonymousId"]).encode()


def _message_id(value: bytes) -> object:
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return "not json"
    return event.get("messageId") if isinstance(event, dict) else "not an object"


def _take(gen: EventGenerator, n: int) -> list[tuple[bytes | None, bytes]]:
    return [next(gen) for _ in range(n)]


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m streamproc demo ARGS` from the repository root, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "streamproc", "demo", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.kafka
def test_demo_delivers_to_every_partner_and_dead_letters_the_poison(kafka_bootstrap: str) -> None:
    proc = run_demo(
        "--bootstrap", kafka_bootstrap, "--events", "400", "--rate", "1000", "--poison-every", "40", "--json"
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout)
    assert summary["produced"] == summary["consumed"] == 400
    for destination in ("stackadapt", "tiktok-offline", "seg"):
        assert summary["delivered"].get(destination, 0) > 0, summary
        assert summary["partner_requests"].get(destination, 0) >= summary["delivered"][destination]
    # 10 poison messages in turn: not JSON and not an object fail decoding (one dead letter each);
    # the invalid payload fails validation at the partners that validate a number there.
    poison = {k: summary["produced_by_kind"][f"poison:{k}"] for k in POISON_KINDS}
    assert summary["dead_letter_error_types"]["DecodeError"] == poison["not-json"] + poison["not-an-object"]
    assert summary["dead_letter_error_types"]["PayloadValidationError"] >= poison["invalid-payload"]
    assert summary["dead_letter_topic_records"] == sum(summary["dead_lettered"].values())
    assert "/metrics" in summary["metrics_url"]
    assert "dead-letter topic" in proc.stderr


def test_demo_runs_on_the_mock_cluster_where_there_is_no_broker() -> None:
    proc = run_demo("--broker", "mock", "--events", "150", "--rate", "500", "--poison-every", "30", "--json")
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout)
    assert summary["broker"] == "mock"
    assert summary["consumed"] == 150
    assert set(summary["delivered"]) == {"stackadapt", "tiktok-offline", "seg"}
    assert summary["dead_letter_error_types"]["DecodeError"] == 4


_AUDIT_OPENS = """
import json, os, sys
repo, package = sys.argv[1], sys.argv[2]
outside = []

def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(args[0]))
        if path.startswith(repo + os.sep) and not path.startswith((package + os.sep, repo + "/.venv/")):
            outside.append(path)

sys.addaudithook(hook)
from streamproc.cli import main

code = main(sys.argv[3:])
print(json.dumps({"code": code, "outside": sorted(set(outside))}), file=sys.stderr)
"""


def test_demo_reads_nothing_of_the_checkout_outside_the_package(tmp_path: Path) -> None:
    # What an installed wheel or the image has is the package alone: run from elsewhere and record
    # every file the demo opens.
    import streamproc

    package = Path(streamproc.__file__).resolve().parent
    demo = ["demo", "--broker", "mock", "--events", "60", "--rate", "500", "--poison-every", "20", "--json"]
    proc = subprocess.run(
        [sys.executable, "-c", _AUDIT_OPENS, str(ROOT), str(package), *demo],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report == {"code": 0, "outside": []}, proc.stderr[-4000:]
    summary = json.loads(proc.stdout)
    assert summary["consumed"] == 60
    assert set(summary["delivered"]) == {"stackadapt", "tiktok-offline", "seg"}


def test_auto_mode_uses_the_mock_cluster_where_the_broker_jars_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from streamproc.kafka import local

    monkeypatch.setenv("KAFKA_LOCAL_CACHE", str(tmp_path / "empty-cache"))
    out = io.StringIO()
    broker = local.start_broker(None, mode="auto", out=out)
    try:
        assert broker.kind == "mock"
        assert broker.mock_owner is not None
        assert "mock cluster" in out.getvalue()
    finally:
        broker.stop()
    assert local.start_broker("broker-1:9092").kind == "external"
