"""Payload validation and coercion: Segment's removeEmptyValues + AJV behaviour and messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from spec_data import cases

from streamproc.core.fields import Choice, Condition, ConditionalRequired, Field
from streamproc.core.js import UNDEFINED, date_parse, string_to_number
from streamproc.core.payload import PayloadSchema
from streamproc.destinations.base import Destination
from streamproc.destinations.runtime import validate_settings
from streamproc.errors import PayloadValidationError


def field_from_segment(spec: Mapping[str, Any]) -> Field:
    """A Field from Segment's InputField JSON (label, type, required, multiple, choices, ...)."""
    choices = spec.get("choices")
    props = spec.get("properties")
    required = spec.get("required", False)
    if isinstance(required, dict):
        required = ConditionalRequired(
            tuple(
                Condition(c["fieldKey"], c["operator"], c.get("value", UNDEFINED))
                for c in required["conditions"]
            ),
            required.get("match", "all"),
        )
    return Field(
        label=spec.get("label", ""),
        type=spec.get("type", "string"),
        description=spec.get("description", ""),
        required=required,
        multiple=spec.get("multiple", False),
        choices=(
            tuple(c if isinstance(c, str) else Choice(c["label"], c["value"]) for c in choices)
            if choices is not None
            else None
        ),
        format=spec.get("format"),
        allow_null=spec.get("allowNull", False),
        properties={k: field_from_segment(v) for k, v in props.items()} if props is not None else None,
        additional_properties=spec.get("additionalProperties", False),
        default=spec.get("default", UNDEFINED),
        minimum=spec.get("minimum"),
        maximum=spec.get("maximum"),
    )


def _f2_schema() -> PayloadSchema:
    [fields] = cases("F2:fields")
    return PayloadSchema({k: field_from_segment(v) for k, v in fields.items()})


F2 = cases("F2")


@pytest.mark.parametrize("case", F2, ids=[c["id"] for c in F2])
def test_segment_validation_case(case: dict[str, Any]) -> None:
    schema = _f2_schema()
    # The mappings of these cases are literal values, so the resolved payload is the mapping itself.
    payload = dict(case["mapping"])
    expected = case["expected"]
    if "throws" in expected:
        with pytest.raises(PayloadValidationError) as info:
            schema.validate(payload)
        assert str(info.value) == expected["throws"]["message"]
        assert info.value.status == 400
    else:
        assert schema.validate(payload) == expected["payload_passed_to_perform"]


F1_SINGLE_EVENT = [c for c in cases("F1") if c["id"] in ("CORE-10", "CORE-11", "CORE-12", "CORE-12b")]

# The F1 cases this suite does not replay, and why (each is about something other than validating
# one event's payload).
F1_NOT_HERE = {
    "CORE-01": "batching (performBatch and multistatus results); streamproc sends one request per event",
    "CORE-02": "batching: empty values removed per payload of a batch",
    "CORE-03": "batching: invalid payloads excluded from a batch",
    "CORE-04": "batching: multistatus order",
    "CORE-05": "batching: no valid payload left, performBatch not called",
    "CORE-B1": "batching: non-root removeEmptyValues (covered by validate(root=False) below)",
    "CORE-B2": "batching: multistatus mapping",
    "CORE-B3": "batching: error thrown by performBatch",
    "CORE-B4": "batching: MultiStatusResponse mapping",
    "CORE-B5": "batching: MultiStatusResponse missing entries",
    "CORE-B6": "batching",
    "CORE-13": "MultiStatusResponse API (errortype inferred from status)",
    "CORE-06": "an empty trigger: refused when the configuration is loaded (FQL)",
    "CORE-07": "an unparseable trigger: refused when the configuration is loaded (FQL)",
    "CORE-08": "trigger matching of an empty event (FQL)",
    "CORE-09": "settings validation: tested below with validate_settings",
}


def test_every_f1_case_is_replayed_or_listed_with_a_reason() -> None:
    ids = {c["id"] for c in cases("F1")}
    assert ids == {c["id"] for c in F1_SINGLE_EVENT} | set(F1_NOT_HERE)


def test_settings_are_validated_before_any_event() -> None:
    [case] = [c for c in cases("F1") if c["id"] == "CORE-09"]
    fields = {k: field_from_segment(v) for k, v in case["destination_settings_schema"].items()}
    destination = Destination(type="test", name="Test", endpoint="http://x", settings=fields, actions={})
    with pytest.raises(PayloadValidationError) as info:
        validate_settings(destination, {k: v for k, v in case["settings"].items() if k != "subscription"})
    assert info.value.message.endswith(case["expected_result"]["throws"]["message"])
    assert info.value.status == 400
    assert validate_settings(destination, {"apiSecret": "k", "other": 1}) == {"apiSecret": "k"}


@pytest.mark.parametrize("case", F1_SINGLE_EVENT, ids=[c["id"] for c in F1_SINGLE_EVENT])
def test_undeclared_keys_and_empty_values_never_reach_the_action(case: dict[str, Any]) -> None:
    schema = PayloadSchema({k: field_from_segment(v) for k, v in case["action_fields"].items()})
    mapping = case["settings"]["subscription"]["mapping"]
    performed = case["expected_result"][-1]["data"][1]
    assert schema.validate(dict(mapping)) == performed


def test_validation_does_not_modify_the_callers_payload() -> None:
    schema = _f2_schema()
    payload = {"r": "req", "om": [{"p": "1", "z": 2}], "op": {"p": "5", "q": "x", "z": 1}, "zz": 1}
    snapshot = repr(payload)
    out = schema.validate(payload)
    assert out == {"r": "req", "om": [{"p": 1}], "op": {"p": 5, "q": "x"}}
    assert repr(payload) == snapshot


def test_output_keeps_the_payload_key_order_but_errors_follow_field_order() -> None:
    schema = _f2_schema()
    assert list(schema.validate({"b": "true", "r": "req", "n": "1"})) == ["b", "r", "n"]
    with pytest.raises(PayloadValidationError) as info:
        schema.validate({"b": "yes", "n": "abc", "r": "req"})
    assert (
        str(info.value) == "N must be a number but it was a string. B must be a boolean but it was a string."
    )


def test_batch_mode_keeps_root_empty_strings_for_string_fields() -> None:
    schema = _f2_schema()
    assert schema.validate({"r": "req", "s": "", "n": ""}, root=False) == {"r": "req", "s": ""}


def test_items_inside_object_lists_are_coerced_not_removed() -> None:
    fields = {
        "items": Field(
            label="Items",
            type="object",
            multiple=True,
            properties={
                "price": Field(label="Price", type="number"),
                "name": Field(label="Name"),
                "ok": Field(label="OK", type="boolean"),
            },
        )
    }
    out = PayloadSchema(fields).validate({"items": [{"price": None, "name": None, "ok": None}, None]})
    assert out == {"items": [{"price": 0, "name": "", "ok": False}]}


def test_multiple_string_items_without_title_use_the_pointer() -> None:
    schema = PayloadSchema({"m": Field(label="M", multiple=True)})
    with pytest.raises(PayloadValidationError) as info:
        schema.validate({"m": ["a", {"x": 1}]})
    assert str(info.value) == "The value at /m/1 must be a string but it was an object."


def test_number_coercion_follows_javascript_number() -> None:
    schema = PayloadSchema({"n": Field(label="N", type="number"), "i": Field(label="I", type="integer")})
    assert schema.validate({"n": " 2.50 ", "i": "0x10"}) == {"n": 2.5, "i": 16}
    assert schema.validate({"n": "1e3", "i": "7.0"}) == {"n": 1000, "i": 7}
    with pytest.raises(PayloadValidationError, match="I must be an integer but it was a string"):
        schema.validate({"i": "7.5"})
    assert string_to_number("") == 0
    assert string_to_number("12px") != string_to_number("12px")  # NaN


def test_choices_with_three_values_and_allow_null() -> None:
    schema = PayloadSchema(
        {"c": Field(label="Colour", choices=("r", "g", Choice("Blue", "b")), allow_null=True)}
    )
    assert schema.validate({"c": None}) == {"c": None}
    with pytest.raises(PayloadValidationError) as info:
        schema.validate({"c": "x"})
    assert str(info.value) == 'Colour must be one of: "r", "g", "b", or null.'


def test_minimum_length_message_and_number_minimum() -> None:
    schema = PayloadSchema(
        {"s": Field(label="Code", minimum=2), "n": Field(label="N", type="number", minimum=1)}
    )
    with pytest.raises(PayloadValidationError) as info:
        schema.validate({"s": "a", "n": 0.5})
    assert str(info.value) == (
        "Code must be 2 characters or more but it was 1 character. N must be equal to or greater than 1."
    )


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("a@b.co", True),
        ("first.last+tag@sub.example.org", True),
        ("nope", False),
        ("a@b", False),
        ("a b@c.com", False),
        ("a@b.com\n", False),
    ],
)
def test_email_format(value: str, valid: bool) -> None:
    schema = PayloadSchema({"e": Field(label="Email", format="email")})
    if valid:
        assert schema.validate({"e": value}) == {"e": value}
    else:
        with pytest.raises(
            PayloadValidationError, match=r"^Email must be a valid email address string but it was not\.$"
        ):
            schema.validate({"e": value})


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("uri", "https://example.com/a?b=c", "not a uri"),
        ("date", "2024-02-29", "2023-02-29"),
        ("date-time", "2024-01-08T13:52:50.212Z", "2024-01-08 13:52"),
        ("ipv4", "10.0.0.1", "10.0.0.256"),
        ("uuid", "123e4567-e89b-12d3-a456-426614174000", "123e4567"),
    ],
)
def test_other_formats(fmt: str, good: str, bad: str) -> None:
    schema = PayloadSchema({"v": Field(label="V", format=fmt)})
    assert schema.validate({"v": good}) == {"v": good}
    with pytest.raises(PayloadValidationError, match="must be a valid"):
        schema.validate({"v": bad})


def test_conditionally_required_field() -> None:
    fields = {
        "mode": Field(label="Mode"),
        "target": Field(
            label="Target",
            required=ConditionalRequired((Condition("mode", "is", "email"),)),
        ),
    }
    schema = PayloadSchema(fields)
    assert schema.validate({"mode": "sms"}) == {"mode": "sms"}
    assert schema.validate({"mode": "email", "target": "x"}) == {"mode": "email", "target": "x"}
    with pytest.raises(PayloadValidationError) as info:
        schema.validate({"mode": "email"})
    assert str(info.value) == (
        "The root value is missing the required field 'target'. The root value must match \"then\" schema."
    )


@pytest.mark.parametrize(
    ("text", "millis"),
    [
        ("2024-01-08T13:52:50.212Z", 1704721970212),
        ("2024-03-15T12:30:00+02:00", 1710498600000),
        ("2024-03-15", 1710460800000),
        ("2024-02-30", 1709251200000),
        ("Mon, 08 Jan 2024 13:52:50 GMT", 1704721970000),
    ],
)
def test_javascript_date_parse(text: str, millis: int) -> None:
    assert date_parse(text) == millis


def test_unparseable_dates_are_nan() -> None:
    for text in ("garbage", "2024-13-01", "1704721970"):
        value = date_parse(text)
        assert value != value


def test_has_no_value_rule_treats_zero_and_false_as_no_value_like_segment() -> None:
    fields = {
        "count": Field(label="Count", type="integer"),
        "note": Field(label="Note", required=ConditionalRequired((Condition("count", "is"),))),
    }
    schema = PayloadSchema(fields)
    assert schema.validate({"count": 3}) == {"count": 3}
    with pytest.raises(PayloadValidationError, match="missing the required field 'note'"):
        schema.validate({"count": 0})
    # Segment's rule turns a lone "" into null before the field is checked; null then coerces to 0.
    assert schema.validate({"count": [""], "note": "n"}) == {"count": 0, "note": "n"}


def test_boolean_true_inside_a_list_is_not_a_boolean_or_null() -> None:
    schema = PayloadSchema({"b": Field(label="B", type="boolean", allow_null=True)})
    with pytest.raises(PayloadValidationError, match=r"^B must be a boolean or null but it was a boolean\.$"):
        schema.validate({"b": [True]})
    assert schema.validate({"b": [1]}) == {"b": True}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"mode": "email", "count": "x"}, "target"),  # a conditional rule's problem comes first
        ({"mode": "sms", "count": "x"}, "id"),  # then a missing required field
        ({"id": "1", "count": "x", "mode": {"a": 1}}, "mode"),  # then the checks, in field order
        ("not an object", None),
    ],
)
def test_a_validation_error_names_the_field_its_first_problem_is_about(
    payload: Any, field: str | None
) -> None:
    fields = {
        "id": Field(label="Id", required=True),
        "mode": Field(label="Mode"),
        "count": Field(label="Count", type="integer"),
        "target": Field(label="Target", required=ConditionalRequired((Condition("mode", "is", "email"),))),
    }
    with pytest.raises(PayloadValidationError) as info:
        PayloadSchema(fields).validate(payload)
    assert info.value.field == field
