"""Adopting results that exist on disk from before pyexp: completion records, so no rerun."""

from __future__ import annotations

from pyexp.experiment import ExperimentDescription
from pyexp.standing.missing import listIndices, listMissingResults
from pyexp.state.layout import state_dirs
from pyexp.state.records import CompletionRecords, record_key


def adopt(
    exp: ExperimentDescription, runs: int, result_file: str, dry_run: bool = False
) -> tuple[list[int], int]:
    """(adopted, already done): record as complete each index whose save path holds result_file.

    The files are found with a bounded number of directory reads (listMissingResults); only the
    indices without a completion record get one, marked 'adopted' with the file it rests on.
    """
    records = CompletionRecords(state_dirs(exp).done)
    done = records.completed()
    absent = set(listMissingResults(exp, runs, result_file=result_file))
    present = [i for i in listIndices(exp, runs) if i not in absent]
    adopted: list[int] = []
    for i in present:
        params, run = exp.getPermutation(i), exp.getRun(i)
        if record_key(params, run) in done:
            continue
        if not dry_run:
            path = exp.buildSaveContext(i).resolve(result_file)
            records.mark_complete(params, run, {"index": i, "adopted": path})
        adopted.append(i)
    return adopted, len(present) - len(adopted)
