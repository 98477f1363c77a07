"""The broken-command guard (as META-Farm's): an array task or farm worker whose first
`indices` indices all failed (exit non-zero: not stopped by a signal, not a lost lease) within
`seconds` each takes no more, says so in one line naming the first failure's log and that log's
last line, and leaves that line in the experiment's state, where pyexp-submit refuses to
resubmit until --retry-failed and pyexp-status shows it. Once one index succeeds or fails slowly,
the guard is off for that task: a command that fails for some parameters only runs them all.
An index that had failed before (a resubmitted failure) counts for neither: those are the
parameters known to fail, and --max-attempts bounds their retries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyexp.runner.outcome import DONE
from pyexp.state.attempts import CHARGED
from pyexp.state.guard import DEFAULT_INDICES, DEFAULT_SECONDS, record_broken
from pyexp.state.index_logs import last_output_line
from pyexp.state.ledger import LedgerEntry


@dataclass
class FailFast:
    """Counts the first finished indices of one task or worker; see the module docstring."""

    indices: int
    seconds: float
    who: str = "this task"  # for the line: the task's .err stem, `<job name>_<task>`
    fast: int = 0
    first_log: str = ""
    first_offset: int | None = None  # where the first failure's attempt starts in first_log
    off: bool = False

    @classmethod
    def for_entry(cls, entry: LedgerEntry, task: int) -> FailFast | None:
        """Task's guard with the entry's thresholds (an entry from before them: the defaults);
        None when the entry turns it off."""
        indices = DEFAULT_INDICES if entry.fail_fast_indices is None else entry.fail_fast_indices
        seconds = DEFAULT_SECONDS if entry.fail_fast_seconds is None else entry.fail_fast_seconds
        return cls(indices, seconds, f"task {entry.job_name}_{task}") if indices else None

    @property
    def tripped(self) -> bool:
        """Whether the first `indices` indices all failed fast: take no more."""
        return not self.off and self.fast >= self.indices

    def saw(
        self, outcome: str, seconds: float, log: str, retry: bool = False, offset: int | None = None
    ) -> bool:
        """Count one finished index (its outcome, duration, log and where its attempt starts in
        it; retry: it had failed before this task tried it); whether it trips the guard."""
        if self.off or self.tripped:
            return False
        if outcome in CHARGED and retry:  # resubmitted failures fail again: no news
            return False
        if outcome in CHARGED and seconds <= self.seconds:
            self.fast += 1
            if not self.first_log:
                self.first_log, self.first_offset = log, offset
            return self.tripped
        if outcome == DONE or outcome in CHARGED:  # a success or a slow failure
            self.off = True
        return False

    def line(self) -> str:
        """What tripped the guard, with the first failure's log and the last line its attempt
        wrote (a slot's log holds later attempts too)."""
        last = last_output_line(self.first_log, self.first_offset) or "(no output)"
        return (
            f"{self.who}: its first {self.indices} indices all failed within {self.seconds:g}s "
            f"each (first: {self.first_log}: {last})"
        )


def report_broken(guard: FailFast, path: str, job: str | None, say: Callable[[str], None]) -> None:
    """Say in one line that the guard tripped and leave that line in state at path."""
    line = guard.line()
    say(f"{line}; a broken command? taking no more indices")
    try:
        record_broken(path, line, job)
    except OSError as e:
        say(f"{path}: cannot record the broken command ({e.strerror or e})")


def failed_before(names: list[tuple[str, str, str]]) -> set[str]:
    """Record keys with a failed attempt among names (Attempts.names())."""
    return {key for key, outcome, _ in names if outcome in CHARGED}
