"""A progress line on stderr for `pyexp-submit --local`: redrawn on a terminal, sparse in logs."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

from pyexp.timefmt import amount

# Each command imports its work inside the functions that do it: `--help` and the console
# scripts start fast.

if TYPE_CHECKING:
    from pyexp.scheduler.local import Tick

WIDTH = 30


class Progress:
    """Called as each local task ends: a bar on a terminal, a line per 10% otherwise; the bar
    counts the indices that ran (as the state says), not those planned."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.shown = -1

    def __call__(self, tick: Tick) -> None:
        """Show how many of the planned indices have run as a task ends, and the time left."""
        ran, total = tick.ran, max(1, tick.total)
        step = ran * 10 // total
        if not self.tty and step == self.shown and not tick.over:
            return
        self.shown = step
        filled = min(WIDTH, ran * WIDTH // total)
        elapsed = time.monotonic() - self.start
        failed = f", {amount(tick.failed_tasks, 'task')} with failures" if tick.failed_tasks else ""
        left = f", ~{clock(tick.eta)} left" if tick.eta is not None and not tick.over else ""
        text = (
            f"{self.label}: [{'#' * filled}{'.' * (WIDTH - filled)}] {ran}/{tick.total} indices"
            f"{failed}, {clock(elapsed)} elapsed{left}"
        )
        end = "\n" if tick.over or not self.tty else ""
        self.stream.write(("\r\x1b[K" if self.tty else "") + text + end)
        self.stream.flush()


def clock(seconds: float) -> str:
    """Seconds as h:mm:ss (or m:ss under an hour)."""
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
