"""Dependencies: bounded on both sides, pinned by constraints.txt, and installed at those pins by every
set-up (scripts/bootstrap for CI and development, the Dockerfile, the README)."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def declared() -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["dependencies"]]
    for extra in PYPROJECT["optional-dependencies"].values():
        reqs.extend(Requirement(r) for r in extra)
    return reqs


def pins() -> dict[str, Version]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            out[canonicalize_name(name)] = Version(version)
    return out


def test_every_dependency_has_an_upper_bound() -> None:
    for req in declared():
        assert any(s.operator in ("<", "<=", "==", "~=") for s in req.specifier), f"{req} has no upper bound"


def test_every_pin_is_within_the_declared_bounds() -> None:
    pinned = pins()
    for req in declared():
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        version = pinned.get(canonicalize_name(req.name))
        assert version is not None, f"{req.name} is not pinned in constraints.txt; run scripts/lock"
        assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version} is not {req}"


def test_aiohttp_is_past_its_published_advisories() -> None:
    # aiohttp serves the partner simulator and parses partners' answers when it is the chosen
    # client; 3.14.3 fixes the last advisories
    # (request smuggling via WebSocket upgrade, an out-of-bounds read in the response parser).
    (aiohttp,) = [r for r in declared() if r.name == "aiohttp"]
    assert not aiohttp.specifier.contains("3.14.2") and aiohttp.specifier.contains("3.14.3")
    assert pins()["aiohttp"] >= Version("3.14.3")


def needed() -> set[str]:
    """streamproc's requirements with all its extras, and theirs, as installed here."""
    todo = [Requirement(r) for r in metadata.requires("streamproc") or ()]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (
            req.marker is not None
            and not any(req.marker.evaluate({"extra": e}) for e in ("", "test", "dev", "avro"))
        ):
            continue
        seen.add(name)
        todo.extend(
            r
            for r in (Requirement(x) for x in metadata.requires(req.name) or ())
            if r.marker is None or r.marker.evaluate({"extra": ""})
        )
    return seen


def test_everything_installed_is_pinned_at_its_pin() -> None:
    pinned = pins()
    missing = sorted(needed() - set(pinned))
    assert not missing, f"not in constraints.txt: {missing}; run scripts/lock"
    for name in needed():
        installed = Version(metadata.version(name))
        assert installed == pinned[name], (
            f"{name} {installed} is installed, constraints.txt says {pinned[name]}"
        )


def test_every_set_up_installs_with_the_constraints() -> None:
    assert "-c constraints.txt -e '.[test,dev,avro]'" in (ROOT / "scripts" / "bootstrap").read_text()
    assert "scripts/bootstrap" in (ROOT / ".ci" / "run").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "constraints.txt ./" in dockerfile
    assert dockerfile.count("-c constraints.txt") == 2  # building the wheels and installing them
    assert "pip install -c constraints.txt" in (ROOT / "README.md").read_text()
