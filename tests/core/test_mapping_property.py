"""Property tests: whatever JSON a Mapping or an event holds, the mapping kit fails only with MappingError."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproc.core import mapping as mk
from streamproc.core.js import UNDEFINED
from streamproc.errors import MappingError

KEYS = st.sampled_from(
    [
        "a",
        "b",
        "0",
        "length",
        "_metadata",
        "__segment_internal_directive",
        "exists",
        "blank",
        "then",
        "else",
        "operator",
        "value",
        "pattern",
        "replacement",
        "pattern2",
        "replacement2",
        "ignorecase",
        "global",
        "mode",
        "separator",
        "omitArrays",
        "objects",
        "direction",
        "apply",
        "mapping",
        *mk.DIRECTIVES,
        "@nope",
    ]
) | st.text(max_size=5)

STRINGS = st.sampled_from(
    [
        "",
        "$.",
        "$.a",
        "a.b",
        "a[0]",
        "{{a}}",
        "{{{a}}}",
        "lower",
        "upper",
        "encode",
        "decode",
        "left",
        "right",
        "$&",
        "{{ a | sort }}",
        "{% if a %}x{% endif %}",
        "{% for %}",
        "{{ a ",
    ]
) | st.text(max_size=12)

SCALARS = st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats(allow_nan=False) | STRINGS


def json_values(keys: st.SearchStrategy[str] = KEYS) -> st.SearchStrategy[Any]:
    return st.recursive(
        SCALARS,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
        max_leaves=25,
    )


def directives() -> st.SearchStrategy[Any]:
    """Mostly well-formed directive objects, so that resolution (not only validation) is exercised."""
    return st.recursive(
        st.builds(lambda name, opt: {name: opt}, st.sampled_from(mk.DIRECTIVES), SCALARS),
        lambda inner: (
            st.builds(lambda name, opt: {name: opt}, st.sampled_from(mk.DIRECTIVES), inner)
            | st.dictionaries(KEYS, inner | SCALARS, max_size=4)
            | st.lists(inner | SCALARS, max_size=3)
        ),
        max_leaves=20,
    )


EVENTS = st.dictionaries(st.sampled_from(["a", "b", "0", "properties", "x"]), json_values(), max_size=5)


def _run(mapping: Any, event: Any) -> None:
    try:
        compiled = mk.compile(mapping)
    except MappingError:
        return
    try:
        result = compiled.resolve(event)
    except MappingError:
        return
    _assert_undefined_only_in_arrays(result, top=True)


def _assert_undefined_only_in_arrays(value: Any, top: bool = False) -> None:
    if isinstance(value, dict):
        for item in value.values():
            assert item is not UNDEFINED
            _assert_undefined_only_in_arrays(item)
    elif isinstance(value, list):
        for item in value:
            _assert_undefined_only_in_arrays(item)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mapping=json_values(), event=json_values())
def test_arbitrary_json_mapping_and_event_raise_only_mapping_error(mapping: Any, event: Any) -> None:
    _run(mapping, event)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mapping=directives(), event=EVENTS)
def test_directive_shaped_mappings_raise_only_mapping_error(mapping: Any, event: Any) -> None:
    _run(mapping, event)


@settings(max_examples=150, deadline=None)
@given(mapping=json_values())
def test_validate_agrees_with_compile(mapping: Any) -> None:
    try:
        mk.validate(mapping)
        valid = True
    except MappingError:
        valid = False
    try:
        mk.compile(mapping)
        compiled = True
    except MappingError:
        compiled = False
    assert valid == compiled


PATHS = st.sampled_from(["$.a", "$.b", "$.0", "a.b", "$.properties.x", "$.a[0]", "$.", "x", "$.a.length"])
PATH_DIRECTIVES = st.builds(lambda p: {"@path": p}, PATHS)


def raw_objects() -> st.SearchStrategy[Any]:
    """Raw objects of paths, @if on paths, constants and other directives: what the generated code
    writes out inline, and what it hands to a closure."""
    leaf = (
        PATH_DIRECTIVES
        | SCALARS
        | st.builds(
            lambda kind, p, then, other: {"@if": {kind: p, "then": then, "else": other}},
            st.sampled_from(["exists", "blank"]),
            PATH_DIRECTIVES,
            PATH_DIRECTIVES | SCALARS,
            PATH_DIRECTIVES | SCALARS,
        )
        | directives()
    )
    return st.recursive(
        leaf,
        lambda children: st.dictionaries(KEYS, children, max_size=5) | st.lists(children, max_size=3),
        max_leaves=20,
    )


def _outcome(mapping: Any, event: Any, codegen: bool) -> str:
    try:
        return repr(mk.compile(mapping, codegen=codegen).resolve(event))
    except MappingError as exc:
        return f"MappingError: {exc}"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mapping=raw_objects(), event=EVENTS)
def test_generated_code_resolves_as_the_closures_do(mapping: Any, event: Any) -> None:
    # repr, so that key order, 1 / 1.0 / True and undefined array slots must all agree.
    assert _outcome(mapping, event, codegen=True) == _outcome(mapping, event, codegen=False)
