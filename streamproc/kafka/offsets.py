"""Per-partition offset tracking: the committable position is the first offset not yet complete, and
what is finished past it travels with the commit (streamproc.kafka.progress)."""

from __future__ import annotations

from collections import deque

from streamproc.kafka.progress import Progress

__all__ = ["OffsetTracker"]


class OffsetTracker:
    """Which consumed offsets of one partition are finished, and so how far it is safe to commit.

    Offsets are added in the order they are consumed (strictly increasing; gaps from compaction or
    transaction markers are fine) and completed in any order. The watermark is the first offset
    that is not complete, or one past the last consumed offset when all are. Each add and complete
    costs amortised O(1): the queue keeps consumption order, the set says which are still open, and
    the head of the queue skips finished offsets only when the oldest open one finishes.

    Past the watermark, `progress()` (built at commit time, O(window)) says which offsets are
    finished and, for an unfinished event, which of its deliveries are (`finish_delivery`): an
    offset up to the last consumed one is finished unless it is open (an offset never added holds
    no message, or was finished by an earlier owner). An owner that takes the partition over
    `inherit`s the progress committed with it: `skips` then says which offsets to pass over, and
    `add` hands an offset the deliveries finished before (`finished_deliveries`). The inherited
    ranges are consumed in order as consumption passes them, so that is amortised O(1) too, and
    what is not consumed yet is committed again with the next commits.

    A tracker is closed when its partition is revoked or lost; a closed tracker ignores late
    completions so a delivery that finishes after the partition moved on never commits.
    """

    __slots__ = (
        "_carried",
        "_carried_parts",
        "_last",
        "_open",
        "_parts",
        "_pending",
        "closed",
        "partition",
        "topic",
    )

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self._pending: deque[int] = deque()
        self._open: set[int] = set()
        self._last: int | None = None
        self._parts: dict[int, set[int]] = {}
        """Open offset -> delivery keys of its deliveries already finished."""
        self._carried: deque[tuple[int, int]] = deque()
        """Inherited [start, stop) ranges of finished offsets not yet passed by consumption."""
        self._carried_parts: dict[int, frozenset[int]] = {}
        """Inherited partly finished offsets not yet consumed, in ascending order."""
        self.closed = False

    def inherit(self, progress: Progress) -> None:
        """Take over what an earlier owner finished past the committed offset (before any `add`)."""
        self._carried = deque(progress.finished)
        self._carried_parts = {o: progress.parts[o] for o in sorted(progress.parts)}

    def skips(self, offset: int) -> bool:
        """Whether a consumed offset was finished by an earlier owner; it then counts as consumed
        and finished, and must not be added."""
        carried = self._carried
        if not carried or (self._last is not None and offset <= self._last):
            return False
        while carried and carried[0][1] <= offset:
            carried.popleft()
        if carried and carried[0][0] <= offset:
            self._last = offset
            return True
        return False

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
        if self._carried_parts:
            self._carry_parts(offset)

    def _carry_parts(self, offset: int) -> None:
        carried = self._carried_parts
        while carried:
            first = next(iter(carried))
            if first > offset:
                return
            done = carried.pop(first)
            if first == offset:
                self._parts[offset] = set(done)

    def complete(self, offset: int) -> bool:
        """Mark an offset finished; returns whether the watermark moved. Ignored once closed."""
        if self.closed or offset not in self._open:
            return False
        self._open.discard(offset)
        if self._parts:
            self._parts.pop(offset, None)
        pending = self._pending
        if offset != pending[0]:
            return False
        pending.popleft()
        open_ = self._open
        while pending and pending[0] not in open_:
            pending.popleft()
        return True

    def finish_delivery(self, offset: int, key: int) -> None:
        """One delivery (`progress.delivery_key`) of an open offset finished before the others."""
        if self.closed or offset not in self._open:
            return
        done = self._parts.get(offset)
        if done is None:
            self._parts[offset] = {key}
        else:
            done.add(key)

    def finished_deliveries(self, offset: int) -> set[int] | None:
        """Keys of the deliveries of an open offset that are finished (those an earlier owner
        finished, right after `add`); None when none is."""
        return self._parts.get(offset) if self._parts else None

    @property
    def in_flight(self) -> int:
        """Consumed offsets not yet complete."""
        return len(self._open)

    @property
    def window(self) -> int:
        """Consumed offsets at or past the watermark, finished or not: what this tracker holds in
        memory (and what a restart reads again, passing over those a commit said were finished)."""
        return len(self._pending)

    def watermark(self) -> int | None:
        """The offset to commit (the next one to read after a restart); None before any offset."""
        if self._pending:
            return self._pending[0]
        if self._last is None:
            return None
        watermark = self._last + 1
        # Inherited finished offsets right after the last consumed one are past the watermark too.
        for start, stop in self._carried:
            if start > watermark:
                break
            watermark = max(watermark, stop)
        return watermark

    def progress(self) -> Progress | None:
        """What is finished past the watermark, for the commit's metadata; None before any offset."""
        watermark = self.watermark()
        if watermark is None:
            return None
        open_ = self._open
        finished: list[tuple[int, int]] = []
        previous = None
        for offset in self._pending:
            if offset in open_:
                if previous is not None and offset > previous + 1:
                    finished.append((previous + 1, offset))
                previous = offset
        last = self._last
        assert last is not None
        if previous is not None and last > previous:
            finished.append((previous + 1, last + 1))
        for start, stop in self._carried:
            start = max(start, last + 1)
            if start >= stop:
                continue
            if finished and finished[-1][1] == start:
                finished[-1] = (finished[-1][0], stop)
            else:
                finished.append((start, stop))
        if not self._pending:
            finished = [(max(s, watermark), e) for s, e in finished if e > watermark]
        parts = {o: frozenset(keys) for o, keys in self._parts.items()}
        for offset, keys in self._carried_parts.items():
            if offset > last:
                parts[offset] = keys
        return Progress(watermark, tuple(finished), parts)

    def close(self) -> int:
        """Stop accepting completions; returns how many offsets were still in flight."""
        self.closed = True
        return self.in_flight

    def __repr__(self) -> str:
        return (
            f"OffsetTracker({self.topic}[{self.partition}], watermark={self.watermark()}, "
            f"in_flight={self.in_flight}, closed={self.closed})"
        )
