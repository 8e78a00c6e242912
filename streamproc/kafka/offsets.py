"""Per-partition offset tracking: the committable position is the first offset not yet complete."""

from __future__ import annotations

from collections import deque

__all__ = ["OffsetTracker"]


class OffsetTracker:
    """Which consumed offsets of one partition are finished, and so how far it is safe to commit.

    Offsets are added in the order they are consumed (strictly increasing; gaps from compaction or
    transaction markers are fine) and completed in any order. The watermark is the first offset
    that is not complete, or one past the last consumed offset when all are. Each add and complete
    costs amortised O(1): the queue keeps consumption order, the set says which are still open, and
    the head of the queue skips finished offsets only when the oldest open one finishes.

    A tracker is closed when its partition is revoked or lost; a closed tracker ignores late
    completions so a delivery that finishes after the partition moved on never commits.
    """

    __slots__ = ("_last", "_open", "_pending", "closed", "partition", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self._pending: deque[int] = deque()
        self._open: set[int] = set()
        self._last: int | None = None
        self.closed = False

    def add(self, offset: int) -> None:
        """Record a consumed offset whose work has just started."""
        if self._last is not None and offset <= self._last:
            raise ValueError(
                f"{self.topic}[{self.partition}]: offset {offset} added after {self._last}; "
                "offsets must be added in consumption order"
            )
        self._last = offset
        self._pending.append(offset)
        self._open.add(offset)

    def complete(self, offset: int) -> bool:
        """Mark an offset finished; returns whether the watermark moved. Ignored once closed."""
        if self.closed or offset not in self._open:
            return False
        self._open.discard(offset)
        pending = self._pending
        if offset != pending[0]:
            return False
        pending.popleft()
        open_ = self._open
        while pending and pending[0] not in open_:
            pending.popleft()
        return True

    @property
    def in_flight(self) -> int:
        """Consumed offsets not yet complete."""
        return len(self._open)

    @property
    def window(self) -> int:
        """Consumed offsets at or past the watermark, finished or not: what a restart reads again
        (and what this tracker holds in memory)."""
        return len(self._pending)

    def watermark(self) -> int | None:
        """The offset to commit (the next one to read after a restart); None before any offset."""
        if self._pending:
            return self._pending[0]
        return None if self._last is None else self._last + 1

    def close(self) -> int:
        """Stop accepting completions; returns how many offsets were still in flight."""
        self.closed = True
        return self.in_flight

    def __repr__(self) -> str:
        return (
            f"OffsetTracker({self.topic}[{self.partition}], watermark={self.watermark()}, "
            f"in_flight={self.in_flight}, closed={self.closed})"
        )
