#!/usr/bin/env python3
"""pyexp's own files per index at rest after a sweep, in static and farm mode (issue 16).

    python scripts/bench_files.py [--indices 10000] [--per-task 50] [--workers 16]
    python scripts/bench_files.py --logs 100000

Runs a sweep of `true` commands on this machine (`pyexp-submit --local`) once with static
bundles (--indices-per-task) and once in farm mode (--workers), then counts the files under
state_path and log_path (pyexp's own: state and logs; the results store is not counted), right
after the sweep, after a `pyexp-status` at once, and after one more once the tombstones have
outlived RETAIN_LEASES leases plus CLOCK_SKEW (at rest: no further pyexp-submit). Prints one
row per mode and moment, with the files per index and by folder; exits 1 if a mode at rest is
over 0.05 files per index.

--logs N instead times `pyexp-logs EXP I` at N indices (task logs of 100 attempts each, written
as runners write them), page cache dropped first (as root), before the task logs are folded and
after they were folded by five submits (archives merged).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter

from pyexp.state.leases import CLOCK_SKEW, RETAIN_LEASES

TARGET = 0.05


def project(root: str, indices: int) -> str:
    """A project whose sweep has `indices` permutations (one run each); the experiment's path."""
    os.makedirs(os.path.join(root, "experiments"))
    config = {"state_path": "state", "log_path": "logs", "command": "true {index}"}
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump(config, f)
    path = os.path.join(root, "experiments", "sweep.json")
    with open(path, "w") as f:
        json.dump({"metaParameters": {"i": list(range(indices))}}, f)
    return path


def count(root: str) -> Counter:
    """Files under state/ and logs/ by their folder (the experiment's part of the path dropped);
    the results store not counted."""
    found: Counter = Counter()
    for top in ("state", "logs"):
        for folder, _, files in os.walk(os.path.join(root, top)):
            rel = os.path.relpath(folder, root).split(os.sep)
            kind = "/".join([rel[0], *rel[3:4]]) if len(rel) > 3 else rel[0]
            if not kind.startswith("state/store"):
                found[kind] += len(files)
    return found


LEASE = 2  # seconds: tombstones outlive RETAIN_LEASES leases plus the clock skew allowed


def submit(path: str, *args: str) -> float:
    """Run pyexp-submit --local on path; seconds taken."""
    start = time.monotonic()
    argv = [sys.executable, "-m", "pyexp.cli.submit", path, "--runs", "1", "--local", "--yes"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PYEXP_"))}
    env["PYEXP_LEASE_SECONDS"] = str(LEASE)
    done = subprocess.run([*argv, *args], cwd=os.path.dirname(path), env=env, capture_output=True)
    if done.returncode != 0:
        sys.exit(f"pyexp-submit failed: {done.stderr.decode()[-2000:]}")
    return time.monotonic() - start


def status(path: str) -> None:
    """Run pyexp-status on path (it folds what the finished sweep left)."""
    argv = [sys.executable, "-m", "pyexp.cli.status", path, "--no-slurm"]
    subprocess.run(argv, cwd=os.path.dirname(path), capture_output=True, check=False)


def logs_timing(indices: int, attempts: int = 100) -> None:
    """Print how long pyexp-logs takes at indices, before and after the task logs are folded."""
    from pyexp.config import load_config
    from pyexp.experiment import loadExperiment
    from pyexp.state.layout import log_dir
    from pyexp.state.records import record_key
    from pyexp.state.task_logs import TaskLog, fold

    with tempfile.TemporaryDirectory(prefix="pyexp-logs-") as root:
        path = project(root, indices)
        exp = loadExperiment(path, config=load_config(os.path.join(root, "config.json")))
        folder = log_dir(exp)
        for task in range(0, indices, attempts):
            log = TaskLog(folder, f"{1000 + task // attempts}_0")
            for i in range(task, min(task + attempts, indices)):
                key = record_key(exp.getPermutation(i), exp.getRun(i))
                fd, name, offset = log.open_slot(0)
                os.write(
                    fd, f"=== t pyexp-run index={i} run=0 key={key} \n{'out ' * 20}\n".encode()
                )
                log.note(key, i, name, offset)
            log.close()
        for moment in ("task logs", "folded"):
            if moment == "folded":
                names = sorted(os.listdir(os.path.join(folder, "tasks")))
                idxs = [n for n in names if n.endswith(".idx")]
                for part in range(5):  # five submits, each folding a fifth: archives merged
                    fold(folder, {n.split("_")[0] for n in idxs[part::5]}, [])
            with contextlib.suppress(OSError), open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            start = time.monotonic()
            argv = [sys.executable, "-m", "pyexp.cli.logs", path, str(indices // 2)]
            shown = subprocess.run(argv, cwd=root, capture_output=True, text=True, check=True)
            took = time.monotonic() - start
            files = len(os.listdir(os.path.join(folder, "tasks")))
            assert f"index={indices // 2} " in shown.stdout, shown.stdout
            print(f"pyexp-logs at {indices} indices, {moment} ({files} files): {took:.2f} s")


def row(mode: str, moment: str, indices: int, files: Counter) -> float:
    """Print one row; files per index."""
    total = sum(files.values())
    parts = ", ".join(f"{k} {v}" for k, v in files.most_common() if v)
    print(f"{mode:7} {moment:22} {total:7} files {total / indices:8.4f} per index  ({parts})")
    return total / indices


def main() -> int:
    """Run both modes; exit 1 if one is over TARGET at rest."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--indices", type=int, default=10_000)
    p.add_argument("--per-task", type=int, default=50, help="static mode's --indices-per-task")
    p.add_argument("--workers", type=int, default=16, help="farm mode's --workers")
    p.add_argument("--logs", type=int, metavar="N", help="time pyexp-logs at N indices instead")
    args = p.parse_args()
    if args.logs:
        logs_timing(args.logs)
        return 0
    worst = 0.0
    modes = {"static": ["--indices-per-task", str(args.per_task)]}
    modes["farm"] = ["--workers", str(args.workers)]
    for mode, flags in modes.items():
        with tempfile.TemporaryDirectory(prefix=f"pyexp-files-{mode}-") as root:
            path = project(root, args.indices)
            took = submit(path, *flags)
            row(mode, f"after the sweep ({took:.0f}s)", args.indices, count(root))
            status(path)
            row(mode, "after pyexp-status", args.indices, count(root))
            time.sleep(RETAIN_LEASES * LEASE + CLOCK_SKEW)  # the tombstones outlive the caches
            status(path)
            worst = max(worst, row(mode, "... once tombstones due", args.indices, count(root)))
    print(f"target: at most {TARGET} files per index at rest")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
