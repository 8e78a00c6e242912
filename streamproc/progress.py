"""A progress display for long commands: a redrawn bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float | None) -> str:
    """`1h02m`, `3m05s`, `12s`; `?` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class Progress:
    """Shows done/total, the recent rate and the time left.

    On a terminal the bar is redrawn in place at most `redraw` times a second; elsewhere (CI logs,
    pipes) one line is written every `every` seconds, so a log is readable afterwards.
    """

    def __init__(
        self,
        total: int | None,
        *,
        label: str = "events",
        stream: TextIO | None = None,
        tty: bool | None = None,
        every: float = 5.0,
        redraw: float = 10.0,
        width: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = tty if tty is not None else self.stream.isatty()
        self.every = every
        self.min_gap = 1.0 / redraw
        self.width = width
        self._clock = clock
        self.started = clock()
        self.done = 0
        self._last_draw = float("-inf")
        self._window: list[tuple[float, int]] = [(self.started, 0)]
        self._drawn = False

    def rate(self) -> float:
        """Events per second over the last ten seconds (the whole run while shorter)."""
        now = self._clock()
        while len(self._window) > 2 and now - self._window[1][0] > 10.0:
            self._window.pop(0)
        t0, d0 = self._window[0]
        return (self.done - d0) / (now - t0) if now > t0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        if self.total:
            frac = min(1.0, self.done / self.total)
            left = (self.total - self.done) / rate if rate > 0 else None
            if self.tty:
                filled = int(frac * self.width)
                bar = "#" * filled + "-" * (self.width - filled)
                head = f"[{bar}] "
            else:
                head = ""
            return (
                f"{head}{self.done}/{self.total} {self.label} {frac * 100:5.1f}%  "
                f"{rate:,.1f}/s  ETA {format_duration(left)}"
            )
        elapsed = format_duration(self._clock() - self.started)
        return f"{self.done} {self.label}  {rate:,.1f}/s  elapsed {elapsed}"

    def update(self, done: int, *, force: bool = False) -> None:
        self.done = done
        now = self._clock()
        if now - self._window[-1][0] >= 1.0:
            self._window.append((now, done))
        gap = self.min_gap if self.tty else self.every
        if not force and now - self._last_draw < gap:
            return
        self._last_draw = now
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.line())
            self._drawn = True
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        self.update(self.done, force=True)
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
