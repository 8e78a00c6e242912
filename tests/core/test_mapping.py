"""The mapping kit against Segment's own mapping-kit cases (spec sections D and E) and its contracts."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from spec_data import cases, normalise

from streamproc import mapping as public
from streamproc.core import mapping as mk
from streamproc.core.js import UNDEFINED
from streamproc.errors import MappingError


def expected_messages(expected: str | list[str]) -> list[str]:
    """Segment's thrown messages; aggregated validation errors carry a "ValidationError: " prefix."""
    items = expected if isinstance(expected, list) else expected.split("\n")
    return [item.removeprefix("ValidationError: ") for item in items]


def expand_placeholders(value: Any) -> Any:
    """The spec abbreviates one long template as `<"a" repeated 1001 times>`."""
    if isinstance(value, str):
        return value.replace('<"a" repeated 1001 times>', "a" * 1001)
    if isinstance(value, dict):
        return {k: expand_placeholders(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_placeholders(v) for v in value]
    return value


def resolve_cases() -> list[Any]:
    out = []
    for case in cases("D") + cases("E"):
        if "mapping" in case and "render_template_arg" not in case:
            out.append(pytest.param(case, id=case["id"]))
    return out


def render_cases() -> list[Any]:
    return [pytest.param(c, id=c["id"]) for c in cases("D") if "render_template_arg" in c]


@pytest.mark.parametrize("case", render_cases())
def test_segment_placeholder_renderer_case(case: dict[str, Any]) -> None:
    with pytest.raises(MappingError) as caught:
        mk.render_template(case["render_template_arg"], case["input"])
    assert str(caught.value) == case["expected_error"]


def validate_cases() -> list[Any]:
    return [pytest.param(c, id=c["id"]) for c in cases("D") if "validate_mapping" in c]


@pytest.mark.parametrize("case", resolve_cases())
def test_segment_case(case: dict[str, Any]) -> None:
    mapping = expand_placeholders(case["mapping"])
    if "expected_error" in case:
        with pytest.raises(MappingError) as caught:
            mk.resolve(mapping, case["input"])
        assert caught.value.messages == expected_messages(case["expected_error"])
    else:
        result = mk.resolve(mapping, case["input"])
        if case["expected_output"] is UNDEFINED:
            assert result is UNDEFINED
        else:
            assert normalise(result) == normalise(case["expected_output"])


@pytest.mark.parametrize("case", validate_cases())
def test_segment_validation_case(case: dict[str, Any]) -> None:
    if "expected_error" in case:
        with pytest.raises(MappingError) as caught:
            mk.validate(case["validate_mapping"])
        assert caught.value.messages == expected_messages(case["expected_error"])
        assert str(caught.value) == "\n".join(expected_messages(case["expected_error"]))
    else:
        mk.validate(case["validate_mapping"])
        mk.compile(case["validate_mapping"])


def test_public_module_re_exports_the_kit() -> None:
    assert public.compile is mk.compile
    assert public.resolve is mk.resolve
    assert public.validate is mk.validate
    assert "@liquid" in public.DIRECTIVES and len(public.DIRECTIVES) == 13


def test_compiled_mapping_resolves_many_events_without_sharing_state() -> None:
    mapping = {
        "id": {"@path": "$.userId"},
        "name": {"@template": "{{traits.first}} {{traits.last}}"},
        "items": {"@arrayPath": ["$.properties.products", {"sku": {"@path": "sku"}}]},
    }
    original = copy.deepcopy(mapping)
    compiled = mk.compile(mapping)
    first = compiled.resolve({"userId": "u1", "traits": {"first": "A", "last": "B"}})
    second = compiled.resolve({"properties": {"products": [{"sku": "s1"}, {"x": 1}]}})
    assert first == {"id": "u1", "name": "A B"}
    assert second == {"name": " ", "items": [{"sku": "s1"}, {}]}
    assert mapping == original


def test_resolve_does_not_alias_the_event() -> None:
    event = {"properties": {"a": {"b": [1, 2]}}}
    result = mk.resolve({"p": {"@path": "$.properties"}}, event)
    result["p"]["a"]["b"].append(3)
    assert event == {"properties": {"a": {"b": [1, 2]}}}


def test_invalid_mapping_is_refused_at_compile_time_with_every_problem() -> None:
    with pytest.raises(MappingError) as caught:
        mk.compile({"a": {"@nope": 1}, "b": {"@path": 5}, "c": {"@if": {"exists": {"@x": 1}}}})
    assert caught.value.messages == [  # type: ignore[attr-defined]
        "/a has an invalid directive: @nope.",
        "/b/@path should be a string or a mapping directive but it is a number.",
        "/c/@if/exists has an invalid directive: @x.",
    ]


def test_event_must_be_an_object() -> None:
    compiled = mk.compile({"a": 1})
    for event, word in ((None, "null"), ([], "array"), ("x", "string"), (1, "number"), (True, "boolean")):
        with pytest.raises(MappingError, match=f"^data must be an object, got {word}$"):
            compiled.resolve(event)
    assert compiled.resolve(UNDEFINED) == {"a": 1}


def test_bare_undefined_result_is_undefined() -> None:
    assert mk.resolve({"@path": "$.missing"}, {}) is UNDEFINED
    assert mk.resolve({"@if": {"exists": {"@path": "$.x"}, "then": 1}}, {}) is UNDEFINED


@pytest.mark.parametrize(
    ("replacement", "value", "expected"),
    [
        ("$&$&", "abc", "abbc"),
        ("[$`]", "abc", "a[a]c"),
        ("[$']", "abc", "a[c]c"),
        ("$$", "abc", "a$c"),
        ("$1$<n>", "abc", "a$1$<n>c"),
        ("$", "abc", "a$c"),
    ],
)
def test_replace_uses_javascript_replacement_templates(replacement: str, value: str, expected: str) -> None:
    mapping = {"@replace": {"pattern": "b", "replacement": replacement, "value": value}}
    assert mk.resolve(mapping, {}) == expected


def test_replace_runtime_length_limits_apply_to_the_second_pattern() -> None:
    mapping = {"@replace": {"pattern": "a", "pattern2": "b", "replacement2": "x" * 11, "value": "ab"}}
    with pytest.raises(MappingError, match='"replacement" less than 10 characters'):
        mk.resolve(mapping, {})


def test_json_encode_orders_keys_like_javascript() -> None:
    event = {"o": {"b": 1, "10": 2, "2": 3, "a": [1.0, None, 1e21]}}
    mapping = {"@json": {"mode": "encode", "value": {"@path": "$.o"}}}
    assert mk.resolve(mapping, event) == '{"2":3,"10":2,"b":1,"a":[1,null,1e+21]}'


def test_json_decode_follows_json_parse() -> None:
    def decode(text: str) -> Any:
        return mk.resolve({"@json": {"mode": "decode", "value": {"@path": "$.s"}}}, {"s": text})

    assert decode('{"a":[1,2]}') == {"a": [1, 2]}
    assert decode("NaN") == "NaN"
    assert decode("{'a': 1}") == "{'a': 1}"
    assert decode("12345678901234567890") == 12345678901234567890.0


def test_path_walks_strings_and_arrays_like_javascript() -> None:
    event = {"s": "héllo", "a": [10, 20], "e": "😀x"}
    assert mk.resolve({"@path": "$.s.length"}, event) == 5
    assert mk.resolve({"@path": "$.s.1"}, event) == "é"
    assert mk.resolve({"@path": "$.a.length"}, event) == 2
    assert mk.resolve({"@path": "$.a[01]"}, event) is UNDEFINED
    assert mk.resolve({"@path": "$.e.length"}, event) == 3
    assert mk.resolve({"@path": "$.a['1']"}, event) == 20


def test_template_triple_braces_are_substituted_before_double_braces() -> None:
    assert mk.resolve({"@template": "{{{a}}}"}, {"a": "{{b}}", "b": "B"}) == "B"
    assert mk.resolve({"@template": "{{a}}"}, {"a": "{{b}}", "b": "B"}) == "{{b}}"


def test_root_mapping_that_is_not_an_object_is_spread_like_javascript() -> None:
    assert mk.resolve(["x", {"@path": "$.a"}], {"a": 1}) == {"0": "x", "1": 1}
    assert mk.resolve("ab", {}) == {"0": "a", "1": "b"}
    assert mk.resolve(7, {}) == {}
    with pytest.raises(MappingError, match="Cannot convert undefined or null to object"):
        mk.compile(None)


def test_root_directive_errors() -> None:
    with pytest.raises(MappingError, match=r"^The root mapping must only have a single directive object$"):
        mk.compile({"__segment_internal_directive": {"@path": "a", "@template": "b"}})
    with pytest.raises(MappingError, match=r"^The root directive must be an object$"):
        mk.compile({"__segment_internal_directive": {"@path": "a"}})


def test_runtime_errors_surface_only_when_the_directive_runs() -> None:
    compiled = mk.compile({"a": [{"@if": "oops"}], "b": 1})
    with pytest.raises(MappingError, match=r'^@if requires an object with an "exists" key$'):
        compiled.resolve({})
    lazy = mk.compile({"a": {"@if": {"exists": {"@path": "$.x"}, "then": {"@liquid": "{% for %}"}}}})
    assert lazy.resolve({}) == {}
    with pytest.raises(MappingError, match=r'^tag "for" is disabled, line:1, col:1$'):
        lazy.resolve({"x": 1})


@pytest.mark.parametrize(
    ("template", "event", "expected"),
    [
        (
            "{{ n }}|{{ f }}|{{ b }}|{{ z }}|{{ arr }}|{{ o }}",
            {"n": 1, "f": 100.0, "b": True, "z": None, "arr": [1, "a", [2, 3], None], "o": {"x": 1}},
            "1|100|true||1a23|[object Object]",
        ),
        ("{{ 10 | divided_by: 4 }}|{{ 2.5 | round }}|{{ x | nofilter }}", {"x": 1}, "2.5|3|1"),
        ("{% assign y = x | upcase %}{{ y }}{{ x | size }}{{ x | json }}", {"x": "ab"}, 'AB2"ab"'),
        ("{% if false %}{{ x | sort }}{% endif %}ok", {"x": [2, 1]}, "ok"),
    ],
)
def test_liquid_prints_values_like_liquidjs(template: str, event: dict[str, Any], expected: str) -> None:
    assert mk.resolve({"a": {"@liquid": template}}, event) == {"a": expected}


# Answered by Segment's actions-core (liquidjs 10.30): JavaScript's whitespace set (U+FEFF yes;
# U+001C..U+001F and U+0085 no), and a truthy argument naming the characters to strip.
@pytest.mark.parametrize(
    ("template", "s", "expected"),
    [
        ("{{ s | strip }}|{{ s | lstrip }}|{{ s | rstrip }}", "\ufeffa\ufeff", "a|a\ufeff|\ufeffa"),
        ("{{ s | strip }}|{{ s | lstrip }}|{{ s | rstrip }}", "\x1ca\x85", "\x1ca\x85|\x1ca\x85|\x1ca\x85"),
        ("{{ s | strip }}", "\u3000\u2028\t\u00a0a\u180e", "a\u180e"),
        (
            "{{ s | strip: 'xa' }}|{{ s | lstrip: 'x' }}|{{ s | rstrip: 'x' }}",
            "xxabcxax",
            "bc|abcxax|xxabcxa",
        ),
        ("{{ s | strip: '' }}|{{ s | rstrip: none }}|{{ s | strip: false }}", " b ", "b| b|b"),
        ("{{ s | strip: 0 }}|{{ s | strip: true }}|{{ s | strip: '.*' }}", ".*t0*.", ".*t0*.|.*t0*.|t0"),
    ],
)
def test_liquid_strip_filters_strip_what_liquidjs_strips(template: str, s: str, expected: str) -> None:
    assert mk.resolve({"a": {"@liquid": template}}, {"s": s}) == {"a": expected}


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("abc {% for x in y %}{% endfor %}", 'tag "for" is disabled, line:1, col:5'),
        ("abc\n  {{ x | sort }}", 'filter "sort" is disabled, line:2, col:3'),
        ("{% tablerow x in y %}{% endtablerow %}", 'tag "tablerow" is disabled, line:1, col:1'),
    ],
)
def test_liquid_disabled_tags_and_filters(template: str, message: str) -> None:
    with pytest.raises(MappingError) as caught:
        mk.resolve({"a": {"@liquid": template}}, {"x": [2, 1]})
    assert str(caught.value) == message


def test_mapping_from_yaml_with_non_text_keys_and_values() -> None:
    compiled = mk.compile({0: {"@path": "$.a"}, "t": ({"@path": "$.b"},)})
    assert compiled.resolve({"a": 1, "b": 2}) == {"0": 1, "t": [2]}
    with pytest.raises(MappingError, match=r"^/when should be a JSON value but it is date\.$"):
        mk.compile({"when": __import__("datetime").date(2024, 1, 1)})


def test_event_may_be_any_mapping() -> None:
    from types import MappingProxyType

    assert mk.resolve({"a": {"@path": "$.x"}}, MappingProxyType({"x": 5})) == {"a": 5}


# Templates a mapping author writes, with what Segment's liquidjs renders for LIQUID_EVENT.
LIQUID_EVENT = {
    "userId": "U1",
    "event": "Order Completed",
    "timestamp": "2024-03-15T10:30:00.000Z",
    "properties": {
        "name": "Jane Doe",
        "price": 19.99,
        "qty": 3,
        "email": " Jane@Example.COM ",
        "tags": ["a", "b"],
        "empty": "",
        "none": None,
        "zero": 0,
        "flag": False,
        "nested": {"k": "v"},
        "count": "12",
    },
    "traits": {"first_name": "jane", "phone": "+1 (555) 123-4567"},
    "context": {"page": {"url": "https://x.example/p?q=1&r=2"}},
}
LIQUID_CASES = [
    ("{{ properties.name | downcase }}", "jane doe"),
    ("{{ properties.email | strip | downcase }}", "jane@example.com"),
    ("{{ properties.price | times: 100 | round }}", "1999"),
    ("{{ properties.price | times: 100 }}", "1998.9999999999998"),
    ("{{ properties.price | plus: 0.01 }}", "20"),
    ("{{ properties.qty | times: properties.price }}", "59.97"),
    ("{{ properties.missing | default: 'none' }}", "none"),
    ("{{ properties.empty | default: 'none' }}", "none"),
    ("{{ properties.none | default: 'none' }}", "none"),
    ("{{ properties.zero | default: 'none' }}", "0"),
    ("{{ properties.flag | default: 'none' }}", "none"),
    ("{{ properties.flag | default: 'none', allow_false: true }}", "false"),
    ("{% if properties.email %}has{% else %}no{% endif %}", "has"),
    (
        "{% if properties.empty == blank %}B{% endif %}{% if properties.none == blank %}N{% endif %}"
        "{% if properties.missing == blank %}M{% endif %}{% if properties.zero == blank %}Z{% endif %}"
        "{% if properties.flag == blank %}F{% endif %}",
        "BNMF",
    ),
    (
        "{% if properties.tags contains 'a' %}A{% endif %}"
        "{% if properties.name contains 'Doe' %}D{% endif %}",
        "AD",
    ),
    ("{{ traits.first_name | capitalize }} {{ properties.name | split: ' ' | last }}", "Jane Doe"),
    ("{{ properties.name | slice: 0, 4 }}", "Jane"),
    ("{{ properties.name | truncate: 6 }}", "Jan..."),
    ("{{ properties.tags | join: ', ' }}", "a, b"),
    ("{{ properties.tags | size }}", "2"),
    ("{{ properties.tags.size }}", "2"),
    ("{{ properties.tags | first }}", "a"),
    ("{{ properties.count | plus: 1 }}", "13"),
    ("{{ properties.price | ceil }}", "20"),
    ("{{ properties.price | floor }}", "19"),
    ("{{ properties.price | divided_by: 3 }}", "6.663333333333333"),
    ("{{ properties.qty | divided_by: 2 }}", "1.5"),
    ("{{ properties.qty | modulo: 2 }}", "1"),
    ("{{ properties.price | round: 1 }}", "20"),
    ("{{ context.page.url | url_encode }}", "https%3A%2F%2Fx.example%2Fp%3Fq%3D1%26r%3D2"),
    ("{{ properties.name | replace: ' ', '_' | upcase }}", "JANE_DOE"),
    ("{{ properties.name | remove: 'Doe' | strip }}", "Jane"),
    ("{{ traits.phone | remove: ' ' | remove: '(' | remove: ')' | remove: '-' }}", "+15551234567"),
    ("{{ properties.nested.k }}{{ properties['nested']['k'] }}", "vv"),
    (
        "{% assign full = traits.first_name | append: ' ' | append: properties.name %}{{ full }}",
        "jane Jane Doe",
    ),
    ("{% unless properties.flag %}not flagged{% endunless %}", "not flagged"),
    (
        "{% if properties.qty > 2 and properties.price < 20 %}bulk"
        "{% elsif properties.qty > 1 %}multi{% else %}single{% endif %}",
        "bulk",
    ),
    ("{{ properties.price | at_least: 20 }}", "20"),
    ("{{ event | downcase | replace: ' ', '_' }}", "order_completed"),
    ("{{ userId | prepend: 'user-' }}", "user-U1"),
    (
        "{{ properties.email | strip | downcase | sha256 }}",
        "8c87b489ce35cf2e2f39f80e282cb2e804932a56a213983eeeb428407d43b52d",
    ),
    ("{{ properties.name | md5 }}", "Jane Doe"),
    ("{{ properties.none }}{{ properties.missing.deeper }}", ""),
    ("{{ properties.qty | minus: 5 | abs }}", "2"),
    ("{{ 'a,b,c' | split: ',' | size }}", "3"),
    ("{{ properties.name | escape }}", "Jane Doe"),
    ("{{ properties.price }}", "19.99"),
    ("{{ properties.name | size }}", "8"),
    ("{{ properties.name | strip_newlines }}", "Jane Doe"),
    ("{{ properties.price | json }}", "19.99"),
    ("{{ properties.nested | json }}", '{"k":"v"}'),
    ("{% capture x %}{{ userId }}-{{ event }}{% endcapture %}{{ x | downcase }}", "u1-order completed"),
    ("{%- if userId -%} yes {%- endif -%}", "yes"),
    ("{{ properties.tags | compact | join: '' }}", "ab"),
    ("{{ properties.name | split: '' | size }}", "8"),
    ("{{ properties.email | url_decode }}", " Jane@Example.COM "),
    ("{{ properties.zero | plus: properties.none }}", "0"),
    ("{{ properties.count | times: 1 }}", "12"),
    ("{{ properties.count | json }}", '"12"'),
]


@pytest.mark.parametrize(("template", "expected"), LIQUID_CASES)
def test_liquid_everyday_templates_render_as_segment_does(template: str, expected: str) -> None:
    assert mk.resolve({"a": {"@liquid": template}}, LIQUID_EVENT) == {"a": expected}


def test_liquid_keywords_are_property_names_after_a_dot() -> None:
    event = {"p": {"empty": 1, "true": 2, "nil": 3}}
    template = '{{ p.empty }}{{ p.true }}{{ p.nil }}{{ "p.true" }}{% raw %}{{ p.true }}{% endraw %}'
    assert mk.resolve({"@liquid": template}, event) == "123p.true{{ p.true }}"
