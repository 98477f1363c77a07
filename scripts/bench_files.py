#!/usr/bin/env python3
"""pyexp's own files per index at rest after a sweep, in static and farm mode (issue 16).

    python scripts/bench_files.py [--indices 10000] [--per-task 1] [--workers 16]

Runs a sweep of `true` commands on this machine (`pyexp-submit --local`) once with static
bundles (--indices-per-task) and once in farm mode (--workers), then counts the files under
state_path and log_path (pyexp's own: state and logs; the results store is not counted), right
after the sweep, after one more `pyexp-submit` (the writer that folds at rest), and after one
more once the tombstones have outlived RETAIN_LEASES leases plus CLOCK_SKEW. Prints one
row per mode and moment, with the files per index and by folder; exits 1 if a mode at rest is
over 0.05 files per index.
"""

from __future__ import annotations

import argparse
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


def row(mode: str, moment: str, indices: int, files: Counter) -> float:
    """Print one row; files per index."""
    total = sum(files.values())
    parts = ", ".join(f"{k} {v}" for k, v in sorted(files.items()) if v)
    print(f"{mode:7} {moment:22} {total:7} files {total / indices:8.4f} per index  ({parts})")
    return total / indices


def main() -> int:
    """Run both modes; exit 1 if one is over TARGET at rest."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--indices", type=int, default=10_000)
    p.add_argument("--per-task", type=int, default=1, help="static mode's --indices-per-task")
    p.add_argument("--workers", type=int, default=16, help="farm mode's --workers")
    args = p.parse_args()
    worst = 0.0
    modes = {"static": ["--indices-per-task", str(args.per_task)]}
    modes["farm"] = ["--workers", str(args.workers)]
    for mode, flags in modes.items():
        with tempfile.TemporaryDirectory(prefix=f"pyexp-files-{mode}-") as root:
            path = project(root, args.indices)
            took = submit(path, *flags)
            row(mode, f"after the sweep ({took:.0f}s)", args.indices, count(root))
            submit(path)
            row(mode, "one submit later", args.indices, count(root))
            time.sleep(RETAIN_LEASES * LEASE + CLOCK_SKEW)  # the tombstones outlive the caches
            submit(path)
            worst = max(worst, row(mode, "at rest (tombstones due)", args.indices, count(root)))
    print(f"target: at most {TARGET} files per index at rest")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
