"""Property tests for FQL: parse never fails unexpectedly, matching never raises, and every trigger
streamproc accepts has exactly the condition tree Segment's parser builds for it."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproc.core.fql import _Lexer, _LexError, _normalise, _Token
from streamproc.core.js import code_units, to_js_string, to_number
from streamproc.errors import FQLError
from streamproc.fql import FQLSyntaxError, Trigger, parse

# --- a plain port of Segment's parseFql (destination-subscriptions 3.37.0) used as the reference;
# it reads the same tokens and makes every decision Segment's code makes, including the lenient ones.

_ROOTS = {
    "type": "event-type",
    "event": "event",
    "name": "name",
    "userId": "userId",
    "context": "event-context",
    "properties": "event-property",
    "traits": "event-trait",
}
# Segment looks roots up in a plain object, so inherited names are found (and produce no node)
_INHERITED = {
    "constructor",
    "hasOwnProperty",
    "isPrototypeOf",
    "propertyIsEnumerable",
    "toLocaleString",
    "toString",
    "valueOf",
    "__defineGetter__",
    "__defineSetter__",
    "__lookupGetter__",
    "__lookupSetter__",
    "__proto__",
}
_PREFIX = {"event-property": "properties", "event-trait": "traits", "event-context": "context"}


class SegmentError(Exception):
    pass


def _token_value(tok: _Token) -> Any:
    if tok.kind == "string":
        text = tok.text
        if text.startswith('"'):
            text = text[1:]
        if text.endswith('"'):
            text = text[:-1]
        return text
    if tok.kind == "number":
        return to_number(tok.text)
    if tok.kind == "ident" and tok.text in ("true", "false"):
        return tok.text == "true"
    return tok.text


def _strip(text: str, root: str) -> str:
    return text[len(root) + 1 :] if text.startswith(root + ".") else text


def _function(name: str, nodes: list[Any], tokens: list[_Token], negate: bool) -> None:
    tokens.pop(0) if tokens else None
    if not tokens:
        raise SegmentError(f"{name}() is missing a 1st argument")
    name_tok = tokens.pop(0)
    tokens.pop(0) if tokens else None
    if not tokens:
        raise SegmentError(f"{name}() is missing a 2nd argument")
    value_tok = tokens.pop(0)
    tokens.pop(0) if tokens else None
    if name == "contains":
        operator = "not_contains" if negate else "contains"
        value = to_js_string(_token_value(value_tok))
    elif value_tok.text.endswith('*"'):
        operator = "not_starts_with" if negate else "starts_with"
        value = to_js_string(_token_value(value_tok))[:-1]
    else:
        operator = "not_ends_with" if negate else "ends_with"
        value = to_js_string(_token_value(value_tok))[1:]
    field = name_tok.text
    if field in ("event", "name", "userId"):
        nodes.append({"type": field, "operator": operator, "value": value})
    for root in ("properties", "traits", "context"):
        if field.startswith(root):
            kind = {"properties": "event-property", "traits": "event-trait", "context": "event-context"}[root]
            nodes.append({"type": kind, "name": _strip(field, root), "operator": operator, "value": value})


def _condition(kind: str, tok: _Token, op_tok: _Token, value_tok: _Token) -> dict[str, Any]:
    op, raw = op_tok.text, value_tok.text
    specials = {
        "is_true": op == "=" and raw == "true",
        "is_false": op == "=" and raw == "false",
        "exists": op == "!=" and raw == "null",
        "not_exists": op == "=" and raw == "null",
        "number_equals": op == "=" and value_tok.kind == "number",
        "number_not_equals": op == "!=" and value_tok.kind == "number",
    }
    allowed = {
        "event-type": (),
        "event": (),
        "name": ("exists", "not_exists"),
        "userId": ("exists", "not_exists", "is_true", "is_false"),
    }.get(kind, ("exists", "not_exists", "is_true", "is_false", "number_equals", "number_not_equals"))
    node: dict[str, Any] = {"type": kind}
    if kind in _PREFIX:
        node["name"] = _strip(tok.text, _PREFIX[kind])
    for special in allowed:
        if specials[special]:
            node["operator"] = special
            if special.startswith("number"):
                node["value"] = _token_value(value_tok)
            return node
    node["operator"] = op
    value = _token_value(value_tok)
    node["value"] = value if kind in _PREFIX else to_js_string(value)
    return node


def _parse(tokens: list[_Token]) -> Any:
    nodes: list[Any] = []
    operator = "and"
    token = tokens.pop(0) if tokens else None
    while token is not None and token.kind != "eos":
        if token.kind == "ident":
            start = token.text.split(".")[0]
            if start in _ROOTS or start in _INHERITED:
                if not tokens:
                    raise SegmentError("Operator token is missing")
                op_tok = tokens.pop(0)
                if not tokens:
                    raise SegmentError("Value token is missing")
                value_tok = tokens.pop(0)
                if start in _ROOTS:
                    nodes.append(_condition(_ROOTS[start], token, op_tok, value_tok))
            if token.text in ("contains", "match"):
                _function(token.text, nodes, tokens, negate=False)
        if token.kind == "operator" and token.text == "!":
            if not tokens:
                raise SegmentError("Cannot read properties of undefined (reading 'type')")
            if tokens[0].kind == "ident" and tokens[0].text in ("contains", "match"):
                name = tokens.pop(0).text
                _function(name, nodes, tokens, negate=True)
        if token.kind == "parenleft":
            group: list[_Token] = []
            while True:
                if not tokens:
                    raise SegmentError("Cannot read properties of undefined (reading 'type')")
                inner = tokens.pop(0)
                if inner.kind == "parenright":
                    break
                group.append(inner)
            group.append(_Token("eos", "eos", 0))
            nodes.append(_parse(group))
        if token.kind == "conditional":
            operator = token.text
        token = tokens.pop(0) if tokens else None
    if len(nodes) > 1:
        return {"type": "group", "operator": operator, "children": nodes}
    return nodes[0] if nodes else None


def segment_parse_fql(text: str) -> dict[str, Any]:
    """What Segment's parseFql returns for `text`; raises SegmentError where it returns {error}."""
    try:
        tokens = _Lexer(code_units(text)).lex()
    except _LexError:
        tokens = []
    ast = _parse(_normalise(tokens))
    if ast is None:
        raise SegmentError("Cannot read properties of undefined (reading 'type')")
    if ast.get("type") != "group":
        ast = {"type": "group", "operator": "and", "children": [ast]}
    return ast


# --- strategies

FIELDS = [
    "type",
    "event",
    "name",
    "userId",
    "properties.total",
    "properties.a.b",
    "properties.items.length",
    "traits.plan",
    "context.page.url",
    "properties.an",
    "properties.o",
    "properties.x\\ y",
    "properties.first-name",
    "properties",
    "userId.id",
    "anonymousId",
    "Event",
    "properties.\\0",
]
VALUES = [
    '"track"',
    '"Order Completed"',
    '""',
    '"5"',
    '"x*"',
    '"*x"',
    '"abc"',
    "'abc'",
    "5",
    "-1",
    "+2",
    "3.5",
    "-",
    "007",
    "true",
    "false",
    "null",
    "True",
    "premium",
    '"é😀"',
    '"a\\"b"',
]
OPERATORS = ["=", "!=", "<", "<=", ">", ">=", "==", "="]
SPACES = [" ", " ", " ", "", "  ", "\t", "\n"]
FUNCTIONS = ["contains", "match", "!contains", "!match"]
# a fixed pool of conditions, some clean and some in forms Segment reads leniently
CONDITIONS = sorted(
    {
        f"{field}{sp}{op}{sp2}{value}"
        for field in FIELDS
        for op in OPERATORS
        for value in VALUES
        for sp, sp2 in [(" ", " ")]
    }
    | {
        f"{field}{sp}{op}{value}"
        for field in FIELDS[:6]
        for op in OPERATORS
        for value in VALUES
        for sp in ["", "\t"]
    }
    | {
        f"{name}({field},{sp}{value})"
        for name in FUNCTIONS
        for field in FIELDS
        for value in VALUES
        for sp in SPACES[:2]
    }
)
CLEAN_FIELDS = [
    "type",
    "event",
    "name",
    "userId",
    "properties.total",
    "properties.a.b",
    "traits.plan",
    "context.page.url",
]
CLEAN_VALUES = ['"track"', '""', '"5"', "5", "-1", "3.5", "true", "false", "null"]
CLEAN_CONDITIONS = sorted(
    {f"{field} {op} {value}" for field in CLEAN_FIELDS for op in OPERATORS[:6] for value in CLEAN_VALUES}
    | {
        f"{name}({field}, {value})"
        for name in FUNCTIONS[::2]
        for field in CLEAN_FIELDS[1:]
        for value in ['"a"', '""', "5"]
    }
    | {
        f"{name}({field}, {value})"
        for name in FUNCTIONS[1::2]
        for field in CLEAN_FIELDS[1:]
        for value in ['"ab*"', '"*b"']
    }
)


@st.composite
def clean_triggers(
    draw: st.DrawFn, conditions: st.SearchStrategy[str] = st.sampled_from(CLEAN_CONDITIONS)
) -> str:
    """Triggers with one conjunction per level and up to three levels of parentheses."""
    text = draw(conditions)
    for _ in range(draw(st.integers(0, 3))):
        conj = draw(st.sampled_from([" and ", " or "]))
        more = draw(st.lists(conditions, min_size=1, max_size=2))
        text = f"({text}){conj}" + conj.join(more) if draw(st.booleans()) else conj.join([*more, f"({text})"])
    return text


NOISE = [*"!=()\"'., \\*-1<>[]\r\n", "and ", "or ", "null", "é", "AND ", "not "]
ANY_CONDITION = st.one_of(st.sampled_from(CLEAN_CONDITIONS), st.sampled_from(CONDITIONS))


@st.composite
def fql_texts(draw: st.DrawFn) -> str:
    """Mostly well-formed triggers, some in forms Segment reads leniently, some with stray characters."""
    text = draw(clean_triggers(ANY_CONDITION))
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(st.sampled_from(NOISE)) + text[at:]
        else:
            text = text[:at] + text[at + 1 :]
    return text


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "track", "5", "x*", "abc", "null", "true", "é😀"])
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["a", "b", "total", "plan", "items", "length", "page", "url", "0"]), children
        )
    ),
    max_leaves=8,
)
EVENTS = st.fixed_dictionaries(
    {},
    optional={
        "type": JSON,
        "event": JSON,
        "name": JSON,
        "userId": JSON,
        "properties": JSON,
        "traits": JSON,
        "context": JSON,
        "anonymousId": JSON,
    },
)

# --- properties


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=60))
def test_any_text_parses_or_raises_fql_error(text: str) -> None:
    try:
        trigger = parse(text)
    except FQLError as error:
        assert str(error).startswith("FQL error")
    else:
        assert isinstance(trigger, Trigger)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(fql_texts())
def test_fql_like_text_parses_or_raises_fql_error(text: str) -> None:
    try:
        parse(text)
    except FQLError as error:
        assert str(error).startswith("FQL error at position ")


def parse_or_check_refusal(text: str) -> Trigger | None:
    """The parsed trigger, or None when streamproc refuses it; a refusal naming no known difference
    from Segment must be one Segment makes too."""
    try:
        return parse(text)
    except FQLSyntaxError as error:
        if error.category is None:
            try:
                segment_parse_fql(text)
            except SegmentError:
                return None
            raise AssertionError(f"Segment accepts {text!r}, but the refusal names no difference") from None
        return None


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(fql_texts())
def test_accepted_triggers_have_segments_condition_tree(text: str) -> None:
    trigger = parse_or_check_refusal(text)
    if trigger is None:
        return
    if "nested-parentheses" in trigger.extensions:
        try:
            segment_parse_fql(text)
        except SegmentError:
            return
        raise AssertionError(f"Segment parses nested parentheses in {text!r}")
    assert trigger.ast == segment_parse_fql(text)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(clean_triggers(), EVENTS)
def test_matching_any_json_event_never_raises(text: str, event: dict[str, Any]) -> None:
    try:
        trigger = parse(text)
    except FQLSyntaxError as error:
        # the only clean texts refused are functions that are not last inside their parentheses
        assert error.category == "function-in-group", str(error)
        return
    assert trigger.matches(event) in (True, False)


def test_every_single_condition_and_function_call_has_segments_tree() -> None:
    """Exhaustive over the field, operator and value pools (with and without spaces), not sampled."""
    texts = [
        f"{field}{space}{op}{space2}{value}"
        for field in FIELDS + CLEAN_FIELDS
        for op in OPERATORS
        for value in VALUES + CLEAN_VALUES
        for space, space2 in [(" ", " "), ("", ""), (" ", "")]
    ] + [
        f"{name}({field}, {value})"
        for name in FUNCTIONS
        for field in FIELDS + CLEAN_FIELDS
        for value in [*VALUES, *CLEAN_VALUES, '"ab*"', '"*b"', '"*"', '"a*b"']
    ]
    checked = mismatched = 0
    for text in texts:
        trigger = parse_or_check_refusal(text)
        if trigger is None:
            continue
        checked += 1
        if trigger.ast != segment_parse_fql(text):
            mismatched += 1
            raise AssertionError(f"{text!r}: {trigger.ast} != {segment_parse_fql(text)}")
    assert checked > 1000 and mismatched == 0
