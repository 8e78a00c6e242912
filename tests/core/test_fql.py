"""FQL triggers against Segment's own tests and executed edge cases (spec sections A, B and C)."""

from __future__ import annotations

from typing import Any

import pytest
from spec_data import cases

from streamproc.core.fql import compile_segment_ast
from streamproc.core.js import UNDEFINED
from streamproc.errors import FQLError
from streamproc.fql import DELIBERATE_DIFFERENCES, FQLSyntaxError, parse

# Every spec case where streamproc's answer differs from Segment's, with the deliberate difference
# (streamproc.fql.DELIBERATE_DIFFERENCES) that explains it. Anything not listed must agree exactly.
DIFFERING_CASES: dict[str, tuple[str, str]] = {
    "FQL-P-05": ("missing-value", '`type = ` compares type with the text "eos" in Segment'),
    "FQL-D-02": ("single-quotes", "Segment keeps the single quotes inside the value"),
    "FQL-D-27": ("unknown-field", "`1e3` is the number 1 and a dropped identifier `e3`"),
    "FQL-D-35": ("bare-word", 'unquoted `foo` is compared as the text "foo"'),
    "FQL-D-40": ("field-path", "`.0` cannot be a path segment; Segment builds a garbage condition"),
    "FQL-D-41": ("field-path", "`.or` cannot be a path segment; Segment builds a garbage condition"),
    "FQL-D-48": ("unknown-field", "contains(type, ...) is silently dropped by Segment"),
    "FQL-D-53": ("match-pattern", 'a pattern without "*" means ends-with minus its first character'),
    "FQL-D-54": ("match-pattern", '"*abc*" means starts-with "*abc" in Segment'),
    "FQL-D-55": ("single-quotes", "a single-quoted pattern keeps its quotes"),
    "FQL-D-58": ("mixed-and-or", "the last conjunction applies to the whole level"),
    "FQL-D-59": ("mixed-and-or", "the last conjunction applies to the whole level"),
    "FQL-D-60": ("mixed-and-or", "the last conjunction applies to the whole level"),
    "FQL-D-63": ("nested-parentheses", "Segment cannot parse nested parentheses; streamproc can"),
    "FQL-D-64": ("function-in-group", "the group ends at the function's ')'"),
    "FQL-D-66": ("negation", "'!' before a group is ignored"),
    "FQL-D-67": ("unknown-field", "`not` is an unknown identifier that Segment drops"),
    "FQL-D-69": ("unknown-field", "upper-case AND is an unknown identifier that Segment drops"),
    "FQL-D-70": ("dangling-conjunction", "a trailing `and` is ignored"),
    "FQL-D-71": ("double-equals", '`==` compares with the text "="'),
    "FQL-D-72": ("syntax", 'no escapes in strings: `"A\\"B"` is the value A\\ and a skipped "B"'),
    "FQL-D-73": ("unknown-field", "unknown field `foo` is dropped"),
    "FQL-D-76": ("missing-value", '`type = ` compares type with the text "eos" in Segment'),
}

CATEGORY_NAMES = {d.name for d in DELIBERATE_DIFFERENCES}


def _id(case: dict[str, Any]) -> str:
    return str(case["id"])


def assert_explained_difference(case_id: str, fql: str) -> None:
    """The case is a listed deliberate difference and streamproc behaves as that entry says."""
    category, _reason = DIFFERING_CASES[case_id]
    assert category in CATEGORY_NAMES
    if category == "nested-parentheses":
        trigger = parse(fql)
        assert "nested-parentheses" in trigger.extensions
        return
    with pytest.raises(FQLSyntaxError) as info:
        parse(fql)
    assert info.value.category == category, str(info.value)
    assert str(info.value).startswith("FQL error at position ")


def test_every_listed_difference_names_a_known_category() -> None:
    assert {category for category, _ in DIFFERING_CASES.values()} <= CATEGORY_NAMES


@pytest.mark.parametrize("case", cases("A"), ids=_id)
def test_parse_matches_segment_ast(case: dict[str, Any]) -> None:
    if case["id"] in DIFFERING_CASES:
        assert_explained_difference(case["id"], case["fql"])
    elif "expected_error" in case:
        with pytest.raises(FQLError):
            parse(case["fql"])
    else:
        assert parse(case["fql"]).ast == case["expected_ast"]


@pytest.mark.parametrize("case", cases("B"), ids=_id)
def test_validate_matches_segment(case: dict[str, Any]) -> None:
    ast = case["ast"]
    assert compile_segment_ast(ast)(case["event"]) is case["expected"]
    fql = case.get("fql_equivalent")
    if fql and case["id"] not in DIFFERING_CASES and "error" not in ast:
        assert parse(fql).matches(case["event"]) is case["expected"]


@pytest.mark.parametrize("case", cases("C"), ids=_id)
def test_executed_edge_cases(case: dict[str, Any]) -> None:
    if case["id"] in DIFFERING_CASES:
        assert_explained_difference(case["id"], case["fql"])
        return
    if "parse_error" in case:
        with pytest.raises(FQLError):
            parse(case["fql"])
        return
    trigger = parse(case["fql"])
    assert trigger.ast == case["ast"]
    assert trigger.matches(case["event"]) is case["expected"]


def test_section_counts_are_complete() -> None:
    assert (len(cases("A")), len(cases("B")), len(cases("C"))) == (48, 135, 77)


# --- error messages name the position and the fix


@pytest.mark.parametrize(
    ("fql", "position", "category", "fix"),
    [
        ('event == "A"', 7, "double-equals", "use '='"),
        ("properties.total <=5", 18, "glued-operator", "put a space after the operator"),
        ('anonymousId != null and type = "track"', 1, "unknown-field", "test type, event, name"),
        ('not event = "A"', 1, "unknown-field", "use '!='"),
        ('event = "a" AND event = "b"', 13, "unknown-field", "write 'and'"),
        ('!(event = "A")', 1, "negation", "negate each condition"),
        ('type = "track" and event = "A" or event = "B"', 32, "mixed-and-or", "add parentheses"),
        ("event = 'Foo'", 9, "single-quotes", 'use double quotes: "Foo"'),
        ('event = "A" and', 13, "dangling-conjunction", "remove 'and'"),
        ('or event = "A"', 1, "dangling-conjunction", "remove 'or'"),
        ("type = ", 6, "missing-value", "add a value"),
        ('match(event, "abc")', 14, "match-pattern", '"abc*"'),
        ("properties.plan = premium", 19, "bare-word", 'quote it: "premium"'),
        ("properties.flag = True", 19, "bare-word", "lowercase"),
        ('userId.id = "x"', 1, "field-path", "test 'userId' directly"),
        ("properties = null", 1, "field-path", "properties.plan"),
        ("properties.a\\.b = 1", 1, "field-path", "cannot address keys"),
        ('contains(propertiesX, "a")', 10, "field-path", "properties.plan"),
        ('(contains(event, "A") or event = "B") and type = "track"', 2, "function-in-group", "to the end"),
        ('event = "A" type = "track"', 13, "syntax", "'and' / 'or'"),
        ('event = "A" "B"', 13, "syntax", "'and' / 'or'"),
        ('contains(event "A")', 16, "syntax", "contains(field"),
        ('event = "A" and ()', 17, "syntax", "put a condition inside"),
        ("properties.x = -", 16, "syntax", "not a number"),
        ('lowercase(event) = "a"', 1, "unknown-field", "contains(field"),
        ('contains(type, "tr") and event = "x"', 10, "unknown-field", "type = "),
    ],
)
def test_refused_triggers_name_position_category_and_fix(
    fql: str, position: int, category: str, fix: str
) -> None:
    with pytest.raises(FQLSyntaxError) as info:
        parse(fql)
    error = info.value
    assert error.category == category
    assert error.position == position
    assert str(error).startswith(f"FQL error at position {position}: ")
    assert fix in str(error)
    assert error.fql == fql


@pytest.mark.parametrize(
    ("fql", "fix"),
    [
        ("", "write a condition"),
        ("properties.x>5", "put a space between the field and the operator"),
        ("userId!=null", "put a space after '!='"),
        ('properties.items[0] = "a"', "no [index]"),
        ('event = "A"\r\n', "LF line endings"),
        ('event = "A', "end it with"),
        ('event = "A" && type = "track"', "'and' / 'or'"),
        ("properties.x = 5.", "digits after the point"),
        ('((event = "A")', "add the missing ')'"),
        ("type", "operator"),
    ],
)
def test_triggers_segment_also_rejects_raise_with_a_fix(fql: str, fix: str) -> None:
    with pytest.raises(FQLSyntaxError) as info:
        parse(fql)
    assert info.value.category is None
    assert fix in str(info.value)


def test_a_quote_glued_to_the_next_character_is_explained() -> None:
    with pytest.raises(FQLSyntaxError) as info:
        parse('event = "A"x')
    assert info.value.position == 11
    assert "followed directly by 'x'" in str(info.value)
    with pytest.raises(FQLSyntaxError) as info:
        parse('type = "track"\r\nand event = "A"')
    assert "LF line endings" in str(info.value)


def test_position_counts_characters_not_utf16_units() -> None:
    with pytest.raises(FQLSyntaxError) as info:
        parse('event = "😀" and')
    assert info.value.position == 13


# --- evaluation rules a trigger author relies on


def test_nested_parentheses_are_supported() -> None:
    trigger = parse(
        '(type = "track" and (event = "A" or (event = "B" and properties.x > 1))) or type = "page"'
    )
    assert trigger.extensions == {"nested-parentheses"}
    assert trigger.matches({"type": "track", "event": "B", "properties": {"x": 2}})
    assert not trigger.matches({"type": "track", "event": "B", "properties": {"x": 1}})
    assert trigger.matches({"type": "page"})
    assert not trigger.matches({"type": "identify", "event": "A"})


def test_deep_nesting_is_refused_with_fql_error() -> None:
    assert parse("(" * 64 + 'event = "A"' + ")" * 64).matches({"event": "A"})
    with pytest.raises(FQLSyntaxError) as info:
        parse("(" * 5000 + 'event = "A"' + ")" * 5000)
    assert info.value.category is None
    assert "nested more than 64 levels" in str(info.value)


def test_single_level_parentheses_are_not_an_extension() -> None:
    assert parse('(event = "A" or event = "B") and type = "track"').extensions == frozenset()


def test_function_last_in_group_is_accepted() -> None:
    trigger = parse('type = "track" and (event = "A" or contains(event, "B"))')
    assert trigger.matches({"type": "track", "event": "xBx"})
    assert not trigger.matches({"type": "page", "event": "xBx"})


@pytest.mark.parametrize(
    ("fql", "event", "expected"),
    [
        ("properties.x = 5", {"properties": {"x": True}}, False),  # booleans are never numbers
        ("properties.x = 1", {"properties": {"x": True}}, False),
        ("properties.x > 0", {"properties": {"x": True}}, False),
        ("properties.x = true", {"properties": {"x": 1}}, False),
        ("properties.x = 5", {"properties": {"x": 5.0}}, True),
        ('properties.x = "5"', {"properties": {"x": 5}}, False),
        ("properties.x != 5", {"properties": {}}, False),
        ('properties.x != "5"', {"properties": {}}, True),
        ("properties.a.b = 0", {"properties": {"a": 0}}, True),  # the walk stops at a falsy value
        ("properties.a.b = null", {"properties": {"a": ""}}, False),
        ('properties.a.b != "x"', {"properties": {"a": []}}, True),
        ("properties.items.length > 1", {"properties": {"items": [1, 2]}}, True),
        ("properties.name.length = 3", {"properties": {"name": "abc"}}, True),
        ("properties.x != null", {"properties": {"x": 0}}, True),
        ("properties.x = null", {"properties": {"x": UNDEFINED}}, True),
        ("context.page.search != null", {"context": {"page": {"search": "?q"}}}, True),
        ("userId = 123", {"userId": "123"}, True),
        ("userId = 123", {"userId": 123}, False),
        ("event != null", {}, True),  # event has no presence test in Segment: text "null"
        ("properties.big > 9007199254740992", {"properties": {"big": 9007199254740993}}, False),
        ("properties.x < 1e", {"properties": {"x": 0}}, None),
        ('contains(userId, "abc")', {"userId": 123}, False),
        ('!contains(event, "Test")', {}, False),
        ('!match(properties.sku, "*Z")', {"properties": {"sku": "ABC"}}, True),
        ('match(event, "*")', {"event": ""}, True),
        ("contains(event, 5)", {"event": "x5"}, True),
        ('traits.n > ""', {"traits": {"n": 1}}, True),  # Number("") is 0
        ('traits.n > "0x10"', {"traits": {"n": 17}}, True),
    ],
)
def test_strict_typed_evaluation(fql: str, event: dict[str, Any], expected: bool | None) -> None:
    if expected is None:
        with pytest.raises(FQLError):
            parse(fql)
        return
    assert parse(fql).matches(event) is expected


def test_extreme_literals_and_paths_do_not_break_matching() -> None:
    huge_hex = parse('properties.x < "0x' + "f" * 400 + '"')
    assert huge_hex.matches({"properties": {"x": 1e308}}) is True  # Number() of it is Infinity
    long_index = parse("properties.a.\\" + "1" * 6000 + " = 1")
    assert long_index.matches({"properties": {"a": [1]}}) is False
    assert parse("properties.big > 1").matches({"properties": {"big": 10**400}}) is True


def test_non_object_events_read_as_empty_and_undefined_never_matches() -> None:
    trigger = parse('properties.x != "5"')
    assert trigger.matches("") is True  # type: ignore[arg-type]
    assert trigger.matches(UNDEFINED) is False  # type: ignore[arg-type]


def test_deliberate_differences_table_is_complete_and_unique() -> None:
    names = [d.name for d in DELIBERATE_DIFFERENCES]
    assert len(names) == len(set(names))
    for difference in DELIBERATE_DIFFERENCES:
        assert difference.example and difference.segment and difference.streamproc


def test_each_difference_example_behaves_as_documented() -> None:
    for difference in DELIBERATE_DIFFERENCES:
        example = difference.example.split(" / ")[0]
        if difference.name == "nested-parentheses":
            assert parse(example).extensions == {"nested-parentheses"}
            continue
        with pytest.raises(FQLSyntaxError) as info:
            parse(example)
        assert info.value.category == difference.name, (example, str(info.value))


def test_unknown_category_is_refused() -> None:
    with pytest.raises(ValueError):
        FQLSyntaxError("x", 1, "x", "no-such-category")
