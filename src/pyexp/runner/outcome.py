"""How an index ended, recorded in one place for pyexp-run and pyexp.claim(): its completion
record when it is done, else an attempt; its lease released either way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pyexp.errors import ResultsError
from pyexp.state.attempts import FAILED, Attempts
from pyexp.state.leases import IndexLeases
from pyexp.state.records import CompletionRecords

DONE = "done"
UNRECORDED = "unrecorded"  # the state could not be written: the index stays missing


class Work(Protocol):
    """An index's work as the records name it."""

    params: dict
    run: int
    key: str


def record_outcome(
    records: CompletionRecords,
    attempts: Attempts,
    leases: IndexLeases,
    work: Work,
    outcome: str,
    info: dict,
    attempt: str | None,
    failure: dict | None = None,
    store: Callable[[], None] | None = None,
) -> tuple[str, str | None]:
    """Record work's outcome (DONE: its completion record with info; else an attempt with info
    and the failure's details) and release its lease; the outcome recorded and why it differs:
    a completion record that cannot be written makes a failed attempt, and state that cannot be
    written at all leaves the index UNRECORDED (missing). store puts a DONE index's saved data
    into the results store first: if it cannot, the attempt failed (data and completion agree)."""
    error = None
    try:
        if outcome == DONE and store is not None:
            try:
                store()
            except (OSError, ResultsError) as e:
                outcome, error = FAILED, f"its results cannot be stored: {e}"
        if outcome == DONE:
            try:
                records.mark_complete(work.params, work.run, info)
                return DONE, None
            except OSError as e:
                outcome, error = FAILED, f"its completion record cannot be written: {e}"
        details = {**info, **(failure or {}), **({"error": error} if error else {})}
        attempts.record(work.key, outcome, details, attempt)
        return outcome, error
    except OSError as e:
        return UNRECORDED, f"not recorded ({e}); it stays missing"
    finally:
        leases.forget(work.key)
