"""Which indices of an experiment still need running."""

from __future__ import annotations

import os
from itertools import compress, repeat
from operator import not_

from pyexp.experiment import ExperimentDescription, paramsHash
from pyexp.state.layout import state_dirs
from pyexp.state.records import CompletionRecords


def listIndices(exp: ExperimentDescription, runs: int = 1) -> list[int]:
    """Every index 0 .. numPermutations*runs - 1, in order."""
    return list(range(exp.numPermutations() * runs))


def permutation_hashes(exp: ExperimentDescription) -> list[str]:
    """paramsHash of every permutation, in index order."""
    return [paramsHash(exp.getPermutation(p)) for p in range(exp.numPermutations())]


def listMissingResults(
    exp: ExperimentDescription, runs: int = 1, result_file: str | None = None
) -> list[int]:
    """Indices with no completion record (or, with result_file, lacking that file), ascending."""
    if result_file is not None:
        return _missing_files(exp, runs, result_file)
    keys = CompletionRecords(state_dirs(exp).done).completed()
    n = exp.numPermutations()
    if not keys:
        return list(range(n * runs))
    hashes = permutation_hashes(exp)
    done = keys.__contains__
    missing: list[int] = []
    for run in range(runs):
        # Per run, in C: the record key of each permutation, looked up; keep those not done.
        wanted = map(str.__add__, hashes, repeat(f"-{run}"))
        missing.extend(compress(range(run * n, (run + 1) * n), map(not_, map(done, wanted))))
    return missing


def _missing_files(exp: ExperimentDescription, runs: int, result_file: str) -> list[int]:
    listings: dict[str, frozenset[str] | None] = {}
    fixed = os.path.dirname(exp.config.save_path.split("{")[0])  # never list above the results tree

    def listing(folder: str) -> frozenset[str] | None:
        # Ask the parent's listing first, so a folder that was never made costs no syscall.
        if folder not in listings:
            parent, name = os.path.split(folder)
            above = listing(parent) if len(parent) > len(fixed) else None
            if above is not None and name not in above:
                listings[folder] = None
            else:
                try:
                    listings[folder] = frozenset(os.listdir(folder))
                except (FileNotFoundError, NotADirectoryError):
                    listings[folder] = None
        return listings[folder]

    missing = []
    for i in range(exp.numPermutations() * runs):
        folder, name = os.path.split(exp.buildSaveContext(i).resolve(result_file))
        found = listing(folder)
        if found is None or name not in found:
            missing.append(i)
    return missing
