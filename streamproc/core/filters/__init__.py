"""Segment's destination filters: FQL conditions compiled to tsub's IR, evaluated and applied as
Segment's published engine (@segment/tsub, @segment/fql-ts) does.

    condition = parse_condition("type = 'track' and contains(lowercase(event), 'order')")
    condition.ir        # tsub's JSON IR, printable and comparable
    condition.matches(event)

`apply_filters` runs one destination instance's filters (sample, drop, drop properties, allow
properties) on an event. Where streamproc knowingly answers otherwise than Segment's code, the
entry is in `DELIBERATE_DIFFERENCES`.
"""

from streamproc.core.filters.chain import (
    FilterKind,
    FilterRule,
    apply_filters,
    in_segment_order,
    property_rules,
)
from streamproc.core.filters.differences import DELIBERATE_DIFFERENCES
from streamproc.core.filters.evaluate import (
    Dialect,
    FilterEvaluationError,
    compile_condition,
    evaluate,
    matches,
)
from streamproc.core.filters.parse import ALL, Condition, FilterSyntaxError, parse_condition
from streamproc.core.filters.transforms import (
    allow_properties,
    consistent_fraction,
    drop_properties,
    sample_keeps,
)

__all__ = [
    "ALL",
    "DELIBERATE_DIFFERENCES",
    "Condition",
    "Dialect",
    "FilterEvaluationError",
    "FilterKind",
    "FilterRule",
    "FilterSyntaxError",
    "allow_properties",
    "apply_filters",
    "compile_condition",
    "consistent_fraction",
    "drop_properties",
    "evaluate",
    "in_segment_order",
    "matches",
    "parse_condition",
    "property_rules",
    "sample_keeps",
]
