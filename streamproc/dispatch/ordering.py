"""Per-key order: one delivery of a key at a time, in the order they were taken in."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["KeySequencer", "Turn"]


class Turn:
    """One place in a key's queue; the future to wait on is made only when someone does wait
    (a task), and an admission waiting for it leaves a callback instead (`KeySequencer.then`)."""

    __slots__ = ("finished", "then", "waiter")

    def __init__(self) -> None:
        self.finished = False
        self.waiter: asyncio.Future[None] | None = None
        self.then: Callable[[], None] | None = None


class KeySequencer:
    """Runs work for one key one at a time, in the order `turn` was called, while other keys proceed.

    Only the tail of each key's chain is kept, so memory is bounded by the work in flight; a key
    with nothing ahead of it costs no future.
    """

    def __init__(self) -> None:
        self._tails: dict[Any, Turn] = {}

    def __len__(self) -> int:
        return len(self._tails)

    def turn(self, key: Any) -> tuple[Turn | None, Turn]:
        """Join the queue for `key` now (synchronously, to fix the order): (predecessor, mine)."""
        mine = Turn()
        prev = self._tails.get(key)
        self._tails[key] = mine
        return prev, mine

    async def wait(self, prev: Turn) -> None:
        """Until the predecessor is done."""
        if prev.finished:
            return
        if prev.waiter is None:
            prev.waiter = asyncio.get_running_loop().create_future()
        # shield: our cancellation must not cancel the predecessor's marker.
        await asyncio.shield(prev.waiter)

    @staticmethod
    def then(prev: Turn, go: Callable[[], None]) -> None:
        """Call `go` once the predecessor is done (at once if it is), without a task waiting."""
        if prev.finished:
            go()
        else:
            prev.then = go

    def done(self, key: Any, mine: Turn) -> None:
        """Let the next one for `key` go."""
        mine.finished = True
        if mine.waiter is not None and not mine.waiter.done():
            mine.waiter.set_result(None)
        if mine.then is not None:
            # From the loop, not from here: a key's chain of admissions given up at a revoke would
            # otherwise run as one deep recursion.
            asyncio.get_running_loop().call_soon(mine.then)
            mine.then = None
        if self._tails.get(key) is mine:
            del self._tails[key]
