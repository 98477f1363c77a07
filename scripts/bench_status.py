"""Benchmark pyexp-status on a sweep of 10^5 indices: half done, some failed, a ledger of arrays;
then on a sweep of 10^12 permutations with 20,000 indices done (half folded into a segment, placed
through the ledger; half loose) and 100 given up.

Prints wall time of the whole command (a fresh process, as cron or a person runs it) and, when
strace is present, its filesystem metadata syscalls. Target: under 2 s on local disk, both.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from syscalls import read_strace_summary

from pyexp.config import load_config
from pyexp.experiment import ExperimentDescription, loadExperiment
from pyexp.standing.missing import permutation_hashes
from pyexp.state.attempts import FAILED, Attempts
from pyexp.state.layout import state_dirs
from pyexp.state.ledger import Ledger, LedgerEntry, new_entry_id
from pyexp.state.records import CompletionRecords, record_key

HUGE = {"agent": "huge", "metaParameters": {f"k{j:02d}": list(range(10)) for j in range(12)}}
SWEEP = {
    "agent": "bench",
    "metaParameters": {
        "alpha": [2.0**-i for i in range(12)],
        "lambda": [0.0, 0.5, 0.9, 0.95, 0.99, 1.0],
        "epsilon": [0.0, 0.01, 0.05, 0.1],
        "optimizer": {"beta1": [0.9, 0.99], "beta2": [0.999, 0.9999]},
        "hidden": [16, 32, 64, 128],
    },
}


def _write(root: str, sweep: dict) -> tuple[str, ExperimentDescription]:
    os.makedirs(os.path.join(root, "experiments"), exist_ok=True)
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump({"state_path": "state"}, f)
    path = os.path.join(root, "experiments", f"{sweep['agent']}.json")
    with open(path, "w") as f:
        json.dump(sweep, f)
    return path, loadExperiment(path, config=load_config(os.path.join(root, "config.json")))


def populate_huge(root: str, done: int = 20_000) -> str:
    """A 10^12-permutation sweep: done indices spread over it (the first half folded, found via
    the ledger entry that ran them; the second half loose), 100 given up."""
    path, exp = _write(root, HUGE)
    records = CompletionRecords(state_dirs(exp).done)
    spread = [i * 49_999_999 for i in range(done)]
    for i in spread[: done // 2]:
        records.mark_complete(exp.getPermutation(i), 0, {"duration": 1.0 + i % 7})
    records.completed()  # a writer folds them: only their keys remain
    failed = [i + 1 for i in spread[:100]]
    Ledger(state_dirs(exp).ledger).write(_entry(exp, path, 1, [spread[: done // 2], failed]))
    for i in spread[done // 2 :]:
        records.mark_complete(exp.getPermutation(i), 0, {"duration": 2.0})
    attempts = Attempts(state_dirs(exp).attempts)
    for i in failed:
        for job in ("1_0", "2_0", "3_0"):
            attempts.record(record_key(exp.getPermutation(i), 0), FAILED, {}, job)
    return path


def populate(root: str, indices: int) -> tuple[str, int]:
    """Write config, experiment, half the completion records, 100 given up and a ledger."""
    path, exp = _write(root, SWEEP)
    runs = -(-indices // exp.numPermutations())
    dirs = state_dirs(exp)
    os.makedirs(dirs.done)
    hashes = permutation_hashes(exp)
    n = len(hashes)
    for i in range(0, n * runs, 2):
        open(os.path.join(dirs.done, f"{hashes[i % n]}-{i // n}"), "w").close()
    attempts = Attempts(dirs.attempts)
    for i in range(1, 200, 2):  # 100 indices that failed three times: given up
        for job in ("1_0", "2_0", "3_0"):
            key = f"{hashes[i % n]}-{i // n}"
            attempts.record(key, FAILED, {"exit_code": 1, "log": "x.log"}, job)
    ledger = Ledger(dirs.ledger)
    odd = list(range(1, n * runs, 2))
    for start in range(0, len(odd), 10_000):
        chunk = odd[start : start + 10_000]
        tasks = [chunk[j : j + 10] for j in range(0, len(chunk), 10)]
        ledger.write(_entry(exp, path, runs, tasks))
    return path, runs


def _entry(exp: ExperimentDescription, path: str, runs: int, tasks: list) -> LedgerEntry:
    return LedgerEntry(new_entry_id(), path, exp.fingerprint(), exp.description, runs, tasks)


def timed_status(root: str, path: str, runs: int) -> float:
    cmd = [sys.executable, "-m", "pyexp", "status", path, "--runs", str(runs), "--no-slurm"]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - start
    print(out.stdout.strip())
    return elapsed


def strace_counts(root: str, path: str, runs: int) -> str:
    if not shutil.which("strace"):
        return "strace not found"
    summary = os.path.join(root, "strace.txt")
    cmd = ["strace", "-c", "-f", "-o", summary, "-e", "trace=%file,getdents64"]
    cmd += [sys.executable, "-m", "pyexp", "status", path, "--runs", str(runs), "--no-slurm"]
    subprocess.run(cmd, cwd=root, capture_output=True, check=True)
    counts = read_strace_summary(summary)
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def main() -> None:
    indices = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        path, runs = populate(root, indices)
        print(f"populated {indices} indices in {time.perf_counter() - start:.1f} s")
        first = timed_status(root, path, runs)
        second = timed_status(root, path, runs)
        print(f"pyexp-status, {runs * 4608} indices: first {first:.2f} s, then {second:.2f} s")
        print(f"metadata syscalls: {strace_counts(root, path, runs)}")
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        path = populate_huge(root)
        print(f"populated the 10^12 sweep in {time.perf_counter() - start:.1f} s")
        first = timed_status(root, path, 1)
        second = timed_status(root, path, 1)
        print(f"pyexp-status, 10^12 indices: first {first:.2f} s, then {second:.2f} s")


if __name__ == "__main__":
    main()
