"""The demo's progress line: redrawn in place on a terminal, printed every few seconds elsewhere."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from typing import TextIO

__all__ = ["ProgressDisplay"]


def _columns(out: TextIO) -> int:
    """The width of the terminal `out` writes to (its own, not stdout's, which may be a pipe)."""
    try:
        return os.get_terminal_size(out.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return shutil.get_terminal_size().columns


class ProgressDisplay:
    """One progress line: redrawn in place on a terminal, printed every few seconds elsewhere.

    On a terminal the line fits its width: the per-destination counts give way to their total first,
    so dead letters and in-flight events always show."""

    def __init__(self, out: TextIO, tty: bool | None, columns: Callable[[], int] | None = None):
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.columns = columns or (lambda: _columns(out))
        self.last_print = 0.0
        self.last: tuple[float, int] | None = None

    def line(self, produced: int, consumed: int, rate: float, totals: dict[str, Counter[str]]) -> str:
        delivered = totals["delivered"]
        head = f"produced {produced}  consumed {consumed} ({rate:,.0f}/s)"
        dead, in_flight = sum(totals["dead_lettered"].values()), totals["in_flight"]["events"]
        status = f"dead letters {dead}  in flight {in_flight}"
        detail = " ".join(f"{d}={n}" for d, n in sorted(delivered.items())) or "-"
        candidates = [
            f"{head}  {status}  delivered: {detail}",
            f"{head}  {status}  delivered {sum(delivered.values())}",
            f"{head}  {status}",
            f"consumed {consumed}/{produced} ({rate:,.0f}/s)  {status}",
            f"{consumed}/{produced} ({rate:,.0f}/s) dead {dead} in flight {in_flight}",
        ]
        if not self.tty:
            return candidates[0]
        # A line as wide as the terminal wraps, and then cannot be redrawn in place.
        width = max(20, self.columns() - 1)
        return next((c for c in candidates if len(c) <= width), candidates[-1][:width])

    def update(self, produced: int, totals: dict[str, Counter[str]], *, final: bool = False) -> None:
        now = time.monotonic()
        consumed = sum(totals["consumed"].values())
        rate = 0.0
        if self.last is not None and now > self.last[0]:
            rate = (consumed - self.last[1]) / (now - self.last[0])
        if self.last is None or now - self.last[0] >= 1.0:
            self.last = (now, consumed)
        line = self.line(produced, consumed, rate, totals)
        if self.tty:
            self.out.write("\r\x1b[2K" + line + ("\n" if final else ""))
            self.out.flush()
        elif final or now - self.last_print >= 2.0:
            self.out.write(line + "\n")
            self.out.flush()
            self.last_print = now
