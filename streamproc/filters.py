"""Public destination-filter interface: compile a filter condition, and the list of deliberate differences."""

from streamproc.core.filters import (
    ALL,
    DELIBERATE_DIFFERENCES,
    Condition,
    FilterRule,
    FilterSyntaxError,
    parse_condition,
)

__all__ = ["ALL", "DELIBERATE_DIFFERENCES", "Condition", "FilterRule", "FilterSyntaxError", "parse_condition"]
