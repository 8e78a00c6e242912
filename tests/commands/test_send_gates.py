"""`streamproc send` with gates: one line per (event, instance) a gate withholds, with the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamproc.cli import main

GUID = "abc8fb18-7559-4324-9921-a4b5015b4a1c"
CONFIG = f"""
destinations:
  - id: seg-all
    type: seg
    settings: {{apiKey: {GUID}}}
    presets: [Identify]
  - id: seg-consented
    type: seg
    settings: {{apiKey: {GUID}}}
    presets: [Identify]
    consent_categories: [C0004]
  - id: seg-no-tests
    type: seg
    settings: {{apiKey: {GUID}}}
    presets: [Identify]
    filters:
      - {{if: "match(traits.email, '*@test.example')", drop: true}}
"""


def test_withheld_instances_get_one_line_each(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            json.dumps(e)
            for e in [
                {
                    "type": "identify",
                    "messageId": "m0",
                    "userId": "a@x.example",
                    "traits": {"email": "a@x.example"},
                },
                {
                    "type": "identify",
                    "messageId": "m1",
                    "userId": "b@test.example",
                    "traits": {"email": "b@test.example"},
                    "context": {"consent": {"categoryPreferences": {"C0004": False}}},
                },
                {"type": "identify", "messageId": "m2", "userId": "c", "integrations": {"Seg": False}},
                {"type": "track", "messageId": "m3", "event": "Nothing"},
            ]
        )
    )
    assert main(["send", "--config", str(config), "--events", str(events)]) == 0
    captured = capsysbinary.readouterr()
    lines: list[dict[str, Any]] = [json.loads(x) for x in captured.out.decode().splitlines()]
    withheld = [(x["messageId"], x["destination"], x["filtered"]) for x in lines if "filtered" in x]
    assert withheld == [
        ("m1", "seg-consented", "consent"),
        ("m1", "seg-no-tests", "filter_drop"),
        ("m2", "seg-all", "integrations"),
        ("m2", "seg-consented", "integrations"),
        ("m2", "seg-no-tests", "integrations"),
    ]
    assert all(set(x) == {"index", "messageId", "destination", "filtered"} for x in lines if "filtered" in x)
    delivered = [(x["messageId"], x["destination"]) for x in lines if "requests" in x]
    assert delivered == [
        ("m0", "seg-all"),
        ("m0", "seg-consented"),
        ("m0", "seg-no-tests"),
        ("m1", "seg-all"),
    ]
    assert "5 withheld by destination gates" in captured.err.decode()
