"""pyexp-status: done, running, held, queued, failing, failed and missing per experiment.

Exit status: 0; 3 when indices failed for good (attempts exhausted) or the broken-command guard
stopped a task (see the first line); 1 on an error; 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from pyexp.cli.args import GAVE_UP, Parser, console, count, runs_for
from pyexp.errors import PyExpError, describe

# Each command imports its work inside the functions that do it: `--help` and the console
# scripts start fast.

PROG = "pyexp-status"
LIST_LIMIT = 50  # indices listed per kind; the JSON says how many there are in all
TAIL_LINES = 5  # of each failing index's last attempt


def seconds(text: str) -> float:
    """A positive number of seconds, for --watch."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of pyexp-status."""
    p = Parser(prog=PROG, description=__doc__)
    p.add_argument("experiments", nargs="+", metavar="EXPERIMENT.json")
    p.add_argument(
        "--runs", type=count, help="runs per permutation (default: as the last pyexp-submit)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="list failing and failed indices (attempts, reason, log tail) and who runs what",
    )
    p.add_argument(
        "--by", metavar="PARAM", help="break the counts down by a parameter's values (dotted)"
    )
    p.add_argument(
        "--watch",
        nargs="?",
        type=seconds,
        const=10.0,
        metavar="SECONDS",
        help="refresh every SECONDS (default 10) until Ctrl-C",
    )
    p.add_argument(
        "--max-attempts",
        type=count,
        help="failures before an index is failed (default: as the last pyexp-submit, else 3)",
    )
    p.add_argument("--no-slurm", action="store_true", help="do not ask squeue (local runs)")
    return p.parse_args(argv)


@console
def main(argv: list[str] | None = None) -> int:
    """Print where each experiment stands (again every --watch seconds)."""
    args = parse_args(argv)
    try:
        while True:
            if (code := _show(args)) == 1 or args.watch is None:
                return code
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def _show(args: argparse.Namespace) -> int:
    from pyexp.cli.status_view import render

    try:
        reports = [_report(path, args) for path in args.experiments]
    except (PyExpError, OSError) as e:
        print(f"{PROG}: {describe(e)}", file=sys.stderr)
        return 1
    if args.watch is not None and sys.stdout.isatty():
        print("\x1b[H\x1b[J", end="")  # redraw in place
    print(json.dumps(reports, indent=2) if args.json else render(reports, args.verbose))
    sys.stdout.flush()
    return GAVE_UP if any(r["failed"] or r["broken"] for r in reports) else 0


def _report(path: str, args: argparse.Namespace) -> dict:
    from pyexp.experiment import loadExperiment
    from pyexp.scheduler.chain import Chain
    from pyexp.scheduler.submit import tidy_if_idle
    from pyexp.standing import progress as numbers
    from pyexp.standing.reconcile import classify, max_attempts
    from pyexp.standing.settling import broken_command, script_failure
    from pyexp.state.layout import read_ledger, state_dirs
    from pyexp.state.records import CompletionRecords

    exp = loadExperiment(path)
    runs = runs_for(exp, args.runs)
    scan = read_ledger(exp)  # the ledger, read once for the whole report
    chained = Chain.read(state_dirs(exp).chain)  # an --until-done chain on record, if any
    queue, problem = _queue(exp, scan, args.no_slurm, chained is not None)
    asked = problem is None and not args.no_slurm
    tidy_if_idle(exp, scan, queue if asked else None)  # a finished sweep's leftovers folded
    standing = classify(exp, runs or 1, queue, max_attempts(exp, args.max_attempts), scan=scan)
    counts = standing.counts()
    times = numbers.runtimes(CompletionRecords(state_dirs(exp).done).durations())
    eta = numbers.eta(standing, times)
    out: dict = {"experiment": path, "runs": runs or 1, "runs_unknown": runs is None}
    out["broken"] = broken_command(exp)
    out.update(total=standing.total, **counts, percent=numbers.percentages(counts, standing.total))
    out.update(queue_known=asked, queue_problem=problem)
    failed = script_failure(exp, scan)  # the last array's script, before pyexp-run (a setup line)
    out.update(jobs=standing.jobs, problems=standing.ledger_problems + ([failed] if failed else []))
    out["unplaced"] = len(standing.unplaced)
    out["chain"] = _chain(chained, asked_slurm=asked)
    out["runtime"] = times and {"indices": times.count, "median": times.median, "p90": times.p90}
    out["eta"] = eta and {
        "seconds": eta.seconds,
        "remaining": eta.remaining,
        "running": eta.running,
        "median": eta.median,
        "how": "remaining indices x median runtime / indices running now",
    }
    out["held_indices"] = [_held(i, h) for i, h in sorted(standing.held.items())[:LIST_LIMIT]]
    out["continuing_indices"] = _continuing(exp, standing)
    if args.verbose or args.json:
        out.update(_failures(exp, standing), running_indices=_running(exp, standing))
        out["retried_with_more"] = _retried_with_more(scan)
    if args.by:
        out["by"] = {"param": args.by, "rows": numbers.breakdown(exp, standing, args.by)}
    return out


def _failures(exp, standing) -> dict:
    """The failing and failed indices (first LIST_LIMIT of each): attempts, reason, log tail."""
    from pyexp.state.attempts import Attempts
    from pyexp.state.index_logs import index_log
    from pyexp.state.layout import state_dirs

    attempts = Attempts(state_dirs(exp).attempts)
    out: dict = {}
    for name, keys in (("failing", standing.failing_keys), ("failed", standing.failed_keys)):
        shown = sorted(keys.items())[:LIST_LIMIT]
        latest = attempts.latest({k for _, k in shown})
        tries = attempts.counts()
        rows = []
        for i, key in shown:
            info = latest[key].info if key in latest else {}
            log, offset = _where(
                info.get("log") or index_log(exp, i), info.get("log_offset"), exp, key
            )
            rows.append(
                {
                    "index": i,
                    "attempts": sum(tries.get(key, {}).values()),
                    "outcome": latest[key].outcome if key in latest else None,
                    "exit_code": info.get("exit_code"),
                    "reason": info.get("error") or info.get("why"),
                    "log": log,
                    "tail": _tail(log, offset),
                }
            )
        out[f"{name}_indices"] = rows
        out[f"{name}_indices_total"] = len(keys)
    return out


def _retried_with_more(scan) -> list[dict]:
    """The arrays that retried indices with more memory or time, and why."""
    return [
        {"job": e.job_id, "indices": e.index_set().text(), "why": e.escalated}
        for e in scan.entries
        if e.escalated
    ]


def _continuing(exp, standing) -> list[dict]:
    """The continuing indices (first LIST_LIMIT): restarts so far, the last checkpoint's age."""
    from pyexp.state import checkpoints
    from pyexp.state.attempts import CONTINUING, STALLED, Attempts
    from pyexp.state.layout import state_dirs

    dirs = state_dirs(exp)
    tries = Attempts(dirs.attempts).counts() if standing.continuing_keys else {}
    rows = []
    for i, key in sorted(standing.continuing_keys.items())[:LIST_LIMIT]:
        age = checkpoints.age(checkpoints.folder_of(dirs.checkpoints, key))
        restarts = tries[key][CONTINUING] + tries[key][STALLED] if key in tries else 0
        rows.append(
            {
                "index": i,
                "restarts": restarts,
                "checkpoint_age_seconds": None if age is None else int(age),
                "progress": checkpoints.progress(checkpoints.folder_of(dirs.checkpoints, key)),
            }
        )
    return rows


def _where(log: str, offset: int | None, exp, key: str) -> tuple[str, int | None]:
    """Where an attempt's output is now: its task log and offset, or once that log was folded
    into an archive, key's latest attempt there."""
    import os

    from pyexp.state.layout import log_dir
    from pyexp.state.task_logs import locate

    gone = isinstance(offset, int) and not os.path.exists(log)
    if gone and (found := locate(log_dir(exp), key)):
        return found[-1].log, found[-1].offset
    return log, offset


def _tail(log: str, offset: int | None) -> list[str]:
    """The last lines of the attempt at offset in log (None: the log's last attempt)."""
    from pyexp.state.index_logs import attempt_at, attempts_in

    if isinstance(offset, int):
        found = attempt_at(log, offset, TAIL_LINES)
        return found.tail if found else []
    try:
        found = attempts_in(log, TAIL_LINES)
    except OSError:
        return []
    return found[-1].tail if found else []


def _running(exp, standing) -> list[dict]:
    from pyexp.state.layout import state_dirs
    from pyexp.state.leases import IndexLeases, read_holder

    leases = IndexLeases(state_dirs(exp).leases)
    return [
        _holder(i, read_holder(leases.path(key)))
        for i, key in sorted(standing.running_keys.items())[:LIST_LIMIT]
    ]


def _holder(index: int, fields: dict[str, str]) -> dict:
    return {
        "index": index,
        "host": fields.get("host"),
        "pid": fields.get("pid"),
        "job": fields.get("slurm_job"),
    }


def _held(index: int, holder) -> dict:
    return {
        "index": index,
        "host": holder.host,
        "pid": holder.pid,
        "job": holder.job,
        "age_seconds": int(holder.age),
    }


def _chain(found, asked_slurm: bool) -> str | None:
    """--until-done's chain found in one line (whether its follow-up is gone: when squeue
    answers)."""
    from pyexp.errors import SlurmError
    from pyexp.scheduler import chain

    if found is None:
        return None
    try:
        gone = asked_slurm and chain.followup_gone(found)
    except SlurmError:
        gone = False
    return chain.describe(found, gone)


def _queue(exp, scan, no_slurm: bool, chained: bool):
    """squeue's snapshot (with sacct's word), else the ledger's guess and why squeue was not
    asked; with --no-slurm, or when neither the ledger nor a chain has anything on Slurm (squeue
    could only slow the report down, or hang with no controller), the guess and no complaint."""
    from pyexp.environment import slurm_command
    from pyexp.errors import SlurmError
    from pyexp.scheduler import slurm
    from pyexp.standing.reconcile import unknown_queue
    from pyexp.standing.settling import with_accounting

    if no_slurm:
        return unknown_queue(scan), None
    if not (scan.may_be_on_slurm() or chained):
        return unknown_queue(scan), None  # nothing of exp's on Slurm: the guess is the answer
    if not slurm.available():
        return unknown_queue(scan), f"{slurm_command('squeue')}: not found on PATH"
    try:
        return with_accounting(exp, slurm.queue_snapshot(), slurm.sacct_states, scan), None
    except SlurmError as e:
        return unknown_queue(scan), str(e)


if __name__ == "__main__":
    sys.exit(main())
