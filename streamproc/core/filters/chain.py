"""One destination instance's filters, applied to an event in Segment's order.

Segment applies an instance's filters by kind: every sample first, then drop, then drop
properties, then allow properties (in the order given within a kind). Each condition reads the
event as the filters before it left it. A property filter changes a copy, made once, so the
caller's event (which other instances see) stays whole. A condition tsub would throw on withholds
the event, as Segment does ("filter_drop").
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from streamproc.core.filters.evaluate import FilterEvaluationError
from streamproc.core.filters.parse import Condition
from streamproc.core.filters.transforms import allow_properties, drop_properties, sample_keeps

__all__ = ["FilterKind", "FilterRule", "apply_filters", "in_segment_order", "property_rules"]

FilterKind = Literal["sample", "drop", "drop_properties", "allow_properties"]
_ORDER: Final = {"sample": 0, "drop": 1, "drop_properties": 2, "allow_properties": 3}


@dataclass(frozen=True)
class FilterRule:
    """One filter: a condition and what it does (`percent` and `path` for sample, `properties` for
    the property kinds in tsub's form: the path of an object -> the members to drop or keep)."""

    condition: Condition
    kind: FilterKind
    percent: float = 1.0
    path: str | None = None
    properties: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def transformer(self) -> dict[str, Any]:
        """tsub's transformer for this filter (its `transform()` input)."""
        if self.kind == "drop":
            return {"type": "drop"}
        if self.kind == "sample":
            sample: dict[str, Any] = {"percent": self.percent}
            if self.path:
                sample["path"] = self.path
            return {"type": "sample_event", "config": {"sample": sample}}
        key = "drop" if self.kind == "drop_properties" else "allow"
        return {"type": self.kind, "config": {key: {k: list(v) for k, v in self.properties.items()}}}


def property_rules(paths: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Field paths as tsub's property rules: `properties.email` is member `email` of `properties`,
    a top-level field a member of `""` (the event)."""
    rules: dict[str, list[str]] = {}
    for path in paths:
        parent, _, name = path.rpartition(".")
        names = rules.setdefault(parent, [])
        if name not in names:
            names.append(name)
    return {k: tuple(v) for k, v in rules.items()}


def in_segment_order(rules: Sequence[FilterRule]) -> tuple[FilterRule, ...]:
    """Sample, drop, drop properties, allow properties; the given order within a kind."""
    return tuple(sorted(rules, key=lambda r: _ORDER[r.kind]))


def copy_event(event: Any) -> Any:
    """A deep copy of a JSON-shaped event (orjson's round trip, or deepcopy for what it refuses)."""
    try:
        return orjson.loads(orjson.dumps(event))
    except (TypeError, orjson.JSONEncodeError):
        return copy.deepcopy(event)


def apply_filters(
    rules: Sequence[FilterRule],
    event: Any,
    random: Callable[[], float],
    *,
    draw: bool = True,
) -> tuple[Any, str | None]:
    """(the event as this instance receives it, None), or (None, reason) when a filter withholds it:
    "filter_sample" or "filter_drop". `rules` are in Segment's order (`in_segment_order`).
    `draw=False` keeps an event a random sample (one without `path`) would draw for: a delivery
    made again (retry, redrive) was drawn for when it was first routed."""
    view = event
    copied = False
    for rule in rules:
        try:
            if not rule.condition.matches(view):
                continue
            kind = rule.kind
            if kind == "sample":
                if (draw or rule.path) and not sample_keeps(view, rule.percent, rule.path, random):
                    return None, "filter_sample"
            elif kind == "drop":
                return None, "filter_drop"
            else:
                if not copied:
                    view = copy_event(view)
                    copied = True
                if kind == "drop_properties":
                    drop_properties(view, rule.properties)
                else:
                    allow_properties(view, rule.properties)
        except FilterEvaluationError:
            return None, "filter_drop"
    return view, None
