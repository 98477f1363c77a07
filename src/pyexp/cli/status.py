"""pyexp-status: done, running, held, queued, failed and missing per experiment."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from pyexp.cli.args import Parser, count, runs_for
from pyexp.errors import PyExpError, describe

if TYPE_CHECKING:
    from pyexp.state.leases import Holder
NO_RUNS = "never submitted and no --runs: counting 1 run (pass --runs N)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of pyexp-status."""
    p = Parser(prog="pyexp-status", description=__doc__)
    p.add_argument("experiments", nargs="+", metavar="EXPERIMENT.json")
    p.add_argument(
        "--runs", type=count, help="runs per permutation (default: as the last pyexp-submit)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-v", "--verbose", action="store_true", help="list failed indices")
    p.add_argument(
        "--max-attempts",
        type=count,
        help="failures before an index is failed (default: as the last pyexp-submit, else 3)",
    )
    p.add_argument("--no-slurm", action="store_true", help="do not ask squeue (local runs)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Print where each experiment stands."""
    args = parse_args(argv)
    try:
        reports = [_report(path, args) for path in args.experiments]
    except (PyExpError, OSError) as e:
        print(f"pyexp-status: {describe(e)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        for r in reports:
            if r["runs_unknown"]:
                print(f"{r['experiment']}: {NO_RUNS}")
        print(_table(reports, args.verbose))
    return 0


def _report(path: str, args: argparse.Namespace) -> dict:
    from pyexp.experiment import loadExperiment
    from pyexp.reconcile import classify, max_attempts
    from pyexp.state.attempts import Attempts
    from pyexp.state.layout import state_dirs
    from pyexp.state.leases import IndexLeases, read_holder

    exp = loadExperiment(path)
    runs = runs_for(exp, args.runs)
    queue = _queue_or_empty(exp, args.no_slurm)
    standing = classify(exp, runs or 1, queue, max_attempts(exp, args.max_attempts))
    report: dict = {"experiment": path, "runs": runs or 1, "runs_unknown": runs is None}
    report.update(standing.counts())
    report["problems"] = standing.ledger_problems
    report["held_indices"] = [_held(i, h) for i, h in sorted(standing.held.items())]
    if args.verbose or args.json:
        latest = Attempts(state_dirs(exp).attempts).latest(set(standing.failed_keys.values()))
        report["failed_indices"] = [
            _failure(i, latest.get(key)) for i, key in sorted(standing.failed_keys.items())
        ]
        leases = IndexLeases(state_dirs(exp).leases)
        report["running_indices"] = [
            _holder(i, read_holder(leases.path(key)))
            for i, key in sorted(standing.running_keys.items())
        ]
    return report


def _queue_or_empty(exp, no_slurm: bool):
    from pyexp.reconcile import with_accounting
    from pyexp.scheduler import slurm
    from pyexp.scheduler.slurm_states import QueueSnapshot

    if no_slurm or not slurm.available():
        return QueueSnapshot()
    return with_accounting(exp, slurm.queue_snapshot(), slurm.sacct_states)


def _failure(index: int, attempt) -> dict:
    info = attempt.info if attempt else {}
    return {
        "index": index,
        "outcome": attempt.outcome if attempt else "?",
        "exit_code": info.get("exit_code"),
        "log": info.get("log"),
    }


def _holder(index: int, fields: dict[str, str]) -> dict:
    return {
        "index": index,
        "host": fields.get("host"),
        "pid": fields.get("pid"),
        "job": fields.get("slurm_job"),
    }


def _held(index: int, holder: Holder) -> dict:
    return {
        "index": index,
        "host": holder.host,
        "pid": holder.pid,
        "job": holder.job,
        "age_seconds": int(holder.age),
    }


def _table(reports: list[dict], verbose: bool) -> str:
    cols = ("done", "running", "held", "queued", "failed", "missing")
    width = max(len("experiment"), *(len(r["experiment"]) for r in reports))
    lines = [f"{'experiment':<{width}}  " + "  ".join(f"{c:>8}" for c in cols)]
    for r in reports:
        lines.append(f"{r['experiment']:<{width}}  " + "  ".join(f"{r[c]:>8}" for c in cols))
        lines += [f"  warning: {p}" for p in r["problems"]]
        for h in r["held_indices"]:
            who = f"job {h['job']} pid {h['pid']} on {h['host']}" if h["host"] else "nobody"
            lines.append(
                f"  index {h['index']}: held by a stale lease ({who}, last renewed "
                f"{h['age_seconds']} s ago); the next runner takes it over"
            )
        for h in r.get("running_indices", []) if verbose else []:
            lines.append(
                f"  index {h['index']}: running on {h['host']} pid {h['pid']} job {h['job']}"
            )
        for f in r.get("failed_indices", []) if verbose else []:
            lines.append(
                f"  index {f['index']}: {f['outcome']} (exit {f['exit_code']}) log: {f['log']}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
