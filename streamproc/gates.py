"""Which events one destination instance may receive: Segment's gates before its triggers.

In Segment's order: consent, then the integrations object, then the destination filters (sample,
drop, drop properties, allow properties). A `Gate` is compiled once per instance from its
configuration; `Gate.check` answers for one event with the event as the instance receives it (a
copy when a property filter changed it) or the reason it is withheld. The rules themselves are
pure: streamproc.core.gates (consent, integrations) and streamproc.core.filters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from streamproc.config import DestinationConfig
from streamproc.core.filters import (
    FilterRule,
    apply_filters,
    in_segment_order,
    parse_condition,
    property_rules,
)
from streamproc.core.gates import consent_allows, integrations_allow
from streamproc.destinations.base import Destination

__all__ = ["NO_SUBSCRIPTION", "REASONS", "Gate", "Withheld"]

NO_SUBSCRIPTION: Final = "no_subscription"
REASONS: Final = ("integrations", "consent", "filter_drop", "filter_sample", NO_SUBSCRIPTION)
"""Why an instance did not receive an event (streamproc_events_filtered_total's `reason`)."""

Withheld = tuple[tuple[str, str], ...]
"""(destination instance, reason) for each instance an event does not reach."""


@dataclass(frozen=True, slots=True)
class Gate:
    """One instance's gates: its consent categories, its names in the integrations object (None:
    `integrations: ignore`) and its filters in Segment's order."""

    destination: str
    categories: tuple[str, ...]
    names: tuple[str, ...] | None
    filters: tuple[FilterRule, ...]

    @classmethod
    def of(cls, destination: Destination, config: DestinationConfig) -> Gate:
        names = None
        if config.integrations == "apply":
            names = tuple(dict.fromkeys((*destination.integration_names, *config.integration_names)))
        rules = [
            FilterRule(
                parse_condition(f.condition),
                f.kind,
                percent=f.percent,
                path=f.path,
                properties=property_rules(f.properties),
            )
            for f in config.filters
        ]
        return cls(config.id, config.consent_categories, names, in_segment_order(rules))

    @property
    def screens(self) -> bool:
        """Whether every event must be looked at (consent categories or filters), not only those
        carrying an integrations object."""
        return bool(self.categories or self.filters)

    def check(
        self,
        event: Mapping[str, Any],
        integrations: dict[str, Any] | None,
        preferences: Any,
        random: Callable[[], float],
        *,
        draw: bool = True,
    ) -> tuple[Any, str | None]:
        """(the event as this instance receives it, None) or (None, the reason it is withheld).
        `integrations` and `preferences` are the event's, read once for every instance."""
        if self.categories and not consent_allows(preferences, self.categories):
            return None, "consent"
        if (
            integrations is not None
            and self.names is not None
            and not integrations_allow(integrations, self.names)
        ):
            return None, "integrations"
        if self.filters:
            return apply_filters(self.filters, event, random, draw=draw)
        return event, None
