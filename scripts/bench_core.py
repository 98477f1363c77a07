#!/usr/bin/env python3
"""Benchmark the core: index math, save paths, listMissingResults and import time.

    python scripts/bench_core.py [--sizes 100000 1000000] [--keep]

The sweep is the one from issue 2: alpha 12 values, lambda 6, epsilon 4, optimizer.beta1 2,
optimizer.beta2 2, hidden 4 (4,608 permutations), with enough runs to reach each index count.
When PyExpUtils-andnp 3.2.3 is importable, its figures are printed beside ours as a ratio.
Everything is written under a temporary folder that is removed at the end (unless --keep).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

from syscalls import read_strace_summary

TARGET_GETPERM_RATIO = 10.0
TARGET_IMPORT_MS = 50.0
TARGET_MISSING_S = 1.0
TARGET_MISSING_SYSCALLS = 300

EXPERIMENT = {
    "name": "bench",
    "agent": "SARSA",
    "environment": "MountainCar",
    "metaParameters": {
        "alpha": [2.0**-i for i in range(12)],
        "lambda": [1.0, 0.99, 0.98, 0.96, 0.9, 0.8],
        "epsilon": [0.0, 0.01, 0.05, 0.1],
        "optimizer": {"name": "adam", "beta1": [0.9, 0.99], "beta2": [0.999, 0.9999]},
        "hidden": [[32], [64], [32, 32], [64, 64]],
    },
}
SAVE_PATH = "results/{name}/{params}/{run}"
METADATA_SYSCALLS = {
    "stat", "lstat", "fstat", "newfstatat", "statx", "fstatat64", "access", "faccessat",
    "faccessat2", "open", "openat", "openat2", "getdents", "getdents64", "readlink",
    "readlinkat", "unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat",
}  # fmt: skip
PYEXPUTILS = importlib.util.find_spec("PyExpUtils") is not None


def rate(fn, indices) -> float:
    """Calls per second of fn over indices."""
    start = time.perf_counter()
    for i in indices:
        fn(i)
    return len(indices) / (time.perf_counter() - start)


def spread(n: int, count: int) -> range:
    """About count indices spread evenly over 0..n-1."""
    return range(0, n, max(1, n // count))


def ratio(ours: float, theirs: float | None, higher_is_better: bool = True) -> str:
    if theirs is None:
        return ""
    r = ours / theirs if higher_is_better else theirs / ours
    return f"   PyExpUtils 3.2.3: {theirs:,.0f}/s   ours/theirs: {r:.1f}x"


def status(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def setup_project(root: str) -> str:
    """A project folder with config.json and two copies of the experiment; returns its path."""
    os.makedirs(os.path.join(root, "experiments", "bench"))
    os.makedirs(os.path.join(root, "experiments", "bench_strace"))
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump({"save_path": SAVE_PATH, "experiment_directory": "experiments"}, f)
    for folder in ("bench", "bench_strace"):
        with open(os.path.join(root, "experiments", folder, "exp.json"), "w") as f:
            json.dump(EXPERIMENT, f)
    return root


def write_half_complete(exp, runs: int) -> int:
    """Completion records for every even index, written directly as record files."""
    from pyexp.state.layout import state_dirs
    from pyexp.state.records import record_key

    folder = state_dirs(exp).done
    os.makedirs(folder, exist_ok=True)
    n = exp.numPermutations()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    written = 0
    for p in range(n):
        params = exp.getPermutation(p)
        for run in range(runs):
            if (run * n + p) % 2 == 0:
                key = record_key(params, run)
                fd = os.open(os.path.join(folder, key), flags, 0o644)
                os.write(fd, b'{"run": %d}' % run)
                os.close(fd)
                written += 1
    return written


STRACE_CHILD = """
import sys
from pyexp.config import load_config
from pyexp.experiment import loadExperiment
from pyexp.standing.missing import listMissingResults
exp = loadExperiment(sys.argv[1], config=load_config(sys.argv[2]))
exp.numPermutations()
if sys.argv[4] == "call":
    missing = listMissingResults(exp, runs=int(sys.argv[3]))
    assert len(missing) == (exp.numPermutations() * int(sys.argv[3])) // 2, len(missing)
"""


def strace_counts(args: list[str], cwd: str) -> dict[str, int]:
    """Syscall counts of a python child under strace -c -f."""
    out = os.path.join(cwd, "strace.txt")
    cmd = ["strace", "-c", "-f", "-o", out, sys.executable, "-c", STRACE_CHILD, *args]
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return read_strace_summary(out)


def metadata_delta(exp_path: str, config: str, runs: int, cwd: str) -> dict[str, int]:
    """Metadata syscalls of one listMissingResults call: (child with the call) - (child without)."""
    with_call = strace_counts([exp_path, config, str(runs), "call"], cwd)
    without = strace_counts([exp_path, config, str(runs), "nocall"], cwd)
    return {
        name: with_call.get(name, 0) - without.get(name, 0)
        for name in sorted(METADATA_SYSCALLS)
        if with_call.get(name, 0) - without.get(name, 0) > 0
    }


def fmt_syscalls(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"{total:,} ({parts or 'none'})"


def pyexputils_experiment(root: str):
    from PyExpUtils.models.ExperimentDescription import ExperimentDescription as Theirs

    return Theirs(json.loads(json.dumps(EXPERIMENT)), path="experiments/bench/exp.json")


def bench_size(target: int, root: str, theirs) -> dict[str, bool]:
    from pyexp.config import load_config
    from pyexp.experiment import loadExperiment
    from pyexp.standing.missing import listMissingResults

    config_path = os.path.join(root, "config.json")
    config = load_config(config_path)
    exp_path = os.path.join(root, "experiments", "bench", "exp.json")
    exp = loadExperiment(exp_path, config=config)
    n = exp.numPermutations()
    runs = math.ceil(target / n)
    total = n * runs
    print(f"\n== {target:,} indices: {n:,} permutations x {runs} runs = {total:,} indices ==")
    ok: dict[str, bool] = {}

    ours = rate(exp.getPermutation, range(total))
    their_rate = rate(theirs.getPermutation, spread(total, 20_000)) if theirs else None
    print(
        f"getPermutation:      {ours:,.0f}/s over all {total:,} indices" + ratio(ours, their_rate)
    )
    if their_rate:
        ok["getPermutation >= 10x PyExpUtils"] = ours >= TARGET_GETPERM_RATIO * their_rate

    sample = spread(total, 200_000)
    ours = rate(exp.interpolateSavePath, sample)
    their_rate = rate(theirs.interpolateSavePath, spread(total, 5_000)) if theirs else None
    print(
        f"interpolateSavePath: {ours:,.0f}/s over {len(sample):,} indices spread over the range"
        + ratio(ours, their_rate)
    )

    start = time.perf_counter()
    written = write_half_complete(exp, runs)
    elapsed = time.perf_counter() - start
    print(f"completion records:  {written:,} written as loose files in {elapsed:.1f} s")

    start = time.perf_counter()
    first = listMissingResults(exp, runs=runs)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    second = listMissingResults(exp, runs=runs)
    second_s = time.perf_counter() - start
    expected = list(range(1, total, 2))
    assert first == expected and second == expected, "listMissingResults gave wrong indices"
    print(
        f"listMissingResults:  first call {first_s:.3f} s "
        f"(folds {written:,} loose records into a segment)"
    )
    print(f"listMissingResults:  steady state {second_s:.3f} s ({len(second):,} missing, correct)")
    if theirs:
        print("                     PyExpUtils 3.2.3: no listMissingResults (removed in 3.2.3)")
    ok[f"listMissingResults {total:,} < {TARGET_MISSING_S:.0f} s"] = second_s < TARGET_MISSING_S

    if shutil.which("strace"):
        steady = metadata_delta(exp_path, config_path, runs, root)
        print(f"metadata syscalls:   steady state {fmt_syscalls(steady)}")
        ok[f"listMissingResults {total:,} syscalls <= {TARGET_MISSING_SYSCALLS}"] = (
            sum(steady.values()) <= TARGET_MISSING_SYSCALLS
        )
        # The folding first call, on a second copy of the experiment with fresh loose records.
        fold_path = os.path.join(root, "experiments", "bench_strace", "exp.json")
        write_half_complete(loadExperiment(fold_path, config=config), runs)
        fold = metadata_delta(fold_path, config_path, runs, root)
        print(f"metadata syscalls:   first (folding) call {fmt_syscalls(fold)}")
    else:
        print("metadata syscalls:   strace not found; skipped")
    return ok


IMPORT_CHILD = """
import sys, time
t = time.perf_counter()
{stmt}
dt = time.perf_counter() - t
print(dt, "numpy" in sys.modules)
"""


def import_time(stmt: str) -> tuple[float, bool]:
    """Best of 5 fresh interpreters: seconds for stmt, and whether numpy got imported."""
    best, numpy = math.inf, False
    for _ in range(5):
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_CHILD.format(stmt=stmt)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        best = min(best, float(out[0]))
        numpy = numpy or out[1] == "True"
    return best, numpy


def bench_import() -> dict[str, bool]:
    print("\n== import time (fresh interpreter, best of 5) ==")
    ours, _ = import_time("import pyexp")
    full, numpy = import_time("import pyexp; pyexp.loadExperiment; pyexp.listMissingResults")
    theirs = None
    if PYEXPUTILS:
        theirs, _ = import_time(
            "import PyExpUtils; from PyExpUtils.models.ExperimentDescription "
            "import ExperimentDescription"
        )
    print(f"import pyexp:                                          {ours * 1000:.1f} ms")
    line = f"import pyexp; pyexp.loadExperiment, listMissingResults: {full * 1000:.1f} ms"
    if theirs is not None:
        line += f"   PyExpUtils 3.2.3 (ExperimentDescription): {theirs * 1000:.1f} ms"
        line += f"   theirs/ours: {theirs / full:.1f}x"
    print(line)
    print(f"numpy in sys.modules after pyexp.loadExperiment: {numpy}")
    return {
        f"import pyexp (with loadExperiment) < {TARGET_IMPORT_MS:.0f} ms": full * 1000
        < TARGET_IMPORT_MS,
        "no numpy on the import path": not numpy,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--dir",
        default="/dev/shm" if os.access("/dev/shm", os.W_OK) else None,
        help="where to make the temporary project (default: /dev/shm if writable, else $TMPDIR)",
    )
    args = parser.parse_args()

    where = args.dir or tempfile.gettempdir()
    print(f"python {sys.version.split()[0]}, PyExpUtils-andnp 3.2.3 importable: {PYEXPUTILS}")
    print(f"temporary project under {where}")
    ok = bench_import()
    for size in args.sizes:
        root = setup_project(tempfile.mkdtemp(prefix="pyexp-bench-", dir=args.dir))
        cwd = os.getcwd()
        try:
            os.chdir(root)  # PyExpUtils reads ./config.json
            theirs = pyexputils_experiment(root) if PYEXPUTILS else None
            ok.update(bench_size(size, root, theirs))
        finally:
            os.chdir(cwd)
            if args.keep:
                print(f"kept {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)

    print("\n== targets ==")
    for what, passed in ok.items():
        print(f"{status(passed):6} {what}")
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
