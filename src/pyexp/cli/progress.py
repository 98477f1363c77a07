"""A progress line on stderr for `pyexp-submit --local`: redrawn on a terminal, sparse in logs."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class Progress:
    """Called as each local task finishes: a bar on a terminal, a line per 10% otherwise."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.shown = -1

    def __call__(self, finished: int, total: int, failed: int) -> None:
        """Show that finished of total indices have run, in tasks of which failed had failures."""
        step = finished * 10 // total
        if not self.tty and step == self.shown and finished < total:
            return
        self.shown = step
        filled = finished * WIDTH // total
        elapsed = time.monotonic() - self.start
        eta = elapsed / finished * (total - finished)
        text = (
            f"{self.label}: [{'#' * filled}{'.' * (WIDTH - filled)}] {finished}/{total} indices"
            f"{f', {failed} tasks with failures' if failed else ''}, {clock(elapsed)} elapsed"
            f"{f', ~{clock(eta)} left' if finished < total else ''}"
        )
        end = "\n" if finished == total or not self.tty else ""
        self.stream.write(("\r\x1b[K" if self.tty else "") + text + end)
        self.stream.flush()


def clock(seconds: float) -> str:
    """Seconds as h:mm:ss (or m:ss under an hour)."""
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
