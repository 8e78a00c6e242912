"""Segment's two gates before a destination's filters: consent, then the integrations object.

Consent (`consent_allows`): an event without `context.consent.categoryPreferences` (absent or
null) goes to every destination; with it, a destination mapped to consent categories receives the
event only when every one of its categories is `true` there (an empty or malformed preferences
object consents to nothing); a destination with no categories always receives. Only the boolean
true consents (the deliberate difference "consent-true").

The integrations object (`integrations_allow`), exactly as analytics-next's event queue decides
it: `integrations[name] ?? <last alternative name present> ?? (integrations.All !== false)`. A
key for the destination that is present and not null wins over `All`, and it is then read by
JavaScript truthiness: `false` blocks (so do 0 and ""), an options object such as
`{"ttclid": "..."}` allows. `All` blocks only when it is `false`. Keys are case-sensitive; an
`integrations` that is not an object counts as absent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streamproc.core.js import UNDEFINED, truthy

__all__ = ["consent_allows", "consent_preferences", "integrations_allow"]


def integrations_allow(integrations: Any, names: Sequence[str]) -> bool:
    """Whether an event's `integrations` lets a destination known by `names` (its name first, then
    alternative names) receive it."""
    if integrations.__class__ is not dict:
        return True
    if names:
        own = integrations.get(names[0], UNDEFINED)
        if own is not None and own is not UNDEFINED:
            return truthy(own)
        alternative: Any = UNDEFINED
        for name in names[1:]:
            value = integrations.get(name, UNDEFINED)
            if value is not UNDEFINED:
                alternative = value  # the last one present, null included, as analytics-next takes it
        if alternative is not None and alternative is not UNDEFINED:
            return truthy(alternative)
    return integrations.get("All", UNDEFINED) is not False


def consent_preferences(event: Mapping[str, Any]) -> Any:
    """`context.consent.categoryPreferences`, or None when the event carries none."""
    context = event.get("context")
    if context.__class__ is not dict:
        return None
    consent = context.get("consent")
    if consent.__class__ is not dict:
        return None
    return consent.get("categoryPreferences")


def consent_allows(preferences: Any, categories: Sequence[str]) -> bool:
    """Whether a destination mapped to `categories` may receive an event with these preferences
    (`consent_preferences(event)`)."""
    if not categories or preferences is None:
        return True
    if preferences.__class__ is not dict:
        return False
    return all(preferences.get(c) is True for c in categories)
