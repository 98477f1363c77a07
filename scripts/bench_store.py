"""Results at scale, side by side: pyexp's store vs one .npy per index (vs PyExpUtils 8.1.2's SQLite
store, when it is installed in this Python: pip install PyExpUtils-andnp==8.1.2).

    python scripts/bench_store.py [--runs-total 10000] [--steps 1000] [--folder DIR]

Writes RUNS runs of STEPS-step float64 curves each way (100 permutations of two parameters,
RUNS/100 runs each), then reports files on disk, write time per run, the time to load
everything into a pandas DataFrame (one row per permutation, run, step) and to load one
permutation. pyexp's store is written as pyexp-run writes it: one shard per task of 100 indices,
each index's record appended and fsynced before its completion record.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pyexp.analysis.frame import loadFrame
from pyexp.config import load_config
from pyexp.experiment import loadExperiment
from pyexp.state.layout import state_dirs
from pyexp.state.records import CompletionRecords, record_key
from pyexp.state.store import Record, ShardWriter, compact, fold

PER_TASK = 100


def project(root: Path, runs_total: int) -> tuple:
    """A project of 100 permutations x runs_total/100 runs; (exp, runs)."""
    (root / "experiments").mkdir(parents=True)
    config = {"state_path": "state", "save_path": "results/{name}/{params}/{run}"}
    (root / "config.json").write_text(json.dumps(config))
    meta = {"alpha": [2.0**-i for i in range(10)], "lambda": [i / 10 for i in range(10)]}
    path = root / "experiments" / "bench.json"
    path.write_text(json.dumps({"name": "bench", "metaParameters": meta}))
    exp = loadExperiment(str(path), config=load_config(str(root / "config.json")))
    return exp, runs_total // exp.numPermutations()


def curve(index: int, steps: int) -> np.ndarray:
    return np.random.default_rng(index).normal(size=steps)


def write_store(exp, total: int, steps: int) -> float:
    dirs = state_dirs(exp)
    records = CompletionRecords(dirs.done)
    start = time.perf_counter()
    for task in range(0, total, PER_TASK):
        writer = ShardWriter(dirs.store)
        for index in range(task, min(total, task + PER_TASK)):
            params, run, data = exp.getPermutation(index), exp.getRun(index), curve(index, steps)
            staged = Record({"name": "returns", "dtype": "<f8", "shape": [steps]}, data.data)
            meta = {"key": record_key(params, run), "params": params, "run": run, "time": 0}
            writer.append(fold([staged], meta, "bench"))
            records.mark_complete(params, run)
        writer.seal()
    return time.perf_counter() - start


def write_npy(exp, total: int, steps: int) -> float:
    start = time.perf_counter()
    for index in range(total):
        folder = exp.interpolateSavePath(index)
        os.makedirs(folder, exist_ok=True)
        np.save(os.path.join(folder, "returns.npy"), curve(index, steps))
    return time.perf_counter() - start


def load_npy(exp, runs: int, only: dict | None = None) -> pd.DataFrame:
    """The same frame as loadFrame, from one .npy per index."""
    n, frames = exp.numPermutations(), []
    for p in range(n):
        params = exp.getPermutation(p)
        if only and any(params[k] != v for k, v in only.items()):
            continue
        curves = [np.load(os.path.join(exp.interpolateSavePath(p + r * n), "returns.npy"))
                  for r in range(runs)]  # fmt: skip
        steps = len(curves[0])
        frames.append(pd.DataFrame({**{k: v for k, v in params.items()},
                                    "run": np.repeat(np.arange(runs), steps),
                                    "step": np.tile(np.arange(steps), runs),
                                    "returns": np.concatenate(curves)}))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def files_under(folder: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(folder))


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def bench_pyexputils(root: Path, meta: dict, total: int, steps: int) -> tuple | None:
    """PyExpUtils 8.1.2's SQLite store, as its jobs use it (a Collector per run, saveCollector
    into one results.db under a FileLock); None if it is not importable here."""
    try:
        from PyExpUtils.collection.Collector import Collector
        from PyExpUtils.models.ExperimentDescription import ExperimentDescription
        from PyExpUtils.results.sqlite import loadAllResults, saveCollector
    except ImportError:
        return None
    folder = root / "pyexputils"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"save_path": "results/{name}"}))
    os.chdir(folder)  # PyExpUtils reads ./config.json
    exp = ExperimentDescription({"metaParameters": meta}, path="experiments/bench/bench.json")
    start = time.perf_counter()
    for index in range(total):
        collector = Collector()
        collector.setIdx(index)
        for value in curve(index, steps):
            collector.collect("returns", float(value))
            collector.next_frame()
        collector.reset()
        saveCollector(exp, collector, keys=["returns"])
    write = time.perf_counter() - start
    t_all, frame = timed(loadAllResults, exp, metrics=["returns"])
    assert len(frame) == total * steps, len(frame)
    first = exp.getPermutation(0)["metaParameters"]
    t_filter, _ = timed(
        lambda: frame[(frame.alpha == first["alpha"]) & (frame["lambda"] == first["lambda"])]
    )
    files = files_under(folder / "results")
    return (
        "PyExpUtils 8.1.2 SQLite (one setting: filtered after loading all)",
        files,
        write,
        t_all,
        t_all + t_filter,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs-total", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--folder", help="where to write (default: a temporary folder)")
    args = p.parse_args()
    root = Path(args.folder or tempfile.mkdtemp(prefix="pyexp-bench-store-"))
    exp, runs = project(root, args.runs_total)
    total = exp.numPermutations() * runs
    one = exp.getPermutation(0)
    rows = []

    write = write_store(exp, total, args.steps)
    t_all, frame = timed(loadFrame, exp, "returns")
    t_one, single = timed(loadFrame, exp, "returns", where=one)
    assert len(frame) == total * args.steps and len(single) == runs * args.steps
    CompletionRecords(state_dirs(exp).done).completed()  # folded, as pyexp-submit folds them
    compact(state_dirs(exp).store)  # merged, as pyexp-submit merges them
    store_files = files_under(Path(state_dirs(exp).store))
    done_files = files_under(Path(state_dirs(exp).done))
    rows.append(("pyexp store", f"{store_files} (+{done_files} records)", write, t_all, t_one))

    write = write_npy(exp, total, args.steps)
    t_all, frame_npy = timed(load_npy, exp, runs)
    t_one, _ = timed(load_npy, exp, runs, only=one)
    assert len(frame_npy) == len(frame)
    rows.append(("one .npy per index", files_under(root / "results"), write, t_all, t_one))

    sqlite = bench_pyexputils(root, exp.description["metaParameters"], total, args.steps)
    if sqlite is None:
        print("PyExpUtils 8.1.2: not measured (not installed in this Python)")
    else:
        rows.append(sqlite)
    print(f"{total} runs of {args.steps} steps ({runs} runs x 100 permutations) in {root}")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, pandas {pd.__version__}")
    print("| way | files on disk | write per run | load all into a DataFrame | load one setting |")
    print("|---|---:|---:|---:|---:|")
    for name, files, write, t_all, t_one in rows:
        per_run = write / total * 1e3
        print(f"| {name} | {files} | {per_run:.2f} ms | {t_all:.2f} s | {t_one:.3f} s |")


if __name__ == "__main__":
    main()
