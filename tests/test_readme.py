"""The README stays true: its lists of deliberate differences are the ones the code enforces."""

from pathlib import Path

from streamproc.filters import DELIBERATE_DIFFERENCES as GATE_DIFFERENCES
from streamproc.fql import DELIBERATE_DIFFERENCES

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_lists_every_deliberate_fql_difference() -> None:
    text = README.read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")}
    assert {d.name for d in DELIBERATE_DIFFERENCES} <= rows


def test_readme_lists_every_deliberate_gate_difference_in_its_gates_section() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Gates", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    for d in GATE_DIFFERENCES:
        assert d.name in rows, d.name
        assert d.streamproc in rows[d.name], d.name


def test_readme_commands_exist() -> None:
    text = README.read_text(encoding="utf-8")
    root = README.parent
    for script in ("scripts/demo", "scripts/test"):
        assert script in text
        assert (root / script).stat().st_mode & 0o111, f"{script} is not executable"
