"""Fixtures of the deploy tests: the helm that scripts/check-deploy installs (.cache/bin/helm), and a
chart renderer (its paths and types are in helm_render.py)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml
from helm_render import CHART, KUBE_VERSION, ROOT, Render, RenderError


@pytest.fixture(scope="session")
def helm() -> str:
    # Builds helm the first time (go install, minutes); later a quick check of .cache/bin.
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check-deploy"), "--tools-only"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=2400,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    """render(*helm_args, release="streamproc", namespace="data") -> the rendered objects."""

    def run(*args: str, release: str = "streamproc", namespace: str = "data") -> list[dict[str, Any]]:
        proc = subprocess.run(
            [
                helm,
                "template",
                release,
                str(CHART),
                "--namespace",
                namespace,
                "--kube-version",
                KUBE_VERSION,
                *args,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise RenderError(proc.stderr.strip())
        return [d for d in yaml.safe_load_all(proc.stdout) if d]

    return run
