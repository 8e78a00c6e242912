"""The mapping kit against the 400 differential mapping cases recorded from Segment's actions-core."""

from __future__ import annotations

from typing import Any

import pytest
from spec_data import differential, normalise

from streamproc.core import mapping as mk
from streamproc.core.js import UNDEFINED
from streamproc.errors import MappingError

# Cases whose recorded output streamproc does not reproduce, with the reason. Empty: every
# recorded case is matched.
NOT_MATCHED: dict[str, str] = {}


def _params() -> list[Any]:
    out = []
    for row in differential("mapping"):
        case_id = row["input"]["id"]
        reason = NOT_MATCHED.get(case_id)
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        out.append(pytest.param(row, id=case_id, marks=marks))
    return out


def test_all_differential_cases_are_present() -> None:
    assert len(differential("mapping")) == 400


@pytest.mark.parametrize("codegen", [True, False], ids=["codegen", "closures"])
@pytest.mark.parametrize("row", _params())
def test_mapping_matches_segment(row: dict[str, Any], codegen: bool) -> None:
    case, expected = row["input"], row["expected"]
    if "error" in expected:
        with pytest.raises(MappingError) as caught:
            mk.compile(case["mapping"], codegen=codegen).resolve(case["event"])
        assert str(caught.value) == expected["error"]
        return
    compiled = mk.compile(case["mapping"], codegen=codegen)
    result = compiled.resolve(case["event"])
    if expected["output"] is UNDEFINED:
        assert result is UNDEFINED
    else:
        assert normalise(result) == normalise(expected["output"])
    # Resolving twice gives the same answer: nothing in the compiled form is consumed.
    assert normalise(compiled.resolve(case["event"])) == normalise(result)
