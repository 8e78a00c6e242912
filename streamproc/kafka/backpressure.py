"""When a consumer pauses its partitions: a bound on the events and on the bytes it holds past the
watermarks, each with a lower mark at which it resumes.

The bytes of a consumed event (key + value) count from its consumption until the watermark of its
partition passes it, like the events themselves: a finished event behind an unfinished one is read
again after a crash. Bounding bytes as well as events keeps memory bounded whatever the message
sizes: ten thousand 1 MB events fit the event bound and not the memory of a pod.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["HeldBytes", "InFlightBound", "held_bytes", "message_size", "prefetch_settings"]


class HeldBytes:
    """The sizes of one partition's consumed events at or past its watermark, and their sum.

    Sizes are added in consumption order and released from the front once the watermark passes
    them, so each costs amortised O(1)."""

    __slots__ = ("_sizes", "total")

    def __init__(self) -> None:
        self._sizes: deque[tuple[int, int]] = deque()
        self.total = 0

    def add(self, offset: int, size: int) -> None:
        self._sizes.append((offset, size))
        self.total += size

    def release_below(self, watermark: int | None) -> int:
        """Forget the events below `watermark` (None: none yet); returns the bytes still held."""
        sizes = self._sizes
        if watermark is not None:
            while sizes and sizes[0][0] < watermark:
                self.total -= sizes.popleft()[1]
        return self.total


def message_size(msg: Any) -> int:
    """Key and value bytes of a consumed message."""
    key = msg.key()
    value = msg.value()
    return (len(key) if key else 0) + (len(value) if value else 0)


@dataclass
class InFlightBound:
    """Pause at `max_events` events or `max_bytes` bytes held; resume once both are at or below
    their resume marks."""

    max_events: int
    resume_events: int
    max_bytes: int
    resume_bytes: int
    paused: bool = False

    def update(self, events: int, held_bytes: int) -> bool:
        """Whether the consumer should be paused now."""
        if self.paused:
            if events <= self.resume_events and held_bytes <= self.resume_bytes:
                self.paused = False
        elif events >= self.max_events or held_bytes >= self.max_bytes:
            self.paused = True
        return self.paused


def held_bytes(parts: Iterable[Any]) -> int:
    """Bytes held past the watermarks over these partitions (consumer `Partition`s)."""
    return sum(p.sizes.release_below(p.tracker.watermark()) for p in parts)


def prefetch_settings(max_in_flight_bytes: int) -> dict[str, int]:
    """librdkafka's prefetch bounded to an eighth of `max_in_flight_bytes` (1 to 64 MiB): what the
    client queues and fetches ahead of the worker comes on top of what the worker holds.

    A single message larger than these is still fetched (the broker sends one whole message past
    the limits), so they never stall a partition."""
    prefetch = min(64 << 20, max(1 << 20, max_in_flight_bytes // 8))
    return {
        "queued.max.messages.kbytes": prefetch // 1024,
        "fetch.max.bytes": prefetch,
        "max.partition.fetch.bytes": min(1 << 20, prefetch),
    }
