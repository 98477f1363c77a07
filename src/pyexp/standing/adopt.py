"""Adopting results that exist on disk from before pyexp: completion records, so no rerun."""

from __future__ import annotations

import time

from pyexp.experiment import ExperimentDescription
from pyexp.standing.missing import listIndices, listMissingResults
from pyexp.state.layout import state_dirs
from pyexp.state.records import CompletionRecords, record_key
from pyexp.state.store import Record, ShardWriter, fold, latest


def adopt(
    exp: ExperimentDescription,
    runs: int,
    result_file: str,
    dry_run: bool = False,
    metric: str | None = None,
) -> tuple[list[int], int]:
    """(adopted, already done): record as complete each index whose save path holds result_file.

    The files are found with a bounded number of directory reads (listMissingResults); only the
    indices without a completion record get one, marked 'adopted' with the file it rests on.
    With metric, each file's array is also put into the results store under that name (before
    its completion record), where the store does not hold it yet.
    """
    dirs = state_dirs(exp)
    records = CompletionRecords(dirs.done)
    done = records.completed()
    stored = set(latest(dirs.store, done)) if metric else set()
    writer = ShardWriter(dirs.store)
    absent = set(listMissingResults(exp, runs, result_file=result_file))
    present = [i for i in listIndices(exp, runs) if i not in absent]
    adopted: list[int] = []
    try:
        for i in present:
            params, run = exp.getPermutation(i), exp.getRun(i)
            key = record_key(params, run)
            if key in done and (metric is None or key in stored):
                continue
            if not dry_run:
                path = exp.buildSaveContext(i).resolve(result_file)
                if metric is not None:
                    writer.append(_record(path, metric, key, params, run))
                if key not in done:
                    records.mark_complete(params, run, {"index": i, "adopted": path})
            adopted.append(i)
    finally:
        writer.seal()
    return adopted, len(present) - len(adopted)


def _record(path: str, metric: str, key: str, params: dict, run: int) -> bytes:
    """The store record of one adopted result file (a .npy, .npz of one array, or .csv)."""
    import numpy as np  # lazy: adopting a file reads it; pyexp-adopt --help stays fast

    from pyexp.analysis.results import _readBuiltin  # lazy: the analysis side imports numpy

    data = _readBuiltin(path)
    array = np.asarray(next(iter(data.values())) if isinstance(data, dict) else data)
    staged = Record({"name": metric, "dtype": array.dtype.str, "shape": list(array.shape)},
                    memoryview(array.tobytes()))  # fmt: skip
    return fold([staged], {"key": key, "params": params, "run": run, "time": time.time()}, path)
