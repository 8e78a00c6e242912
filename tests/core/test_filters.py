"""Destination filters: Segment's worked examples, the IR the conditions compile to, the transforms,
sampling, the order of an instance's filters, and each deliberate difference."""

from __future__ import annotations

import random
from fractions import Fraction
from hashlib import md5
from typing import Any

import pytest

from streamproc.core.filters import (
    DELIBERATE_DIFFERENCES,
    FilterRule,
    FilterSyntaxError,
    apply_filters,
    consistent_fraction,
    drop_properties,
    in_segment_order,
    matches,
    parse_condition,
    property_rules,
    sample_keeps,
)
from streamproc.core.filters.evaluate import FilterEvaluationError
from streamproc.core.js import UNDEFINED, json_stringify


def holds(fql: str, event: Any) -> bool:
    return parse_condition(fql).matches(event)


# -- Segment's FQL reference: its example event and table ----------------------------------------------------

REFERENCE_EVENT = {
    "event": "Button Clicked",
    "type": "track",
    "context": {"library": {"name": "analytics.js", "version": "1.0"}},
    "properties": {"features": ["discounts", "dark-mode"]},
}


@pytest.mark.parametrize(
    ("fql", "expected"),
    [
        ("event = 'Button Clicked'", True),
        ("event = 'Screen Tapped'", False),
        ("context.path.path = '/login'", False),
        ("type = 'identify' or type = 'track'", True),
        ("event = 'Button Clicked' and type = 'track'", True),
        ("match( context.library.version, '1.*' )", True),
        ("match( context.library.version, '2.*' )", False),
        ("type = 'track' and ( event = 'Click' or match( event, 'Button *' ) )", True),
        ("!contains( context.library.name, 'js' )", False),
        ("'dark-mode' in properties.features", True),
        ("'blink' in properties.features", False),
    ],
)
def test_the_fql_references_examples(fql: str, expected: bool) -> None:
    assert holds(fql, REFERENCE_EVENT) is expected


def test_escaped_field_names_reach_fields_with_spaces() -> None:
    event = {"properties": {"product 1": {"price": "19.99"}}}
    assert holds("properties.product\\ 1.price = '19.99'", event)


@pytest.mark.parametrize(
    ("fql", "expected"),
    [
        ("contains( properties.missing, 'a' )", False),
        ("length( properties.nothing ) = 0", True),
        ("lowercase( properties.nothing ) = null", True),
        ("typeof( properties.nothing ) = 'null'", True),
        ("match( properties.nothing, '*' )", False),
        ("length( userId ) > 0", False),
    ],
)
def test_functions_handle_null_as_the_reference_says(fql: str, expected: bool) -> None:
    assert holds(fql, {"properties": {"nothing": None}, "userId": None}) is expected


@pytest.mark.parametrize(
    ("text", "pattern", "expected"),
    [
        ("abcd", "a*d", True),
        ("", "*", True),
        ("abc", "ab", False),
        ("abcd", "a??d", True),
        ("abcd", "*d", True),
        ("ab*d", "ab\\*d", True),
        ("abCd", "ab[cC]d", True),
        ("abcd", "ab[a-z]d", True),
        ("abcd", "ab[A-Z]d", False),
        ("ab/c", "a*", True),  # unlike file-system globs, * crosses '/'
        ("a☺b", "a?b", True),
        ("a", "[", False),  # a malformed pattern matches nothing
    ],
)
def test_match_globs_as_the_reference_describes(text: str, pattern: str, expected: bool) -> None:
    assert holds(f"match( properties.s, '{pattern}' )", {"properties": {"s": text}}) is expected


def test_the_destination_filter_guides_only_userid_example() -> None:
    """'Only send events with userId': drop when length(userId) < 1 or typeof(userId) != 'string'."""
    drop = [FilterRule(parse_condition("length( userId ) < 1 or typeof( userId ) != 'string'"), "drop")]
    for event, kept in [
        ({"userId": "u1"}, True),
        ({"userId": ""}, False),
        ({"userId": None}, False),
        ({"anonymousId": "a"}, False),
        ({"userId": 42}, False),
    ]:
        view, reason = apply_filters(drop, event, random.random)
        assert (view is not None) is kept, event
        assert reason == (None if kept else "filter_drop")


def test_the_destination_filter_guides_remove_userid_example() -> None:
    """`if: all` with DROP_PROPERTIES `{"": ["userId"]}` drops the top-level userId."""
    assert property_rules(["userId"]) == {"": ("userId",)}
    rule = FilterRule(parse_condition("all"), "drop_properties", properties=property_rules(["userId"]))
    event = {"type": "track", "userId": "u1", "properties": {"userId": "kept"}}
    view, reason = apply_filters([rule], event, random.random)
    assert view == {"type": "track", "properties": {"userId": "kept"}}
    assert reason is None
    assert event["userId"] == "u1"  # the caller's event is untouched: other instances see it whole


def test_property_filters_reach_each_object_of_an_array() -> None:
    """The guide's FAQ: `properties.products.newElement` removes newElement from every product."""
    event = {"properties": {"products": [{"sku": "a", "newElement": 1}, {"newElement": 2}, "text", None]}}
    drop_properties(event, property_rules(["properties.products.newElement"]))
    assert event == {"properties": {"products": [{"sku": "a"}, {}, "text", None]}}


def test_allow_properties_keeps_only_the_listed_members() -> None:
    rule = FilterRule(
        parse_condition("type = 'track'"),
        "allow_properties",
        properties=property_rules(["properties.sku", "properties.price", "context.page.url"]),
    )
    event = {
        "type": "track",
        "properties": {"sku": "a", "price": 1, "email": "x@y.z"},
        "context": {"page": {"url": "u", "referrer": "r"}, "ip": "1.2.3.4"},
    }
    view, _ = apply_filters([rule], event, random.random)
    assert view == {
        "type": "track",
        "properties": {"sku": "a", "price": 1},
        "context": {"page": {"url": "u"}, "ip": "1.2.3.4"},
    }


# -- the IR --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fql", "ir"),
    [
        ('event = "Test"', ["=", "event", {"value": "Test"}]),
        (
            "a = 1 or b = 2 or c = 3",
            ["or", ["=", "a", {"value": 1}], ["or", ["=", "b", {"value": 2}], ["=", "c", {"value": 3}]]],
        ),
        (
            "!(x = 1.5 and y != null)",
            ["!", ["and", ["=", "x", {"value": 1.5}], ["!=", "y", {"value": None}]]],
        ),
        (
            "x in ['a', 2, true, null, y]",
            ["in", "x", {"value": [{"value": "a"}, {"value": 2}, {"value": True}, {"value": None}, "y"]}],
        ),
        ("lowercase(event) = 'a'", ["=", ["lowercase", "event"], {"value": "a"}]),
        (
            "semver(context.app.version, '>=', '1.2')",
            ["semver", "context.app.version", {"value": ">="}, {"value": "1.2"}],
        ),
        ("properties.items.0.price >= -2", [">=", "properties.items.0.price", {"value": -2}]),
        ("properties.items.\\0.price < 1", ["<", "properties.items.0.price", {"value": 1}]),
        ("properties.enabled", "properties.enabled"),
        ("true", {"value": True}),
        ("!contains(a, 'b')", ["!", ["contains", "a", {"value": "b"}]]),
    ],
)  # fmt: skip
def test_conditions_compile_to_tsubs_ir(fql: str, ir: Any) -> None:
    assert parse_condition(fql).ir == ir


def test_the_ir_prints_as_segments_matchers_hold_it() -> None:
    condition = parse_condition('!(event = "CP VOD - Start video" or event = "CP VOD - Track video")')
    assert condition.ir_json() == (
        '["!",["or",["=","event",{"value":"CP VOD - Start video"}],'
        '["=","event",{"value":"CP VOD - Track video"}]]]'
    )
    assert parse_condition("all").ir_json() == "all"
    assert parse_condition("all").matches({})


@pytest.mark.parametrize(
    ("fql", "category", "words"),
    [
        ('userId = oops"', None, "directly after a name"),
        ("a = ", None, "missing at the end"),
        ("foo(x)", None, "unknown function foo()"),
        ("contains(a)", None, "takes 2 arguments"),
        ("x in [1,]", None, "expected a field"),
        ("(a = 1", None, "expected ')'"),
        ("a = 1)", None, "without its '('"),
        ("a = b = c", None, "second comparison"),
        ("", None, "empty condition"),
        ("x = -", None, "not a number"),
        ("a and b or c", "mixed-and-or", "mixed without parentheses"),
        ("!a = 1", "negation-scope", "before a comparison"),
        ("x = nul", "lost-text", "middle of a word"),
        ("properties.a\\.b = 1", "dotted-name", "contains '.'"),
    ],
)
def test_refusals_name_the_position_and_the_difference(fql: str, category: str | None, words: str) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse_condition(fql)
    assert info.value.category == category
    assert words in str(info.value)
    assert str(info.value).startswith("FQL error")


def test_lexing_refusals_carry_fql_ts_words() -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse_condition("message.event > 30.30.30")
    assert info.value.segment_message == "multiple decimal points in one number"
    assert info.value.position == 22  # fql-ts's README: error.cursor.column 22


# -- sampling ------------------------------------------------------------------------------------------------


def _reference_fraction(text: str) -> Fraction:
    """The sampler's number in exact arithmetic: 64 bits of the digest, leading zeros refilled from
    the next 8 bytes, the lowest bit flipped, scaled by 2**-64 (before rounding to a double)."""
    digest = md5(text.encode()).digest()
    bits = "".join(f"{b:08b}" for b in digest)
    zeros = len(bits) - len(bits.lstrip("0"))
    window = bits[zeros : zeros + 64]
    window = window[:63] + ("0" if window[63] == "1" else "1")
    return Fraction(int(window, 2), 2 ** (64 + zeros))


def test_the_sampling_number_follows_the_digest_bits() -> None:
    for value in ["u1", "user-2", 42, None, {"a": [1, "ア"]}, "😀"]:
        text = json_stringify(value)
        assert text is not None
        assert consistent_fraction(value) == float(_reference_fraction(text))
    assert consistent_fraction(UNDEFINED) == float(_reference_fraction("undefined"))


def test_sampling_by_a_path_keeps_the_share_and_always_the_same_values() -> None:
    users = [f"user-{i}" for i in range(20_000)]
    for percent in (0.01, 0.1, 0.5, 0.9):
        kept = [u for u in users if sample_keeps({"userId": u}, percent, "userId", random.random)]
        assert abs(len(kept) / len(users) - percent) < 0.015, percent
        again = [
            u for u in users if sample_keeps({"userId": u, "other": 1}, percent, "userId", random.random)
        ]
        assert kept == again
    small = {u for u in users if sample_keeps({"userId": u}, 0.1, "userId", random.random)}
    large = {u for u in users if sample_keeps({"userId": u}, 0.5, "userId", random.random)}
    assert small <= large  # raising the percent only adds values


def test_sampling_without_a_path_draws_for_each_event() -> None:
    draws = random.Random(7)
    kept = sum(sample_keeps({}, 0.25, None, draws.random) for _ in range(20_000))
    assert abs(kept / 20_000 - 0.25) < 0.015
    assert not sample_keeps({}, 0, None, lambda: pytest.fail("no draw at 0"))
    assert not sample_keeps({}, -1, "userId", lambda: 0.0)
    assert sample_keeps({}, 1, None, lambda: pytest.fail("no draw at 1"))
    assert sample_keeps({}, 0.5, None, lambda: 0.5)  # tsub keeps when the draw is <= percent


# -- an instance's filters -----------------------------------------------------------------------------------


def _rule(kind: str, fql: str = "all", **kw: Any) -> FilterRule:
    return FilterRule(parse_condition(fql), kind, **kw)  # type: ignore[arg-type]


def test_filters_run_in_segments_order_whatever_the_listed_order() -> None:
    rules = [
        _rule("allow_properties", properties=property_rules(["properties.a"])),
        _rule("drop", "properties.b = 1"),
        _rule("drop_properties", properties=property_rules(["properties.b"])),
        _rule("sample", percent=0.5, path="userId"),
    ]
    ordered = in_segment_order(rules)
    assert [r.kind for r in ordered] == ["sample", "drop", "drop_properties", "allow_properties"]
    # the drop sees properties.b before drop_properties removes it, whatever the listed order
    kept = next(
        f"u{i}" for i in range(100) if sample_keeps({"userId": f"u{i}"}, 0.5, "userId", random.random)
    )
    assert apply_filters(ordered, {"userId": kept, "properties": {"b": 1}}, random.random) == (
        None,
        "filter_drop",
    )
    view, reason = apply_filters(
        ordered, {"userId": kept, "properties": {"a": 1, "b": 2, "c": 3}}, random.random
    )
    assert (view, reason) == ({"userId": kept, "properties": {"a": 1}}, None)


def test_each_condition_reads_the_event_as_the_filters_before_left_it() -> None:
    rules = in_segment_order(
        [
            _rule("drop_properties", properties=property_rules(["properties.email"])),
            _rule(
                "allow_properties",
                "typeof(properties.email) = 'undefined'",
                properties=property_rules(["properties.sku"]),
            ),
        ]
    )
    view, _ = apply_filters(rules, {"properties": {"email": "a@b.c", "sku": 1, "x": 2}}, random.random)
    assert view == {"properties": {"sku": 1}}


def test_a_condition_tsub_throws_on_withholds_the_event() -> None:
    rules = [_rule("drop_properties", "'a' in properties.name", properties=property_rules(["x"]))]
    with pytest.raises(FilterEvaluationError):
        matches(rules[0].condition.ir, {"properties": {"name": "abc"}})
    assert apply_filters(rules, {"properties": {"name": "abc"}}, random.random) == (None, "filter_drop")


def test_a_redelivery_keeps_what_a_random_sample_would_draw_for() -> None:
    rules = [_rule("sample", percent=0.5)]
    assert apply_filters(rules, {}, lambda: 0.9) == (None, "filter_sample")
    assert apply_filters(rules, {}, lambda: 0.9, draw=False) == ({}, None)
    by_path = [_rule("sample", percent=0.0001, path="userId")]
    assert apply_filters(by_path, {"userId": "u"}, random.random, draw=False) == (None, "filter_sample")


# -- each deliberate difference, against tsub's own answer ---------------------------------------------------


@pytest.mark.parametrize(
    ("fql", "event", "tsub", "streamproc"),
    [
        ("typeof(properties.tags) = 'list'", {"properties": {"tags": []}}, False, True),
        ("typeof(properties.flag) = 'bool'", {"properties": {"flag": True}}, False, True),
        ("typeof(properties.x) = 'null'", {"properties": {"x": None}}, False, True),
        ("typeof(properties.x) = 'object'", {"properties": {"x": {}}}, True, True),
        ("length(properties.name) = 3", {"properties": {"name": "ア"}}, False, True),
        ("length(properties.name) = 2", {"properties": {"name": "😀"}}, True, False),
        ("'dark-mode' in properties.features", {"properties": {"features": ["dark-mode"]}}, False, True),
        ("properties.ids = [1, 2]", {"properties": {"ids": [1, 2]}}, False, True),
        ("contains(lowercase(event), 'order')", {"event": "Order Completed"}, False, True),
        ("lowercase(event) in ['order completed']", {"event": "Order Completed"}, False, True),
        (
            "properties.tags = 3",
            {"properties": {"tags": ["length", "properties.n"], "n": "abc"}},
            True,
            False,
        ),
    ],
)
def test_where_the_reference_wins_over_tsub_js(fql: str, event: Any, tsub: bool, streamproc: bool) -> None:
    condition = parse_condition(fql)
    assert condition.matches(event, "tsub") is tsub
    assert condition.matches(event) is streamproc


def test_inherited_javascript_properties_are_not_fields() -> None:
    assert holds("typeof(properties.constructor) = 'undefined'", {"properties": {}})
    assert not holds("typeof(properties.toString) = 'function'", {"properties": {}})
    assert holds("properties.constructor = 1", {"properties": {"constructor": 1}})


def test_a_dropped_array_item_reads_as_null() -> None:
    """A property rule on an array acts on each item; an item that is an array loses its index."""
    event = {"properties": {"rows": [[1, 2], [3], "x"]}}
    drop_properties(event, property_rules(["properties.rows.0"]))
    assert event == {"properties": {"rows": [[None, 2], [None], "x"]}}
    assert holds("properties.rows.0.0 = null", event)


def test_every_deliberate_difference_has_a_name_an_example_and_both_sides() -> None:
    names = [d.name for d in DELIBERATE_DIFFERENCES]
    assert len(names) == len(set(names))
    for d in DELIBERATE_DIFFERENCES:
        assert d.example and d.segment and d.streamproc
