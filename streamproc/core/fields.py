"""Action field definitions: what a partner action accepts, as data (Segment's `InputField`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from streamproc.core.js import UNDEFINED

__all__ = ["Choice", "Condition", "ConditionalRequired", "Field", "FieldType"]

FieldType = Literal["string", "text", "password", "number", "integer", "boolean", "object", "datetime"]


@dataclass(frozen=True)
class Choice:
    """One allowed value, with the label the UI shows for it."""

    label: str
    value: str


@dataclass(frozen=True)
class Condition:
    """`fieldKey operator value`; `value` UNDEFINED means "has a value" / "has no value"."""

    field_key: str
    operator: Literal["is", "is_not"]
    value: Any = UNDEFINED


@dataclass(frozen=True)
class ConditionalRequired:
    """A field required only when `all` (or `any`) of the conditions hold."""

    conditions: tuple[Condition, ...]
    match: Literal["all", "any"] = "all"


@dataclass(frozen=True)
class Field:
    """One input field of an action (or one setting of a destination).

    `default` is the default *mapping* (a mapping-kit value), used by presets and by
    subscriptions that keep `defaults: true`; it is never applied by validation."""

    label: str
    type: FieldType = "string"
    description: str = ""
    required: bool | ConditionalRequired = False
    multiple: bool = False
    choices: tuple[str | Choice, ...] | None = None
    format: str | None = None
    allow_null: bool = False
    properties: Mapping[str, Field] | None = None
    additional_properties: bool = False
    default: Any = UNDEFINED
    minimum: float | None = None
    maximum: float | None = None
    hidden: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)
    secret: bool = False
    """A setting that is a credential (as a `password` one is): masked wherever it is shown."""
