"""Grafana's provisioning files give working values once Grafana expands them its own way.

Grafana expands `$VAR` and `${VAR}` in provisioning files with Go's os.ExpandEnv (`$$` is a literal
`$`): there are no shell defaults, so `${VAR:-x}` names a variable called `VAR:-x` and comes out empty.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

PROVISIONING = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "provisioning"
FILES = sorted(PROVISIONING.rglob("*.yaml"))
# What deploy/README.md and the files' own comments tell an operator to set.
DOCUMENTED_ENV = {"PROMETHEUS_URL": "http://prometheus-operated.monitoring.svc:9090"}

_SPECIAL = set("*#$@!?-0123456789")


def go_expand_env(text: str, env: Mapping[str, str]) -> str:
    """Go's os.Expand with os.Getenv as Grafana uses it, `$$` giving a literal `$`."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "$" or i + 1 >= len(text):
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "{":
            end = text.find("}", i + 2)
            if end < 0 or end == i + 2:  # "${" unclosed or "${}": Go drops the bad syntax
                i += 2 if end < 0 else 3
                continue
            name, i = text[i + 2 : end], end + 1
        elif nxt in _SPECIAL:
            name, i = nxt, i + 2
        else:
            m = re.match(r"[A-Za-z0-9_]+", text[i + 1 :])
            if m is None:  # a lone "$" before anything else stays as it is
                out.append(c)
                i += 1
                continue
            name, i = m.group(0), i + 1 + m.end()
        out.append("$" if name == "$" else env.get(name, ""))
    return "".join(out)


def test_the_expansion_rule_is_go_s() -> None:
    env = {"A": "1", "A_B": "2"}
    assert go_expand_env("x${A}y$A_B-$$", env) == "x1y2-$"
    assert go_expand_env("${A:-http://default}", env) == ""  # no shell defaults
    assert go_expand_env("${MISSING}", env) == ""


def leaves(doc: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(doc, dict):
        return [x for k, v in doc.items() for x in leaves(v, f"{path}.{k}" if path else str(k))]
    if isinstance(doc, list):
        return [x for i, v in enumerate(doc) for x in leaves(v, f"{path}[{i}]")]
    return [(path, doc)]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PROVISIONING)))
def test_no_value_expands_to_nothing(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    expanded = yaml.safe_load(go_expand_env(path.read_text(), DOCUMENTED_ENV))
    for (where, before), (_, after) in zip(leaves(raw), leaves(expanded), strict=True):
        if isinstance(before, str) and before:
            assert after not in ("", None), f"{path.name}: {where} = {before!r} expands to nothing"


def test_the_data_source_url_is_the_operator_s_prometheus() -> None:
    path = PROVISIONING / "datasources" / "prometheus.yaml"
    doc = yaml.safe_load(go_expand_env(path.read_text(), DOCUMENTED_ENV))
    (source,) = doc["datasources"]
    assert source["url"] == DOCUMENTED_ENV["PROMETHEUS_URL"]
    parts = urlsplit(source["url"])
    assert parts.scheme in ("http", "https") and parts.hostname
