"""The counts a replay or redrive reports at its end: what was read, matched, left out, and what
happened to the deliveries of each destination."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Summary", "Tally"]


@dataclass
class Tally:
    """What happened to the deliveries of one destination."""

    matched: int = 0
    delivered: int = 0
    skipped: int = 0
    dead_lettered: int = 0


@dataclass
class Summary:
    """Counts for the final report of a replay or redrive."""

    read: int = 0
    undecodable: int = 0
    unmatched: int = 0
    filtered: int = 0
    withheld: dict[str, int] = field(default_factory=dict)
    """(event, instance) pairs a gate withheld, by reason (consent, integrations, filter_*)."""
    not_redrivable: int = 0
    truncated: int = 0
    """Dead letters whose value was cut to fit the dead-letter topic (redrive cannot send them)."""
    already_redriven: int = 0
    markers: int = 0
    destinations: dict[str, Tally] = field(default_factory=dict)

    def tally(self, destination: str) -> Tally:
        t = self.destinations.get(destination)
        if t is None:
            t = self.destinations[destination] = Tally()
        return t

    def to_json(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "undecodable": self.undecodable,
            "unmatched": self.unmatched,
            "filtered": self.filtered,
            "withheld": dict(sorted(self.withheld.items())),
            "not_redrivable": self.not_redrivable,
            "truncated": self.truncated,
            "already_redriven": self.already_redriven,
            "markers": self.markers,
            "destinations": {k: vars(v) for k, v in sorted(self.destinations.items())},
        }

    def render(self, dry_run: bool = False) -> str:
        first = f"read {self.read} messages, {self.undecodable} undecodable, {self.unmatched} matched nothing"
        if self.filtered:
            first += f", {self.filtered} left out by the filters"
        if self.withheld:
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self.withheld.items()))
            first += (
                f", withheld from destinations by their gates {sum(self.withheld.values())} times ({reasons})"
            )
        if self.markers:
            first += f" ({self.markers} of them redrive markers)"
        if self.already_redriven:
            first += f", {self.already_redriven} redriven before"
        if self.not_redrivable:
            first += f", {self.not_redrivable} without a delivery to redrive"
        lines = [first]
        if self.truncated:
            lines.append(
                f"{self.truncated} dead letters were cut to fit the dead-letter topic and are not sent: "
                "replay each from the original topic/partition/offset its headers name (streamproc "
                "replay --topic T --from P:O --to P:O+1 --subscription D/S) while that topic holds it"
            )
        if not self.destinations:
            lines.append("no deliveries")
            return "\n".join(lines)
        head = (
            "destination",
            "matched",
            "would send" if dry_run else "delivered",
            "skipped",
            "dead-lettered",
        )
        rows = [head] + [
            (d, str(t.matched), str(t.delivered), str(t.skipped), str(t.dead_lettered))
            for d, t in sorted(self.destinations.items())
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        for r in rows:
            lines.append(
                "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
            )
        return "\n".join(lines)
