"""Every alert links to its runbook entry, and every entry says what it means, what to check, what to do."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helm_render import CHART, Render, one

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbook.md"
ALERTS = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
RULES = [r for g in ALERTS["groups"] for r in g["rules"] if "alert" in r]


def sections() -> dict[str, str]:
    """GitHub-style anchor of each `## ` heading -> its text."""
    parts = re.split(r"^## (.+)$", RUNBOOK.read_text(), flags=re.M)
    return {
        re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-"): body
        for title, body in zip(parts[1::2], parts[2::2], strict=True)
    }


@pytest.mark.parametrize("rule", RULES, ids=[r["alert"] for r in RULES])
def test_each_alert_has_a_complete_runbook_entry(rule: dict) -> None:
    url = rule["annotations"].get("runbook_url")
    assert url == f"docs/runbook.md#{rule['alert'].lower()}", url
    body = sections().get(rule["alert"].lower())
    assert body is not None, f"docs/runbook.md has no '## {rule['alert']}'"
    for part in ("**What it means.**", "**What to check.**", "**What to do.**"):
        assert part in body, f"{rule['alert']}: no {part}"


def test_runbook_links_within_the_file_resolve() -> None:
    anchors = set(sections())
    for target in re.findall(r"\]\(#([^)]+)\)", RUNBOOK.read_text()):
        assert target in anchors, target


def test_the_chart_points_runbook_urls_where_the_runbook_is_served(render: Render) -> None:
    base = "https://git.example.com/data/streamproc/blob/main/"
    docs = render(
        "-f", str(CHART / "ci" / "monitoring-values.yaml"), "--set", f"prometheusRule.runbookBaseUrl={base}"
    )
    rules = [r for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    assert [r["annotations"]["runbook_url"] for r in rules] == [
        f"{base}docs/runbook.md#{r['alert'].lower()}" for r in rules
    ]
