"""scripts/check-deploy passes: the chart renders valid objects for every value set, bad values are refused,
the Dockerfile lints clean, and the alert rules pass their promtool tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_check_deploy_passes() -> None:
    # The first run builds helm with go install (minutes); later runs reuse .cache/bin.
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check-deploy")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=2400,
        check=False,
    )
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail
    assert "check-deploy: PASS" in proc.stdout, tail
    assert "rejects writable-root-fs" in proc.stdout
