"""Installing streamproc prints no warnings: pyproject.toml uses the forms current setuptools expects."""

from __future__ import annotations

import tomllib
from pathlib import Path

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())


def test_the_license_is_an_spdx_expression_with_a_setuptools_that_reads_it() -> None:
    # A table here makes setuptools warn that the form is deprecated, at every install.
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    requires = PYPROJECT["build-system"]["requires"]
    setuptools = next(r for r in requires if r.startswith("setuptools"))
    assert setuptools.startswith("setuptools>=") and int(setuptools.split(">=")[1].split(".")[0]) >= 77


def test_the_package_directory_is_stated_so_an_editable_install_needs_no_import_finder() -> None:
    # Without it setuptools installs an import-hook finder and warns about folders in the working
    # directory taking precedence.
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"": "."}
