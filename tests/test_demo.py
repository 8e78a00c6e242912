"""`streamproc demo`: every partner receives deliveries and the bad input lands in the dead-letter topic."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from streamproc.core.events import decode_json
from streamproc.devtools.demo import POISON_KINDS, EventGenerator
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

    from streamproc.devtools import broker as local

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


RAW_LIBRDKAFKA = re.compile(r"^%\d\|\d+\.\d+\|", re.M)


def test_the_progress_line_fits_the_terminal_and_always_shows_dead_letters_and_in_flight() -> None:
    import io

    from streamproc.devtools.demo.display import ProgressDisplay as _Display

    totals: dict[str, Counter[str]] = {
        "consumed": Counter({"t": 12000}),
        "delivered": Counter({"stackadapt": 11000, "tiktok-offline": 9000, "seg": 10000}),
        "dead_lettered": Counter({"(undecodable)": 240}),
        "in_flight": Counter({"events": 37}),
    }
    for columns in (50, 80, 100):
        line = _Display(io.StringIO(), tty=True, columns=lambda c=columns: c).line(
            12500, 12000, 950.0, totals
        )
        assert len(line) < columns, (columns, line)
        assert "240" in line and "in flight 37" in line, line
    wide = _Display(io.StringIO(), tty=True, columns=lambda: 200).line(12500, 12000, 950.0, totals)
    assert "seg=10000 stackadapt=11000 tiktok-offline=9000" in wide
    # Not a terminal: every line whole, for a log.
    plain = _Display(io.StringIO(), tty=False, columns=lambda: 40).line(12500, 12000, 950.0, totals)
    assert "tiktok-offline=9000" in plain


def what_next_config(stderr: str) -> Path:
    match = re.search(r"^  CONFIG=(\S+)$", stderr, re.M)
    assert match, stderr[-3000:]
    return Path(match.group(1))


def test_the_demo_prints_no_library_lines_and_ends_with_what_to_try_next() -> None:
    proc = run_demo("--broker", "mock", "--events", "120", "--rate", "500", "--poison-every", "30")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not RAW_LIBRDKAFKA.search(proc.stderr), proc.stderr
    config = what_next_config(proc.stderr)
    for command in ("dlq inspect", "replay", "retry inspect"):
        assert f'{command} --config "$CONFIG"' in proc.stderr
    assert "--keep" in proc.stderr  # how to keep the broker up for them
    # The printed configuration is complete: it loads with no environment at all.
    check = subprocess.run(
        [sys.executable, "-m", "streamproc", "check", "--config", str(config)],
        env={"PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_keep_leaves_the_broker_up_for_the_printed_commands() -> None:
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamproc",
            "demo",
            "--broker",
            "mock",
            "--events",
            "90",
            "--rate",
            "500",
            "--poison-every",
            "30",
            "--keep",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stderr is not None
        seen = ""
        deadline = time.monotonic() + 180
        while "Ctrl-C stops them" not in seen and time.monotonic() < deadline:
            line = demo.stderr.readline()
            if not line:
                break
            seen += line
        assert "Ctrl-C stops them" in seen, seen
        config = what_next_config(seen)
        inspect = subprocess.run(
            [sys.executable, "-m", "streamproc", "dlq", "inspect", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert inspect.returncode == 0, inspect.stderr
        assert "DecodeError" in inspect.stdout, inspect.stdout
        assert demo.poll() is None  # still up until told to stop
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(60)
    assert demo.returncode == 0


def test_every_entry_point_shares_one_broker_jar_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamproc.devtools import broker as local

    monkeypatch.delenv("KAFKA_LOCAL_CACHE", raising=False)
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_LOCAL_CACHE"}
    script = subprocess.run(
        ["bash", str(ROOT / "scripts" / "kafka-local"), "cache"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    packaged = subprocess.run(
        ["bash", str(ROOT / "streamproc" / "devtools" / "kafka-local"), "cache"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    # `streamproc demo` run directly, scripts/kafka-local and scripts/demo: the checkout's .cache/kafka.
    assert local.cache_dir() == ROOT / ".cache" / "kafka"
    assert Path(script.stdout.strip()) == Path(packaged.stdout.strip()) == local.cache_dir()
