"""`streamproc retry inspect` where nothing can be parked says so, without reading any topic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from streamproc.inspection import RetryInspection

NO_PARKING = """
kafka:
  bootstrap_servers: 127.0.0.1:1
  topics: [events]
destinations:
  - id: seg
    type: seg
    settings: {apiKey: abc8fb18-7559-4324-9921-a4b5015b4a1c}
"""


def inspect(*args: str) -> str:
    # A process of its own: the command configures the process's logging.
    proc = subprocess.run(
        [sys.executable, "-m", "streamproc", "retry", "inspect", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_without_a_parking_destination_it_says_nothing_can_wait(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(NO_PARKING)
    # The broker address is unreachable: the answer must come from the configuration alone.
    out = inspect("--config", str(path))
    assert "no destination parks deliveries" in out and "dlq inspect" in out
    assert "by destination" not in out

    doc = json.loads(inspect("--config", str(path), "--json"))
    assert doc["total"] == 0 and doc["parking_destinations"] == []


def test_an_empty_inspection_renders_one_line_not_empty_headings() -> None:
    text = RetryInspection().render()
    assert text.startswith("0 retry records waiting") and "\n" not in text
