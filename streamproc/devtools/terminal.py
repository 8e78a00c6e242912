"""Keeps the terminal for a command's own output: what libraries write straight to stderr goes to a file.

librdkafka prints its log lines to the process's standard error (file descriptor 2) from C, and so do
child processes that inherit it; a command that draws its own screen (the demo's progress line) would
see them cut through it. `own_terminal` points descriptor 2 (and so `sys.stderr`) at a log file and
hands back a stream on the original terminal for the command itself.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["own_terminal"]


@contextlib.contextmanager
def own_terminal(log_path: Path) -> Iterator[TextIO]:
    """Within the block, descriptor 2 writes to `log_path`; yields a stream on the former stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    try:
        os.dup2(log_fd, 2)
        yield terminal
    finally:
        terminal.flush()
        sys.stderr.flush()
        os.dup2(saved, 2)
        for fd in (saved, log_fd):
            os.close(fd)
        terminal.close()
