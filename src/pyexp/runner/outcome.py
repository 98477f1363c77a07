"""How an index ended, recorded in one place for pyexp-run and pyexp.claim(): its completion
record when it is done, else an attempt; its lease released either way."""

from __future__ import annotations

from typing import Protocol

from pyexp.state import checkpoints
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
    checkpoint: str | None = None,
) -> tuple[str, str | None]:
    """Record work's outcome (DONE: its completion record with info; else an attempt with info
    and the failure's details) and release its lease; the outcome recorded and why it differs:
    a completion record that cannot be written makes a failed attempt, and state that cannot be
    written at all leaves the index UNRECORDED (missing). Its checkpoint folder (checkpoint;
    None: keep it) is removed once done, else only if nothing was saved in it."""
    error = None
    try:
        if outcome == DONE:
            try:
                records.mark_complete(work.params, work.run, info)
                if checkpoint is not None:
                    checkpoints.remove(checkpoint)
                return DONE, None
            except OSError as e:
                outcome, error = FAILED, f"its completion record cannot be written: {e}"
        details = {**info, **(failure or {}), **({"error": error} if error else {})}
        attempts.record(work.key, outcome, details, attempt)
        if checkpoint is not None:
            checkpoints.remove_empty(checkpoint)
        return outcome, error
    except OSError as e:
        return UNRECORDED, f"not recorded ({e}); it stays missing"
    finally:
        leases.forget(work.key)
