"""The README stays true: its list of deliberate FQL differences is the one the code enforces."""

from pathlib import Path

from streamproc.fql import DELIBERATE_DIFFERENCES

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_lists_every_deliberate_fql_difference() -> None:
    text = README.read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")}
    assert {d.name for d in DELIBERATE_DIFFERENCES} <= rows


def test_readme_commands_exist() -> None:
    text = README.read_text(encoding="utf-8")
    root = README.parent
    for script in ("scripts/demo", "scripts/test"):
        assert script in text
        assert (root / script).stat().st_mode & 0o111, f"{script} is not executable"
