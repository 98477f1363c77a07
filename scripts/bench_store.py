"""Results at scale, side by side: pyexp's store vs one .npy per index vs PyExpUtils 8.1.2's SQLite
store (when it is installed in this Python: pip install PyExpUtils-andnp==8.1.2).

    python scripts/bench_store.py [--runs-total 10000] [--steps 1000] [--folder DIR] [--no-sshfs]
                                  [--sshfs-delay SECONDS]

Writes RUNS runs of STEPS-step float64 curves each way (100 permutations of two parameters,
RUNS/100 runs each), checks that the .npy way builds the same DataFrame as loadFrame, then
reports per way: files on disk, write time per run, and the time to load everything into a
pandas DataFrame (one row per permutation, run, step) and to load one permutation, each load in
a fresh Python process:
- local disk, warm: the files in the page cache;
- local disk, cold: each file's cached pages dropped first (posix_fadvise DONTNEED);
- sshfs, cold: a fresh sshfs mount of the folder (tests/nfs_share.py: SFTP over a socket pair to
  a local sftp-server, in its own mount namespace; needs root, FUSE, sshfs), so every open,
  stat and directory read is a round trip, as on NFS or Lustre with cold caches (--sshfs-delay:
  each request held that long, a slower server).
and the metadata calls of each load (strace -f -y -e trace=%file,getdents64: the calls that name
a path under the benchmark folder; needs strace). pyexp's store is written as pyexp-run writes
it: one shard per task of 100 indices, each index's record appended and fsynced before its
completion record, then merged and folded as pyexp-submit does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pyexp.analysis.frame import loadFrame
from pyexp.config import load_config
from pyexp.experiment import loadExperiment
from pyexp.state.layout import state_dirs
from pyexp.state.records import CompletionRecords, record_key
from pyexp.state.store import Record, ShardWriter, compact, fold

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the sshfs harness
import nfs_share  # noqa: E402
from syscalls import calls_naming  # noqa: E402

PER_TASK = 100
WAYS = ("pyexp store", "one .npy per index", "PyExpUtils 8.1.2 SQLite")


def project(root: Path, runs_total: int) -> tuple:
    """A project of 100 permutations x runs_total/100 runs under root; (exp, runs)."""
    (root / "experiments").mkdir(parents=True, exist_ok=True)
    config = {"state_path": "state", "save_path": "results/{name}/{params}/{run}"}
    (root / "config.json").write_text(json.dumps(config))
    meta = {"alpha": [2.0**-i for i in range(10)], "lambda": [i / 10 for i in range(10)]}
    path = root / "experiments" / "bench.json"
    path.write_text(json.dumps({"name": "bench", "metaParameters": meta}))
    return experiment(root), runs_total // 100


def experiment(root: Path):
    """The benchmark's experiment under root."""
    return loadExperiment(str(root / "experiments" / "bench.json"),
                          config=load_config(str(root / "config.json")))  # fmt: skip


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


def load_npy(exp, runs: int, only: dict | None = None):
    """The same frame as loadFrame (columns, dtypes, rows; rows in permutation order), from one
    .npy per index."""
    import pandas as pd

    n, frames = exp.numPermutations(), []
    for p in range(n):
        params = exp.getPermutation(p)
        if only and any(params[k] != v for k, v in only.items()):
            continue
        curves = [np.load(os.path.join(exp.interpolateSavePath(p + r * n), "returns.npy"))
                  for r in range(runs)]  # fmt: skip
        steps = len(curves[0])
        frames.append(pd.DataFrame({**{k: v for k, v in params.items()},
                                    "run": np.repeat(np.arange(runs, dtype=np.int32), steps),
                                    "step": np.tile(np.arange(steps, dtype=np.int32), runs),
                                    "returns": np.concatenate(curves)}))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def same_frame(a, b) -> bool:
    """Whether a and b hold the same rows (in any order) and columns, with the same dtypes."""
    if list(a.columns) != list(b.columns) or len(a) != len(b) or list(a.dtypes) != list(b.dtypes):
        return False
    keys = ["alpha", "lambda", "run", "step"]
    a, b = (f.iloc[np.lexsort([f[k].to_numpy() for k in reversed(keys)])] for f in (a, b))
    return all(np.array_equal(a[c].to_numpy(), b[c].to_numpy()) for c in a.columns)


def write_pyexputils(folder: Path, meta: dict, total: int, steps: int) -> float | None:
    """PyExpUtils 8.1.2's SQLite store, as its jobs use it (a Collector per run, saveCollector
    into one results.db under a FileLock); None if it is not importable here."""
    try:
        from PyExpUtils.collection.Collector import Collector
        from PyExpUtils.results.sqlite import saveCollector
    except ImportError:
        return None
    exp = pyexputils_experiment(folder, meta)
    start = time.perf_counter()
    for index in range(total):
        collector = Collector()
        collector.setIdx(index)
        for value in curve(index, steps):
            collector.collect("returns", float(value))
            collector.next_frame()
        collector.reset()
        saveCollector(exp, collector, keys=["returns"])
    return time.perf_counter() - start


def pyexputils_experiment(folder: Path, meta: dict | None = None):
    """PyExpUtils' ExperimentDescription of the benchmark, in folder (it reads ./config.json)."""
    from PyExpUtils.models.ExperimentDescription import ExperimentDescription

    folder.mkdir(exist_ok=True)
    if meta is not None:
        (folder / "config.json").write_text(json.dumps({"save_path": "results/{name}"}))
        (folder / "meta.json").write_text(json.dumps(meta))
    os.chdir(folder)
    meta = json.loads((folder / "meta.json").read_text())
    return ExperimentDescription({"metaParameters": meta}, path="experiments/bench/bench.json")


# ------------------------------------------------------------------ one load, in its own process


def load(way: str, root: Path, runs: int, one: bool) -> int:
    """Load everything (or one setting) of way from root; the frame's rows."""
    if way == "PyExpUtils 8.1.2 SQLite":
        from PyExpUtils.results.sqlite import loadAllResults

        exp = pyexputils_experiment(root / "pyexputils")
        frame = loadAllResults(exp, metrics=["returns"])
        if one:  # it has no filtered load: filtered after loading all
            first = exp.getPermutation(0)["metaParameters"]
            frame = frame[(frame.alpha == first["alpha"]) & (frame["lambda"] == first["lambda"])]
        return len(frame)
    exp = experiment(root)
    only = exp.getPermutation(0) if one else None
    if way == "pyexp store":
        return len(loadFrame(exp, "returns", where=only))
    return len(load_npy(exp, runs, only))


def child(argv: list[str]) -> None:
    """Be the loading process: python bench_store.py --child WAY ROOT RUNS ONE; prints JSON."""
    way, root, runs, one = argv[0], Path(argv[1]), int(argv[2]), argv[3] == "1"
    import pandas  # noqa: F401  imported before the clock starts, as in a notebook

    start = time.perf_counter()
    rows = load(way, root, runs, one)
    print(json.dumps({"seconds": time.perf_counter() - start, "rows": rows}))


def child_argv(way: str, root: Path, runs: int, one: bool) -> list[str]:
    return [sys.executable, __file__, "--child", way, str(root), str(runs), "1" if one else "0"]


def run_load(way: str, root: Path, runs: int, one: bool) -> dict:
    out = subprocess.run(child_argv(way, root, runs, one), capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{way} load failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.splitlines()[-1])


def drop_cached(root: Path) -> None:
    """Drop the cached pages of every file under root (posix_fadvise DONTNEED): reads hit disk."""
    for folder, _, names in os.walk(root):
        for name in names:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def metadata_calls(way: str, root: Path, runs: int, one: bool, scratch: Path) -> int | None:
    """The %file and getdents64 calls of one load that name a path under root; None: no strace."""
    if shutil.which("strace") is None:
        return None
    trace = scratch / "strace.txt"
    prefix = ["strace", "-f", "-y", "-e", "trace=%file,getdents64", "-o", str(trace)]
    subprocess.run([*prefix, *child_argv(way, root, runs, one)], capture_output=True, check=True)
    return sum(calls_naming(str(trace), (str(root) + "/",)).values())


def sshfs_load(share, way: str, runs: int, one: bool, delay: float) -> dict | None:
    """One load on a fresh sshfs mount of the share (cold caches); None if it cannot mount."""
    argv = child_argv(way, share.mount, runs, one)
    node = share.node("bench", argv, dict(os.environ), delay=delay)
    code, out, err = node.wait(timeout=1800)
    if code == nfs_share.NO_MOUNT:
        return None
    if code:
        raise RuntimeError(f"{way} load on sshfs failed: {err.strip().splitlines()[-1:]}")
    return json.loads(out.splitlines()[-1])


# ------------------------------------------------------------------ the benchmark


def files_under(folder: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(folder))


def write_all(root: Path, runs_total: int, steps: int) -> dict:
    """Writes every way under root and checks the frames; per way (files, write seconds)."""
    exp, runs = project(root, runs_total)
    total = exp.numPermutations() * runs
    written = {}
    seconds = write_store(exp, total, steps)
    CompletionRecords(state_dirs(exp).done).fold()  # folded, as tasks and pyexp-submit fold them
    compact(state_dirs(exp).store)  # merged, as pyexp-submit merges them
    store = files_under(Path(state_dirs(exp).store))
    written[WAYS[0]] = (f"{store} (+{files_under(Path(state_dirs(exp).done))} records)", seconds)
    seconds = write_npy(exp, total, steps)
    written[WAYS[1]] = (files_under(root / "results"), seconds)
    assert same_frame(load_npy(exp, runs), loadFrame(exp, "returns")), "frames differ"
    seconds = write_pyexputils(root / "pyexputils", exp.description["metaParameters"], total, steps)
    if seconds is not None:
        written[WAYS[2]] = (files_under(root / "pyexputils" / "results"), seconds)
    return written


def measure(way: str, root: Path, runs: int, share, scratch: Path, delay: float) -> dict:
    """Per condition, (load all, load one setting) seconds; and the metadata calls of each."""
    out: dict = {}
    for one in (False, True):
        run_load(way, root, runs, one)  # warms the page cache
        out.setdefault("local disk, warm", []).append(run_load(way, root, runs, one)["seconds"])
        drop_cached(root)
        out.setdefault("local disk, cold", []).append(run_load(way, root, runs, one)["seconds"])
        if share is not None:
            got = sshfs_load(share, way, runs, one, delay)
            out.setdefault("sshfs, cold (fresh mount)", []).append(got and got["seconds"])
        out.setdefault("metadata calls", []).append(metadata_calls(way, root, runs, one, scratch))
    return out


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs-total", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--folder", help="where to write (default: a temporary folder)")
    p.add_argument("--no-sshfs", action="store_true", help="skip the loads on sshfs")
    p.add_argument("--sshfs-delay", type=float, default=0.0, help="seconds each SFTP request waits")
    args = p.parse_args()
    scratch = Path(args.folder or tempfile.mkdtemp(prefix="pyexp-bench-store-"))
    scratch.mkdir(parents=True, exist_ok=True)
    why = "--no-sshfs" if args.no_sshfs else nfs_share.unavailable()
    share = None if why else nfs_share.Share(scratch, cache=60)
    root = share.server if share else scratch / "data"
    written = write_all(root, args.runs_total, args.steps)
    runs = args.runs_total // 100
    delay = args.sshfs_delay
    measured = {way: measure(way, root, runs, share, scratch, delay) for way in written}
    print(f"{args.runs_total} runs of {args.steps} steps ({runs} runs x 100 settings) in {root}")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}; load: {os.getloadavg()}")
    if why:
        print(f"sshfs: not measured ({why})")
    elif delay:
        print(f"sshfs: each SFTP request held {delay * 1e3:g} ms")
    print("| way | files on disk | write per run | metadata calls: all / one |")
    print("|---|---:|---:|---:|")
    for way, (files, seconds) in written.items():
        counts = measured[way].pop("metadata calls")
        calls = " / ".join(f"{c:,}" if c is not None else "-" for c in counts)
        print(f"| {way} | {files} | {seconds / args.runs_total * 1e3:.2f} ms | {calls} |")
    print("\n| way | where | load all into a DataFrame | load one setting |")
    print("|---|---|---:|---:|")
    for way, rows in measured.items():
        for where, (t_all, t_one) in rows.items():
            cells = [f"{t:.3f} s" if t is not None else "-" for t in (t_all, t_one)]
            print(f"| {way} | {where} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
