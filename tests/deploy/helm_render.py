"""Renders the Helm chart for the deploy tests: paths, the render function's type, its error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "streamproc"
KUBE_VERSION = "1.31.0"

Render = Callable[..., list[dict[str, Any]]]
"""render(*helm_args, release="streamproc", namespace="data") -> the rendered objects."""


class RenderError(Exception):
    """helm refused to render; the message is helm's."""


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found
