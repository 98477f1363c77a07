"""Benchmark: plan + render time of pyexp-submit for 10^4, 10^5 and 10^6 missing indices.

Usage: python scripts/bench_submit.py [--cluster NAME] [--max-array-size N]
Prints, per size: arrays (= sbatch calls), tasks, plan time, render time, script-writing time.
Target: plan + render under 1 s for 10^5 missing indices.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from pyexp.scheduler.cluster import load_cluster
from pyexp.scheduler.planner import plan_for
from pyexp.scheduler.render import array_context, render
from pyexp.state.atomic import write_atomic


def bench(n: int, cluster_name: str, max_array_size: int | None, folder: str) -> dict:
    """Time planning, rendering and writing the scripts for n missing indices."""
    cluster = load_cluster(cluster_name).with_account("def-bench", required=False)
    missing = list(range(0, 2 * n, 2))  # every other index: not one contiguous range
    t0 = time.perf_counter()
    plans = plan_for(missing, cluster, max_array_size)
    t1 = time.perf_counter()
    scripts = [
        render(
            array_context(
                plan,
                cluster,
                job_name=f"pyexp-{k:012x}",
                ledger=os.path.join(folder, "ledger", f"{k:012x}.json"),
                log_dir=os.path.join(folder, "logs"),
                experiment=os.path.join(folder, "experiments", "sweep.json"),
                config=os.path.join(folder, "config.json"),
            )
        )
        for k, plan in enumerate(plans)
    ]
    t2 = time.perf_counter()
    for k, text in enumerate(scripts):
        write_atomic(os.path.join(folder, "scripts", f"{n}-{k}.sbatch"), text)
    t3 = time.perf_counter()
    return {
        "missing": n,
        "arrays": len(plans),
        "tasks": sum(len(p.tasks) for p in plans),
        "plan": t1 - t0,
        "render": t2 - t1,
        "write": t3 - t2,
    }


def main() -> None:
    """Print one row per size."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cluster", default="fir", help="cluster config (default fir: 1 index/task)")
    p.add_argument("--max-array-size", type=int, help="as scontrol would say (default: config's)")
    args = p.parse_args()
    print(f"cluster {args.cluster}; sbatch calls = arrays (one call per array)")
    print(
        f"{'missing':>9} {'arrays':>7} {'tasks':>8} {'plan s':>8} {'render s':>9} "
        f"{'plan+render':>12} {'write s':>8}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for n in (10**4, 10**5, 10**6):
            r = bench(n, args.cluster, args.max_array_size, folder)
            print(
                f"{r['missing']:>9} {r['arrays']:>7} {r['tasks']:>8} {r['plan']:>8.3f} "
                f"{r['render']:>9.3f} {r['plan'] + r['render']:>12.3f} {r['write']:>8.3f}"
            )


if __name__ == "__main__":
    main()
