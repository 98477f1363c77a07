#!/usr/bin/env python3
"""Benchmark in-process workers (pyexp.claim) against a process per index, locally.

    python scripts/bench_claim.py [--indices 1000] [--work-ms 20] [--import-ms 300] [--workers 2]

Both modes run the same farm ledger entry with the same number of pyexp-run workers (no
Slurm): process-per-index runs `python work.py {index}` for every index, paying the user's
import (a sleep standing in for `import torch`) each time; in-process runs `python claim.py`
once per worker, which imports once and takes its indices with pyexp.claim(). Prints a table
of wall times and the ratio (target: at least 5x). Everything lives in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

TARGET_RATIO = 5.0

PER_INDEX = """\
import sys, time
time.sleep({import_s})  # the user's imports
time.sleep({work_s})  # index sys.argv[1]'s work
"""

IN_PROCESS = """\
import time
import pyexp
time.sleep({import_s})  # the user's imports, once per worker
for job in pyexp.claim():
    with job:
        time.sleep({work_s})
"""


def main() -> int:
    """Run both modes and print the table; 1 if the ratio misses the target."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--indices", type=int, default=1000)
    p.add_argument("--work-ms", type=float, default=20.0)
    p.add_argument("--import-ms", type=float, default=300.0)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    sizes = {"import_s": args.import_ms / 1000, "work_s": args.work_ms / 1000}
    rows = []
    with tempfile.TemporaryDirectory(prefix="pyexp-bench-claim-") as root:
        for name, template, script in (
            ("process per index", PER_INDEX, "work.py {index}"),
            ("in-process (pyexp.claim)", IN_PROCESS, "claim.py"),
        ):
            folder = os.path.join(root, name.split()[0])
            os.makedirs(folder)
            with open(os.path.join(folder, script.split()[0]), "w") as f:
                f.write(template.format(**sizes))
            command = f"{shlex.quote(sys.executable)} {script}"
            rows.append((name, run_mode(folder, command, args.indices, args.workers)))
    base = rows[0][1]
    print(
        f"{args.indices} indices of {args.work_ms:g} ms, {args.import_ms:g} ms import, "
        f"{args.workers} workers, no Slurm"
    )
    print(f"{'mode':<26} {'wall (s)':>9} {'ratio':>7}")
    for name, wall in rows:
        print(f"{name:<26} {wall:>9.1f} {base / wall:>6.1f}x")
    ratio = base / rows[1][1]
    print(f"in-process is {ratio:.1f}x faster (target: at least {TARGET_RATIO:g}x)")
    return 0 if ratio >= TARGET_RATIO else 1


def run_mode(folder: str, command: str, indices: int, workers: int) -> float:
    """Wall seconds for workers pyexp-run processes to finish a fresh pool of indices."""
    from pyexp.config import load_config
    from pyexp.experiment import loadExperiment
    from pyexp.state.layout import state_dirs
    from pyexp.state.ledger import FARM, Ledger, LedgerEntry, new_entry_id

    config = os.path.join(folder, "config.json")
    with open(config, "w") as f:
        json.dump({"state_path": "state", "log_path": "logs"}, f)
    path = os.path.join(folder, "exp.json")
    with open(path, "w") as f:
        json.dump({"metaParameters": {"x": list(range(indices))}}, f)
    exp = loadExperiment(path, config=load_config(config))
    entry = LedgerEntry(
        new_entry_id(),
        path,
        exp.fingerprint(),
        exp.description,
        1,
        [],
        command=command,
        mode=FARM,
        pool=f"0-{indices - 1}",
        workers=workers,
    )
    ledger = Ledger(state_dirs(exp).ledger)
    ledger.write(entry)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PYEXP_"))}
    env["PYEXP_CONFIG"] = config
    run = [sys.executable, "-m", "pyexp.cli.run", "--ledger", ledger.path(entry.id), "--task"]
    start = time.perf_counter()
    procs = [
        subprocess.Popen([*run, str(w)], cwd=folder, env=env, stderr=subprocess.PIPE, text=True)
        for w in range(workers)
    ]
    errors = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - start
    if any(p.returncode for p in procs):
        sys.exit(f"bench_claim: a worker failed:\n{''.join(errors)}")
    return wall


if __name__ == "__main__":
    sys.exit(main())
