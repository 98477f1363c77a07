"""How an index ended, recorded in one place for pyexp-run and pyexp.claim(): its completion
record when it is done, else an attempt; its lease released either way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pyexp.errors import ResultsError
from pyexp.state import checkpoints
from pyexp.state.attempts import FAILED, OOM, Attempts
from pyexp.state.leases import DONE, IndexLeases  # a completed lease is a tombstone: "done"
from pyexp.state.records import CompletionRecords

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
    checkpoint: str | None = None,
    store: Callable[[], None] | None = None,
    cannot_write: Callable[[OSError], None] = lambda e: None,
) -> tuple[str, str | None]:
    """Record work's outcome (DONE: a tombstone in its lease marker, then its completion record
    with info; else an attempt with info and the failure's details) and end its lease; the
    outcome recorded and why it differs: a completion record that cannot be written makes a
    failed attempt, and state that cannot be written at all leaves the index UNRECORDED
    (missing). Each write that fails is also passed to cannot_write (the caller stops). store
    puts a DONE index's saved data into the results store first: if it cannot, the attempt
    failed (data and completion agree). Its checkpoint folder (checkpoint; None: keep it) is
    removed once done, else only if nothing was saved in it."""
    error = None
    try:
        if outcome == DONE and store is not None:
            try:
                store()
            except (OSError, ResultsError) as e:
                outcome, error = FAILED, f"its results cannot be stored: {e}"
                if isinstance(e, OSError):
                    cannot_write(e)
        if outcome == DONE:
            try:  # the tombstone first: every record younger than its retention has one
                leases.end(work.key, completed=True)
                try:
                    records.mark_complete(work.params, work.run, info)
                except OSError:
                    leases.undo(work.key)
                    raise
                if checkpoint is not None:
                    checkpoints.remove(checkpoint)
                return DONE, None
            except OSError as e:
                outcome, error = FAILED, f"its completion record cannot be written: {e}"
                cannot_write(e)
        details = {**info, **(failure or {}), **({"error": error} if error else {})}
        attempts.record(work.key, outcome, details, attempt)
        if checkpoint is not None:
            checkpoints.remove_empty(checkpoint)
        return outcome, error
    except OSError as e:
        cannot_write(e)
        outcome = UNRECORDED
        return UNRECORDED, f"not recorded ({e}); it stays missing"
    finally:
        if outcome != DONE:  # a completed one ended with its tombstone above
            try:
                leases.end(work.key, completed=False, failed=outcome in (FAILED, OOM))
            except OSError as e:
                cannot_write(e)
