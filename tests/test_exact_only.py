"""STREAMPROC_EXACT_ONLY=1 turns every fast path off (streamproc.core.fast_paths), and every answer
stays the same: Segment's differential cases still agree, and `send` prints the same requests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# With the switch on: every fast path is off, and objects built with their defaults take the exact
# way; then pytest runs the differential corpora given as arguments.
_EXACT_ONLY_RUN = """
import sys
import pytest
from streamproc.config import load_config
from streamproc.core import fast_paths
from streamproc.destinations import stackadapt
from streamproc.destinations.base import Request, fast_constructor
from streamproc.destinations.runtime import CompiledAction
from streamproc.router import Router

assert fast_paths.EXACT_ONLY
assert fast_paths.OFF == {p.name for p in fast_paths.FAST_PATHS}
router = Router(load_config("examples/config.yaml"))
assert router._index == {} and all(route.validated is None for route in router._routes)
action = CompiledAction(stackadapt.DESTINATION, "forwardEvent")
assert action.build is action.action.build_exact and action.schema is not None
assert fast_constructor(Request, ("method", "url", "headers", "body")) is Request
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
"""

DIFFERENTIAL = [
    "tests/core/test_mapping_differential.py",
    "tests/destinations/test_actions_differential.py",
    "tests/core/test_fql_differential.py",
    "tests/core/test_js_answers.py",
]


def _environment(exact_only: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "STREAMPROC_EXACT_ONLY"}
    if exact_only:
        env["STREAMPROC_EXACT_ONLY"] = "1"
    return env


def test_the_differential_corpora_give_segments_answers_with_every_fast_path_off() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _EXACT_ONLY_RUN, *DIFFERENTIAL],
        cwd=ROOT,
        env=_environment(exact_only=True),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout, proc.stdout[-2000:]


def _send(exact_only: bool) -> str:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamproc",
            "send",
            "--config",
            "examples/config.yaml",
            "--events",
            "examples/events.jsonl",
            "--now",
            "2026-03-02T10:00:00Z",
            "--show-secrets",
            "--show-pii",
        ],
        cwd=ROOT,
        env=_environment(exact_only),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_send_prints_the_same_requests_with_every_fast_path_off() -> None:
    fast, exact = _send(exact_only=False), _send(exact_only=True)
    assert fast.count("\n") > 10 and '"requests"' in fast
    assert exact == fast


def test_docs_list_every_fast_path() -> None:
    from streamproc.core import fast_paths

    text = (ROOT / "docs" / "fast-paths.md").read_text()
    rows = [line.split("|")[1].strip().strip("`") for line in text.splitlines() if line.startswith("| `")]
    assert rows == [p.name for p in fast_paths.FAST_PATHS]
