"""Which of a task's planned indices today's experiment file still sweeps."""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from pyexp.errors import PyExpError
from pyexp.experiment import ExperimentDescription, loadExperiment, paramsHash
from pyexp.standing.missing import permutation_hashes
from pyexp.state.layout import work_scope
from pyexp.state.ledger import LedgerEntry

MAX_CHECKED = 10**6  # permutations: hashing more (seconds per million) in every task is too slow


def still_swept(
    entry: LedgerEntry, planned: ExperimentDescription, indices: list[int], out: TextIO
) -> list[int]:
    """The indices (of planned, the entry's snapshot) whose parameters today's file still sweeps;
    see swept_check."""
    check = swept_check(entry, planned, out)
    return [i for i in indices if check(i)]


def swept_check(
    entry: LedgerEntry, planned: ExperimentDescription, out: TextIO
) -> Callable[[int], bool]:
    """Whether an index (of planned, the entry's snapshot) has parameters today's file still
    sweeps; each other one is skipped with one line on out. A file that is gone, does not parse,
    sweeps more than MAX_CHECKED permutations or now names other work (other values of its save
    path's fields, recorded apart) is not checked: everything runs as planned, said once."""
    try:
        today = loadExperiment(entry.experiment, config=planned.config)
        if today.fingerprint() == entry.fingerprint:
            return _always
        if work_scope(today) != work_scope(planned):
            why = f"{entry.experiment} now sets other save path fields (other work)"
            return _as_planned(out, why)
        if today.numPermutations() > MAX_CHECKED:
            n = today.numPermutations()
            why = f"{entry.experiment} sweeps {n} permutations, more than the {MAX_CHECKED} checked"
            return _as_planned(out, why)
    except PyExpError as e:
        return _as_planned(out, str(e))
    swept = set(permutation_hashes(today))

    def check(i: int) -> bool:
        if paramsHash(planned.getPermutation(i)) in swept:
            return True
        _say(out, f"index {i}: its parameters were removed from {entry.experiment}: skipped")
        return False

    return check


def _always(_index: int) -> bool:
    return True


def _as_planned(out: TextIO, why: str) -> Callable[[int], bool]:
    _say(out, f"{why}: running this task's indices as submitted, unchecked for removals")
    return _always


def _say(out: TextIO, message: str) -> None:
    print(f"pyexp-run: {message}", file=out, flush=True)
