#!/usr/bin/env python3
"""Benchmark farm mode against what users do today, on the local Slurm (issue 11).

    python scripts/bench_farm.py [--indices 500] [--slots 8] [--per-task 25] [--seed 1]
    python scripts/bench_farm.py --indices 2000     # the full size of issue 11 (~20 min here)

The same work, indices of log-normal durations (median 0.5 s, sigma 0.75, seeded) that sleep,
is completed one after the other by (a) one index per array task, (b) pyexp's static bundles
(--indices-per-task), (c) pyexp farm mode (--workers = slots), (d) submitit's map_array (one
array task per item, slurm_array_parallelism = slots; `pip install submitit`, the `bench`
extra). Each index stamps its end time in a file; the makespan runs from the first submission
to the last stamp. Prints a table of Slurm jobs created, makespan and its ratio to the ideal
(sum of durations / slots); exits 1 if farm mode is not within 1.3x of the ideal and ahead of
the others. Everything lives in a temporary folder; its jobs are cancelled on exit.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

TARGET = 1.3
SIGMA = 0.75
JOB = """\
root=$(dirname "$0")
sleep "$(sed -n "$(($1 + 1))p" "$root/durations.txt")"
date +%s.%N > "$root/ends/$1"
"""

_jobs: list[str] = []  # every Slurm job this run submitted, cancelled on exit


def durations(n: int, seed: int) -> list[float]:
    """n log-normal durations (median 0.5 s), rounded to ms."""
    rng = random.Random(seed)
    return [round(rng.lognormvariate(0.0, SIGMA) * 0.5, 3) for _ in range(n)]


def last_end(folder: str, n: int, timeout: float) -> float:
    """The latest end stamp in folder once all n indices stamped one."""
    deadline = time.monotonic() + timeout
    while len(os.listdir(folder)) < n:
        if time.monotonic() > deadline:
            sys.exit(f"bench_farm: {len(os.listdir(folder))} of {n} indices ended in {timeout} s")
        time.sleep(0.5)
    return max(float(open(os.path.join(folder, name)).read()) for name in os.listdir(folder))


def pyexp_run(root: str, times: list[float], *flags: str) -> tuple[int, float]:
    """Submit the sweep with pyexp-submit flags, cron-style until all is submitted: (tasks,
    first submission as epoch seconds)."""
    os.makedirs(os.path.join(root, "ends"))
    with open(os.path.join(root, "durations.txt"), "w") as f:
        f.write("".join(f"{d}\n" for d in times))
    with open(os.path.join(root, "job.sh"), "w") as f:
        f.write(JOB)
    experiment = os.path.join(root, "bench.json")
    with open(experiment, "w") as f:
        json.dump({"name": "bench", "metaParameters": {"i": list(range(len(times)))}}, f)
    config = os.path.join(root, "config.json")
    with open(config, "w") as f:
        json.dump({"command": f"sh {shlex.quote(os.path.join(root, 'job.sh'))} {{index}}"}, f)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")}
    env["PYEXP_CONFIG"] = config
    argv = [sys.executable, "-m", "pyexp.cli.submit", experiment, "--runs", "1", "--yes"]
    argv += ["--cluster", "local", *flags]
    started, tasks = time.time(), 0
    while True:
        out = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"bench_farm: pyexp-submit failed: {out.stderr.strip()}")
        if "nothing to submit" in out.stdout:
            return tasks, started
        tasks += _record_entries(root, tasks)
        if "wait for room" not in out.stdout:
            return tasks, started
        time.sleep(2)


def _record_entries(root: str, known: int) -> int:
    """Remember the job ids of root's ledger entries; array tasks added since known."""
    folder = next(os.path.join(d, "ledger") for d, names, _ in os.walk(root) if "ledger" in names)
    total = 0
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name)) as f:
            entry = json.load(f)
        if entry.get("job_id") and entry["job_id"] not in _jobs:
            _jobs.append(entry["job_id"])
        total += entry.get("workers") or len(entry.get("tasks") or [])
    return total - known


def _sleep_and_stamp(seconds: float, stamp: str) -> None:
    time.sleep(seconds)
    with open(stamp, "w") as f:
        f.write(f"{time.time()}\n")


def submitit_run(root: str, times: list[float], slots: int) -> tuple[int, float]:
    """map_array the sleeps with submitit: (array tasks, first submission)."""
    import submitit

    ends = os.path.join(root, "ends")
    os.makedirs(ends)
    executor = submitit.AutoExecutor(folder=os.path.join(root, "submitit"), cluster="slurm")
    executor.update_parameters(
        timeout_min=15, cpus_per_task=1, mem_gb=0.25, slurm_array_parallelism=slots
    )
    stamps = [os.path.join(ends, str(i)) for i in range(len(times))]
    # submitit does not split a map_array above MaxArraySize (sbatch refuses it): chunk it, as
    # its users must.
    step = _max_array_size() - 1
    started, jobs = time.time(), []
    for first in range(0, len(times), step):
        part = slice(first, first + step)
        jobs += executor.map_array(_sleep_and_stamp, times[part], stamps[part])
    _jobs.extend(sorted({j.job_id.split("_")[0] for j in jobs}))
    return len(jobs), started


def _max_array_size() -> int:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    found = [line.split("=")[1] for line in out.splitlines() if line.startswith("MaxArraySize")]
    return int(found[0]) if found else 1001


def _cancel() -> None:
    if _jobs:
        subprocess.run(["scancel", *_jobs], capture_output=True)


def main() -> int:
    """Run the four ways one after the other and print the table; 1 if farm misses the target."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--indices", type=int, default=500)
    p.add_argument("--slots", type=int, default=8, help="CPUs of the local Slurm")
    p.add_argument("--per-task", type=int, default=25, help="indices per static bundle")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ways", default="abcd", help="which ways to run, e.g. 'cd' (default all)")
    args = p.parse_args()
    atexit.register(_cancel)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    times = durations(args.indices, args.seed)
    ideal = sum(times) / args.slots
    ways: list[tuple[str, Callable[[str], tuple[int, float]]]] = [
        ("(a) one index per task", lambda r: pyexp_run(r, times, "--indices-per-task", "1")),
        (
            f"(b) static bundles of {args.per_task}",
            lambda r: pyexp_run(r, times, "--indices-per-task", str(args.per_task)),
        ),
        (
            f"(c) farm, {args.slots} workers",
            lambda r: pyexp_run(r, times, "--workers", str(args.slots)),
        ),
        ("(d) submitit map_array", lambda r: submitit_run(r, times, args.slots)),
    ]
    ways = [(name, way) for name, way in ways if name[1] in args.ways]
    print(
        f"{args.indices} indices, log-normal durations (median 0.5 s, sigma {SIGMA}, seed "
        f"{args.seed}), sum {sum(times):.0f} s on {args.slots} slots: ideal {ideal:.1f} s",
        flush=True,
    )
    print(f"{'way':<28} {'Slurm jobs':>10} {'makespan':>10} {'x ideal':>8}", flush=True)
    spans: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="pyexp-bench-farm-") as tmp:
        for name, way in ways:
            root = os.path.join(tmp, name[1])
            os.makedirs(root)
            tasks, started = way(root)
            span = last_end(os.path.join(root, "ends"), len(times), timeout=60 * 60) - started
            spans[name] = span
            print(f"{name:<28} {tasks:>10} {span:>9.1f}s {span / ideal:>7.2f}x", flush=True)
            _cancel()  # what is left of this way's jobs (workers finding nothing) goes
            _wait_empty()
    farm = next((s for n, s in spans.items() if n.startswith("(c)")), None)
    if farm is None:
        return 0
    ok = farm <= TARGET * ideal and all(farm < s for n, s in spans.items() if n[1] != "c")
    print(f"farm {'meets' if ok else 'misses'} the target (<= {TARGET}x ideal, ahead of all)")
    return 0 if ok else 1


def _wait_empty() -> None:
    while (
        _jobs
        and subprocess.run(
            ["squeue", "-h", "-j", ",".join(_jobs), "-o", "%i"], capture_output=True, text=True
        ).stdout.strip()
    ):
        time.sleep(0.5)
    _jobs.clear()


if __name__ == "__main__":
    sys.exit(main())
