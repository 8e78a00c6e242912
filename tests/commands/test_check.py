"""`streamproc check`: every problem printed with its location and exit 1, or a summary and exit 0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_config import register_fake

from streamproc.cli import main

GOOD = """
kafka:
  bootstrap_servers: localhost:9092
  topics: [events]
destinations:
  - id: seg
    type: seg
    settings: {apiKey: "${SEG_ID:-abc8fb18-7559-4324-9921-a4b5015b4a1c}"}
  - id: f1
    type: fake
    settings: {key: k}
    subscriptions:
      - {name: orders, trigger: 'event = "Order Completed"', action: send}
      - {name: paused, trigger: 'type = "page"', action: send, enabled: false}
"""

BAD = """
destinations:
  - id: seg
    type: seg
    settings: {apiKey: not-a-guid}
  - id: f1
    type: fake
    settings: {key: "${MISSING_KEY}"}
    subscriptions:
      - {name: orders, trigger: 'event ==== "x"', action: sned}
"""


@pytest.fixture(autouse=True)
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("MISSING_KEY", raising=False)
    monkeypatch.delenv("SEG_ID", raising=False)
    return register_fake(monkeypatch)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_a_good_config_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD)
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: OK\n")
    assert "kafka: events (group streamproc) -> dead letters to events.dlq" in out
    assert (
        "destination seg (seg) -> https://tracker.segapp.com; ordering none; 7 of 7 subscriptions enabled"
        in out
    )
    assert "  - Order Placed [preset Order Placed]: track when" in out
    assert "destination f1 (fake) -> https://fake.example; ordering none; 1 of 2 subscriptions enabled" in out
    assert '  - paused (disabled): send when type = "page"' in out
    assert out.rstrip().endswith("2 destinations, 8 enabled subscriptions (9 in all)")


def test_every_problem_is_printed_and_the_exit_code_is_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, BAD)
    assert main(["check", "--config", str(path)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith(f"{path}: destinations[0].settings.apiKey: ")
    assert lines[1] == f"{path}: destinations[1].settings.key: environment variable MISSING_KEY is not set"
    # in the order of the file: the trigger comes before the action there
    assert lines[2].startswith(f"{path}: destinations[1].subscriptions[0].trigger: ")
    assert lines[3].startswith(f"{path}: destinations[1].subscriptions[0].action: unknown action 'sned'")
    assert len(lines) == 4
    assert "4 problems found" in captured.err


def test_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read the file" in capsys.readouterr().out


def test_the_example_config_checks_clean(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "config.yaml"
    assert main(["check", "--config", str(example)]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "destination tiktok-offline (tiktok-offline-conversions)" in out
