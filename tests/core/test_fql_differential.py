"""FQL triggers against the 600 differential cases that Segment's published packages answered."""

from __future__ import annotations

from typing import Any

import pytest
from spec_data import differential
from test_fql import DIFFERING_CASES, assert_explained_difference

from streamproc.errors import FQLError
from streamproc.fql import parse

CASES = differential("fql")


@pytest.mark.parametrize("row", CASES, ids=lambda row: str(row["input"]["id"]))
def test_same_answer_as_segment(row: dict[str, Any]) -> None:
    case, expected = row["input"], row["expected"]
    if case["id"] in DIFFERING_CASES:
        assert_explained_difference(case["id"], case["fql"])
    elif "error" in expected:
        with pytest.raises(FQLError):
            parse(case["fql"])
    else:
        assert parse(case["fql"]).matches(case["event"]) is expected["match"]


def test_all_600_cases_are_present() -> None:
    assert len(CASES) == 600
