"""JavaScript's undefined, typeof and truthiness for JSON-shaped Python values."""

from __future__ import annotations

import math
from typing import Final


class Undefined:
    """JavaScript's `undefined`: a missing value, distinct from `None` (JSON null)."""

    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "undefined"

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = Undefined()


def is_undefined(value: object) -> bool:
    return value is UNDEFINED


def typeof(value: object) -> str:
    """JavaScript `typeof` for JSON-shaped Python values."""
    if value is UNDEFINED:
        return "undefined"
    if value is None:
        return "object"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"


def truthy(value: object) -> bool:
    """JavaScript truthiness: `""`, 0, NaN, null, undefined and false are falsy; `[]` and `{}` are not."""
    if value is None or value is UNDEFINED or value is False:
        return False
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return value != 0
    if isinstance(value, float):
        return not (value == 0 or math.isnan(value))
    if isinstance(value, str):
        return value != ""
    return True


def present(value: object) -> bool:
    """`if (value)` as a partner's perform writes it; the same as `truthy`, quicker for text."""
    if value is None:
        return False
    if value.__class__ is str:
        return value != ""
    return truthy(value)
