"""Destination filters against Segment's engine: every case of the recorded corpus, without Node.

tests/data/filter-corpus.jsonl holds what @segment/tsub 2.0.1 and @segment/fql-ts 1.10.1 answered
(tests/data/filter_answers.py records it). streamproc's "tsub" dialect must agree with every answer;
the default ("segment") dialect may differ only where a listed deliberate difference explains it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streamproc.core.filters import (
    DELIBERATE_DIFFERENCES,
    FilterEvaluationError,
    FilterSyntaxError,
    allow_properties,
    drop_properties,
    matches,
    parse_condition,
    sample_keeps,
)
from streamproc.core.filters.evaluate import is_call
from streamproc.core.fql_lexer import Lexer, LexError
from streamproc.core.js import code_units

CORPUS = Path(__file__).resolve().parent.parent / "data" / "filter-corpus.jsonl"
CASES = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
MATCH = [c for c in CASES if c["kind"] == "match"]
TRANSFORM = [c for c in CASES if c["kind"] == "transform"]
LEX = [c for c in CASES if c["kind"] == "lex"]
NAMES = {d.name for d in DELIBERATE_DIFFERENCES}


def test_the_corpus_is_large_and_covers_every_operator_and_function() -> None:
    assert len(MATCH) + len(TRANSFORM) >= 2000
    assert len(LEX) >= 500
    heads: Counter[str] = Counter()

    def walk(ir: Any) -> None:
        if isinstance(ir, list) and ir and isinstance(ir[0], str):
            heads[ir[0]] += 1
            for part in ir[1:]:
                walk(part)
        elif isinstance(ir, dict) and isinstance(ir.get("value"), list):
            for part in ir["value"]:
                walk(part)

    for case in MATCH:
        walk(case["ir"])
    operators = {"!", "and", "or", "=", "!=", "<", "<=", ">", ">=", "in"}
    functions = {"contains", "match", "lowercase", "typeof", "length", "semver"}
    assert operators | functions <= set(heads), heads
    answers = Counter(str(c["answer"]) for c in MATCH)
    assert answers["True"] >= 300 and answers["False"] >= 300 and answers["error"] >= 20, answers
    kinds = Counter(t["type"] for c in TRANSFORM for t in c["transformers"])
    assert {"drop", "drop_properties", "allow_properties", "sample_event"} <= set(kinds), kinds


def _tsub_answer(ir: Any, event: Any) -> Any:
    try:
        return matches(ir, event, "tsub")
    except FilterEvaluationError:
        return "error"


@pytest.mark.parametrize("case", MATCH, ids=lambda c: c["id"])
def test_tsub_dialect_answers_as_tsub(case: dict[str, Any]) -> None:
    assert _tsub_answer(case["ir"], case["event"]) == case["answer"]


def _explaining(ir: Any) -> set[str]:
    """The deliberate differences a condition can run into (by what it contains)."""
    found: set[str] = set()

    def walk(node: Any, value_position: bool) -> None:
        if isinstance(node, dict) and isinstance(node.get("value"), list):
            found.add("list-literal")
            for item in node["value"]:
                walk(item, True)
            return
        if not (isinstance(node, list) and node and isinstance(node[0], str)):
            return
        head = node[0]
        if head == "typeof":
            found.add("typeof-names")
        if head == "length":
            found.add("length-bytes")
        if head == "in":
            found.add("in-event-list")
        if is_call(node) and value_position:
            found.add("nested-call")
        for part in node[1:]:
            walk(part, head not in ("and", "or", "!"))
        if head in ("=", "!=", "<", "<=", ">", ">="):
            found.add("nested-call")  # tsub also runs event lists shaped like calls here

    walk(ir, False)
    return found


def test_segment_dialect_differs_only_where_a_listed_difference_explains_it() -> None:
    differing: Counter[str] = Counter()
    for case in MATCH:
        try:
            ours: Any = matches(case["ir"], case["event"])
        except FilterEvaluationError:
            ours = "error"
        if ours == case["answer"]:
            continue
        reasons = _explaining(case["ir"])
        assert reasons, f"{case['id']}: {case['ir']} on {case['event']}: {ours} vs tsub {case['answer']}"
        assert reasons <= NAMES
        differing.update(reasons)
    assert sum(differing.values()) < len(MATCH) / 4, differing


def _tsub_transform(event: Any, transformers: list[dict[str, Any]]) -> Any:
    """tsub's transform() with streamproc's transforms; sampling as tsub-js 2.0.1 installs today
    (with a path the number is ~0: kept whenever 0 < percent < 1; see "sample-path")."""
    for t in transformers:
        kind = t["type"]
        if kind == "drop":
            return None
        if kind == "drop_properties":
            drop_properties(event, t["config"]["drop"])
        elif kind == "allow_properties":
            allow_properties(event, t["config"]["allow"])
        else:
            sample = t["config"]["sample"]
            percent, path = sample["percent"], sample.get("path")
            if path and 0 < percent < 1:
                continue
            if not sample_keeps(event, percent, path, lambda: pytest.fail("drew at random")):
                return None
    return event


def _as_javascript(value: Any) -> Any:
    """The value after a JSON round trip through JavaScript: integers beyond 2**53 rounded."""
    if isinstance(value, dict):
        return {k: _as_javascript(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_javascript(v) for v in value]
    if type(value) is int and abs(value) > 2**53:
        return float(value)
    return value


@pytest.mark.parametrize("case", TRANSFORM, ids=lambda c: c["id"])
def test_transforms_answer_as_tsub(case: dict[str, Any]) -> None:
    try:
        ours = _tsub_transform(case["event"], case["transformers"])
    except FilterEvaluationError:
        ours = "error"
    assert _as_javascript(ours) == case["answer"]


@pytest.mark.parametrize("case", LEX, ids=lambda c: c["id"])
def test_lexer_yields_fql_ts_tokens_and_refusals(case: dict[str, Any]) -> None:
    text = case["fql"]
    try:
        tokens = Lexer(code_units(text)).lex()
    except LexError as exc:
        assert exc.segment == case.get("error"), "fql-ts lexes this text"
        with pytest.raises(FilterSyntaxError) as info:
            parse_condition(text)
        assert info.value.segment_message == case["error"]
        return
    assert "error" not in case, f"fql-ts refuses this text: {case.get('error')}"
    assert [[t.kind, t.text] for t in tokens] == case["tokens"]


class _Lax(Exception):
    """fql-ts's subset parser took names with no '.' between them as one path (`x in y`)."""


def _ast_conditions(root: dict[str, Any]) -> tuple[set[str], list[Any]]:
    """fql-ts's (subset) AST as conjunctions and IR leaves."""

    def expr(node: dict[str, Any]) -> Any:
        (child,) = node["children"]
        if child.get("type") == "path":
            kinds = [t["type"] for t in child["children"]]
            if kinds != ["ident", "dot"] * (len(kinds) // 2) + ["ident"]:
                raise _Lax
            path = ".".join(t["value"] for t in child["children"] if t["type"] == "ident")
            # fql-ts's AST has no booleans; Segment's IR reads them as values (tsub's tests: "FQL: true")
            return {"value": path == "true"} if path in ("true", "false") else path
        if child.get("type") == "func":
            name, *args = child["children"]
            return [name["value"], *(expr(a) for a in args)]
        kind, value = child["type"], child["value"]
        if kind == "string":
            return {"value": value[1:-1]}
        if kind == "number":
            return {"value": float(value)}
        return {"value": None}

    conjunctions: set[str] = set()
    leaves: list[Any] = []
    for node in root["children"]:
        if node["type"] == "conditional":
            conjunctions.add(node["children"][0]["value"])
            continue
        parts = node["children"]
        if len(parts) == 1:
            leaves.append(expr(parts[0]))
        else:
            leaves.append([parts[1]["children"][0]["value"], expr(parts[0]), expr(parts[2])])
    return conjunctions, leaves


def _ir_leaves(ir: Any, conjunction: str | None) -> list[Any]:
    if conjunction is not None and isinstance(ir, list) and ir and ir[0] == conjunction:
        return [leaf for part in ir[1:] for leaf in _ir_leaves(part, conjunction)]
    return [ir]


def _numbers_as_floats(ir: Any) -> Any:
    if isinstance(ir, list):
        return [_numbers_as_floats(x) for x in ir]
    if isinstance(ir, dict):
        value = ir.get("value")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"value": float(value)}
        return {k: _numbers_as_floats(v) for k, v in ir.items()}
    return ir


def test_what_fql_ts_parses_streamproc_reads_alike() -> None:
    """Where fql-ts's own (subset) parser accepts a text and streamproc does too, both read the same
    comparisons joined by the same conjunction."""
    compared = 0
    for case in LEX:
        if "ast" not in case or case["fql"].strip() == "all":  # `all` is no FQL: every event
            continue
        try:
            condition = parse_condition(case["fql"])
        except FilterSyntaxError:
            continue
        try:
            conjunctions, leaves = _ast_conditions(case["ast"])
        except _Lax:
            continue
        if len(conjunctions) > 1:
            continue
        conjunction = next(iter(conjunctions), None)
        assert _numbers_as_floats(_ir_leaves(condition.ir, conjunction)) == _numbers_as_floats(leaves), case[
            "fql"
        ]
        compared += 1
    assert compared >= 50
