#!/usr/bin/env python3
"""Benchmark farm mode against what users do today, on the local Slurm (issues 11 and 20).

    python scripts/bench_farm.py [--indices 500] [--slots 8] [--per-task 25] [--seed 1]
    python scripts/bench_farm.py --indices 2000     # the full size of issue 11 (~20 min here)
    python scripts/bench_farm.py --indices 600 --sigma 1.0 --ways ce --passes 2   # issue 20
    python scripts/bench_farm.py --local-trivial 500 --slots 2   # no Slurm: --local vs xargs

The same work, indices of log-normal durations (median 0.5 s, sigma 0.75, seeded) that sleep,
is completed one after the other by (a) one index per array task, (b) pyexp's static bundles
(--indices-per-task), (c) pyexp farm mode (--workers = slots), (d) submitit's map_array (one
array task per item, slurm_array_parallelism = slots; `pip install submitit`, the `bench`
extra), (e) one Slurm job with as many cores as slots pulling the indices itself, `seq 0 N-1 |
xargs -P slots` (no leases, records or logs: the floor a farm can hope for), (f) pyexp farm
mode shaped like (e): one worker of slots cores (--workers 1, a copy of the local cluster config
with "cores" = slots: one Python start instead of slots). Each index stamps
its end time in a file; the makespan runs from the first submission to the last stamp. Prints a
table of Slurm jobs created, makespan and its ratio to the ideal (sum of durations / slots),
the start-up (submission to the first sleeps, mean over the slots) and the median gap a slot
spends between one index's end stamp and the next one's sleep, and the no-overhead floor of
list scheduling in index order; with --passes 2 the ways run again in the opposite order, and
with (c) and (e) it prints the farm's ratio to the pull per pass.
Before the first pass, slots one-core jobs importing the runner warm Slurm and the page cache.
Exits 1 if farm mode is not within 1.3x of the ideal and ahead of (a), (b) and (d).
Each way waits (up to a minute) for a queue without other users' jobs, and its row says so
when some ran meanwhile. Everything lives in a temporary folder; its jobs are cancelled on
exit.

--local-trivial N runs N trivial indices (`true {index}`) through `pyexp-submit --local
--workers SLOTS`, through the same farm whose workers each run one `pyexp.claim()` loop writing
a line per index (no process per index), and through `seq 0 N-1 | xargs -P SLOTS -I{} sh -c
'echo {} >> log'`, in alternating orders, and prints the wall times and the ratios to xargs (no
Slurm is used).
"""

from __future__ import annotations

import argparse
import atexit
import heapq
import json
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

TARGET = 1.3
SIGMA = 0.75
PULL = """\
#!/bin/sh
#SBATCH --job-name=pull-bench
#SBATCH --cpus-per-task={slots}
#SBATCH --mem-per-cpu=250M
#SBATCH --time=60
#SBATCH --output={root}/pull.out
seq 0 {last} | xargs -P {slots} -I{{}} sh {root}/job.sh {{}}
"""
JOB = """\
root=$(dirname "$0")
sleep "$(sed -n "$(($1 + 1))p" "$root/durations.txt")"
date +%s.%N > "$root/ends/$1"
"""

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_jobs: list[str] = []  # every Slurm job this run submitted, cancelled on exit


def durations(n: int, seed: int, sigma: float = SIGMA) -> list[float]:
    """n log-normal durations (median 0.5 s), rounded to ms."""
    rng = random.Random(seed)
    return [round(rng.lognormvariate(0.0, sigma) * 0.5, 3) for _ in range(n)]


def list_floor(times: list[float], slots: int) -> float:
    """The makespan of list scheduling in index order with no overhead at all."""
    free = [0.0] * slots
    for t in times:
        heapq.heappush(free, heapq.heappop(free) + t)
    return max(free)


def end_stamps(folder: str, n: int, timeout: float) -> tuple[dict[int, float], bool]:
    """Each index's end stamp in folder once all n indices stamped one, and whether jobs of
    others ran meanwhile (looked at every 5 s)."""
    deadline, disturbed, look = time.monotonic() + timeout, False, 0.0
    while len(os.listdir(folder)) < n:
        if time.monotonic() > deadline:
            sys.exit(f"bench_farm: {len(os.listdir(folder))} of {n} indices ended in {timeout} s")
        if time.monotonic() > look:
            disturbed, look = disturbed or bool(_others("R")), time.monotonic() + 5
        time.sleep(0.5)
    names = os.listdir(folder)
    return {int(name): _read_float(os.path.join(folder, name)) for name in names}, disturbed


def _read_float(path: str) -> float:
    with open(path) as f:
        return float(f.read())


def _others(states: str = "all") -> list[str]:
    """Jobs in the queue (in states) that this run did not submit (other users of the same
    Slurm)."""
    argv = ["squeue", "-h", "-t", states, "-o", "%F"]  # array job ids
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    ours = {job.split("_")[0] for job in _jobs}
    return [job for job in out.split() if job not in ours]


def wait_for_quiet(limit: float = 60) -> None:
    """Wait (up to limit seconds) until no other job is in the queue, so a way starts alone."""
    deadline = time.monotonic() + limit
    while _others() and time.monotonic() < deadline:
        time.sleep(2)


def warm_up(slots: int) -> None:
    """Run slots one-core jobs that import the runner, and wait for them: the first way of the
    first pass then starts as warm (Slurm's daemons, the page cache) as every later one."""
    script = f"{shlex.quote(sys.executable)} -c 'import pyexp.runner.loop'"
    for _ in range(slots):
        out = subprocess.run(
            ["sbatch", "--parsable", "-n1", "-o", "/dev/null", "--wrap", script],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            sys.exit(f"bench_farm: sbatch failed: {out.stderr.strip()}")
        _jobs.append(out.stdout.strip().split(";")[0])
    _wait_empty()


def overheads(ends: dict[int, float], times: list[float], started: float, slots: int) -> tuple:
    """(mean seconds from submission to the first slots' sleeps, median seconds a slot spends
    between one index's end stamp and the next one's sleep): each start (end stamp less the
    duration) is paired with the earliest end stamp not yet paired, as a slot frees."""
    spans = sorted((ends[i] - times[i], ends[i]) for i in ends)
    free = sorted(end for _, end in spans[:slots])
    gaps = []
    for start, end in spans[slots:]:
        gaps.append(start - heapq.heappop(free))
        heapq.heappush(free, end)
    return sum(start for start, _ in spans[:slots]) / slots - started, statistics.median(gaps)


def write_work(root: str, times: list[float]) -> None:
    """The durations, the per-index script and the end-stamp folder under root."""
    os.makedirs(os.path.join(root, "ends"))
    with open(os.path.join(root, "durations.txt"), "w") as f:
        f.write("".join(f"{d}\n" for d in times))
    with open(os.path.join(root, "job.sh"), "w") as f:
        f.write(JOB)


def wide_cluster(root: str, cores: int) -> str:
    """A copy of the local cluster config whose tasks have cores cores; its path."""
    with open(os.path.join(ROOT, "cluster_configs", "local.json")) as f:
        config = json.load(f)
    path = os.path.join(root, "wide.json")
    with open(path, "w") as f:
        json.dump({**config, "cores": cores}, f)
    return path


def pull_run(root: str, times: list[float], slots: int) -> tuple[int, float]:
    """One job of slots cores pulling every index with xargs -P: (1, its submission)."""
    write_work(root, times)
    script = os.path.join(root, "pull.sh")
    with open(script, "w") as f:
        f.write(PULL.format(slots=slots, root=root, last=len(times) - 1))
    started = time.time()
    out = subprocess.run(["sbatch", "--parsable", script], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench_farm: sbatch failed: {out.stderr.strip()}")
    _jobs.append(out.stdout.strip().split(";")[0])
    return 1, started


def pyexp_run(root: str, times: list[float], *flags: str) -> tuple[int, float]:
    """Submit the sweep with pyexp-submit flags, cron-style until all is submitted: (tasks,
    first submission as epoch seconds)."""
    write_work(root, times)
    experiment = os.path.join(root, "bench.json")
    with open(experiment, "w") as f:
        json.dump({"name": "bench", "metaParameters": {"i": list(range(len(times)))}}, f)
    config = os.path.join(root, "config.json")
    with open(config, "w") as f:
        json.dump({"command": f"sh {shlex.quote(os.path.join(root, 'job.sh'))} {{index}}"}, f)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")}
    env["PYEXP_CONFIG"] = config
    argv = [sys.executable, "-m", "pyexp.cli.submit", experiment, "--runs", "1", "--yes"]
    argv += flags if "--cluster" in flags else ["--cluster", "local", *flags]
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
    """Run the ways one after the other (and back) and print the table; 1 if farm misses the
    target."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--indices", type=int, default=500)
    p.add_argument("--slots", type=int, default=8, help="CPUs of the local Slurm")
    p.add_argument("--per-task", type=int, default=25, help="indices per static bundle")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sigma", type=float, default=SIGMA, help="of the log-normal durations")
    p.add_argument("--ways", default="abcdef", help="which ways to run, e.g. 'ce' (default all)")
    p.add_argument("--passes", type=int, default=1, help="2: again in the opposite order")
    p.add_argument("--local-trivial", type=int, metavar="N", help="--local vs xargs, N indices")
    args = p.parse_args()
    if args.local_trivial:
        return local_trivial(args.local_trivial, args.slots, max(2, args.passes))
    atexit.register(_cancel)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    times = durations(args.indices, args.seed, args.sigma)
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
        (f"(e) one job, xargs -P {args.slots}", lambda r: pull_run(r, times, args.slots)),
        (
            f"(f) farm, 1 worker x {args.slots} cores",
            lambda r: pyexp_run(
                r, times, "--cluster", wide_cluster(r, args.slots), "--workers", "1"
            ),
        ),
    ]
    ways = [(name, way) for name, way in ways if name[1] in args.ways]
    print(
        f"{args.indices} indices, log-normal durations (median 0.5 s, sigma {args.sigma}, seed "
        f"{args.seed}, max {max(times):.1f} s), sum {sum(times):.0f} s on {args.slots} slots: "
        f"ideal {ideal:.1f} s; list scheduling in index order, no overhead: "
        f"{list_floor(times, args.slots) / ideal:.3f}x",
        flush=True,
    )
    print(
        f"{'pass':<4} {'way':<28} {'Slurm jobs':>10} {'makespan':>10} {'x ideal':>8} "
        f"{'start-up':>9} {'gap':>9}",
        flush=True,
    )
    passes: list[dict[str, float]] = []
    warm_up(args.slots)
    with tempfile.TemporaryDirectory(prefix="pyexp-bench-farm-") as tmp:
        for n in range(args.passes):
            order = ways if n % 2 == 0 else ways[::-1]
            passes.append(run_pass(os.path.join(tmp, str(n)), order, times, args.slots, n + 1))
    for n, spans in enumerate(passes, 1):
        pull = _span(spans, "e")
        for way in "cf":
            farm = _span(spans, way)
            if farm is not None and pull is not None:
                print(f"pass {n}: farm ({way}) / pull = {farm / pull:.3f}", flush=True)
    spans = passes[0]
    farm = _span(spans, "c")
    if farm is None:
        return 0
    others = [s for n, s in spans.items() if n[1] in "abd"]
    ok = farm <= TARGET * ideal and all(farm < s for s in others)
    print(f"farm {'meets' if ok else 'misses'} the target (<= {TARGET}x ideal, ahead of a, b, d)")
    return 0 if ok else 1


def run_pass(
    tmp: str,
    ways: list[tuple[str, Callable[[str], tuple[int, float]]]],
    times: list[float],
    slots: int,
    number: int,
) -> dict[str, float]:
    """Run ways one after the other, each in its own folder, printing a row each (makespan, x
    ideal, start-up and median gap per index: see overheads); their makespans by name."""
    ideal = sum(times) / slots
    spans: dict[str, float] = {}
    for name, way in ways:
        root = os.path.join(tmp, name[1])
        os.makedirs(root)
        wait_for_quiet()
        tasks, started = way(root)
        ends, disturbed = end_stamps(os.path.join(root, "ends"), len(times), timeout=60 * 60)
        span = spans[name] = max(ends.values()) - started
        startup, gap = overheads(ends, times, started, slots)
        print(
            f"{number:<4} {name:<28} {tasks:>10} {span:>9.1f}s {span / ideal:>7.3f}x "
            f"{startup:>8.2f}s {gap * 1000:>7.1f}ms"
            + ("  (other jobs ran meanwhile)" if disturbed else ""),
            flush=True,
        )
        _cancel()  # what is left of this way's jobs (workers finding nothing) goes
        _wait_empty()
    return spans


def _span(spans: dict[str, float], way: str) -> float | None:
    return next((s for n, s in spans.items() if n[1] == way), None)


def local_trivial(n: int, slots: int, passes: int) -> int:
    """n trivial indices on a local farm of slots workers against xargs -P slots, passes times
    in alternating order; prints each wall time and the ratio."""
    print(f"{n} trivial indices on {slots} slots; load before: {os.getloadavg()[0]:.2f}")
    ratios = []
    with tempfile.TemporaryDirectory(prefix="pyexp-bench-local-") as tmp:
        for k in range(passes):
            ways = [
                ("xargs", _xargs_trivial),
                ("farm", _local_farm_trivial),
                ("claim", _local_claim_trivial),
            ]
            spans = {}
            for name, way in ways if k % 2 == 0 else ways[::-1]:
                root = os.path.join(tmp, f"{k}-{name}")
                os.makedirs(root)
                spans[name] = way(root, n, slots)
                print(f"pass {k + 1} {name:<6} {spans[name]:6.2f} s", flush=True)
            ratios.append(spans["farm"] / spans["xargs"])
            print(
                f"pass {k + 1} farm / xargs = {ratios[-1]:.2f}, "
                f"claim / xargs = {spans['claim'] / spans['xargs']:.2f}",
                flush=True,
            )
    print(f"load after: {os.getloadavg()[0]:.2f}; farm / xargs, worst pass: {max(ratios):.2f}")
    return 0


def _xargs_trivial(root: str, n: int, slots: int) -> float:
    """Wall seconds of xargs -P slots appending each index to a log."""
    log = shlex.quote(os.path.join(root, "log"))
    started = time.monotonic()
    subprocess.run(
        f"seq 0 {n - 1} | xargs -P {slots} -I{{}} sh -c 'echo {{}} >> {log}'",
        shell=True,
        check=True,
    )
    return time.monotonic() - started


CLAIM_LOOP = """import pyexp
with open("log", "a") as log:
    for job in pyexp.claim():
        with job:
            print(job.index, file=log, flush=True)
"""


def _local_claim_trivial(root: str, n: int, slots: int) -> float:
    """Wall seconds of the same farm whose workers each run one pyexp.claim() loop writing a
    line per index (no process per index)."""
    with open(os.path.join(root, "claim.py"), "w") as f:
        f.write(CLAIM_LOOP)
    return _local_farm_trivial(root, n, slots, f"{shlex.quote(sys.executable)} claim.py")


def _local_farm_trivial(root: str, n: int, slots: int, command: str = "true {index}") -> float:
    """Wall seconds of pyexp-submit --local --workers slots running command n times."""
    experiment = os.path.join(root, "trivial.json")
    with open(experiment, "w") as f:
        json.dump({"name": "trivial", "metaParameters": {"i": list(range(n))}}, f)
    config = os.path.join(root, "config.json")
    with open(config, "w") as f:
        json.dump({"command": command}, f)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")}
    env["PYEXP_CONFIG"] = config
    argv = [sys.executable, "-m", "pyexp.cli.submit", experiment, "--runs", "1", "--local"]
    argv += ["--cluster", "local", "--workers", str(slots)]
    started = time.monotonic()
    out = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)
    span = time.monotonic() - started
    if out.returncode != 0 or f"ran {n} indices" not in out.stdout:
        sys.exit(f"bench_farm: pyexp-submit --local failed: {out.stdout}{out.stderr}")
    return span


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
