"""pyexp-submit: submit experiments' missing indices as Slurm job arrays, or run them here."""

from __future__ import annotations

import argparse
import sys

from pyexp.cli.args import Parser, count, runs_for, unknown_runs
from pyexp.scheduler.planner import SANE_MISSING

PROG = "pyexp-submit"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of pyexp-submit."""
    p = Parser(prog=PROG, description=__doc__)
    add = p.add_argument
    add("experiments", nargs="+", metavar="EXPERIMENT.json")
    add("--runs", type=count, help="runs per permutation (default: as the last pyexp-submit)")
    add("--cluster", metavar="NAME|PATH", help="cluster config (default: $CC_CLUSTER, else local)")
    add("--account", help="Slurm account (default: $SBATCH_ACCOUNT, else the config's)")
    add("--dry-run", action="store_true", help="print the plan, write scripts, submit nothing")
    add("--local", action="store_true", help="run the tasks on this machine instead of Slurm")
    add("--parallel", type=count, metavar="N", help="tasks at once with --local (default: CPUs)")
    add("--template", metavar="PATH", help="Jinja sbatch template to use instead of pyexp's")
    add("--command", metavar="CMD", help="command per index (default: config.json's 'command')")
    add("--max-attempts", type=count, help="failures before an index is given up (default 3)")
    add("--retry-failed", action="store_true", help="also resubmit indices that were given up")
    add("--workers", type=count, metavar="N", help="farm mode with N workers (default: from work)")
    add("--indices-per-task", type=count, metavar="N", help="static bundles of N indices per task")
    add("--index-minutes", type=minutes, metavar="M", help="one index's time (default: measured)")
    add("--yes", action="store_true", help=f"submit more than {SANE_MISSING} missing indices")
    args = p.parse_args(argv)
    if args.parallel is not None and not args.local:
        p.error("--parallel N goes with --local")
    if args.workers is not None and args.indices_per_task is not None:
        p.error("--workers (farm mode) and --indices-per-task (static bundles) exclude each other")
    return args


def minutes(text: str) -> float:
    """A positive number of minutes, for --index-minutes."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Submit (or plan, or run locally) each experiment's missing indices; the exit status."""
    try:
        args = parse_args(argv)
    except SystemExit as e:  # argparse: usage errors exit 2, --help exits 0
        return int(e.code or 0)
    from pyexp.errors import PyExpError, describe

    try:
        return _submit_all(args)
    except (PyExpError, OSError) as e:
        print(f"{PROG}: {describe(e)}", file=sys.stderr)
        return 1


def _submit_all(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from pyexp.cli.progress import Progress
    from pyexp.cli.submit_view import report
    from pyexp.errors import PyExpError
    from pyexp.experiment import loadExperiment
    from pyexp.scheduler.cluster import load_cluster
    from pyexp.scheduler.submit import SubmitOptions, submit_experiment

    # An account is needed to submit; a dry run or a local run goes without one.
    needed = not (args.local or args.dry_run)
    cluster = load_cluster(args.cluster).with_account(args.account, required=needed)
    opts = SubmitOptions(
        runs=0,  # per experiment below: --runs, else remembered
        cluster=cluster,
        command=args.command,
        template=args.template,
        dry_run=args.dry_run,
        local=args.local,
        parallel=args.parallel,
        max_attempts=args.max_attempts,
        retry_failed=args.retry_failed,
        workers=args.workers,
        indices_per_task=args.indices_per_task,
        index_minutes=args.index_minutes,
        yes=args.yes,
    )
    exps = [loadExperiment(path) for path in args.experiments]
    runs = [runs_for(exp, args.runs) for exp in exps]
    for path, exp, n in zip(args.experiments, exps, runs, strict=True):
        if n is None:  # refused before anything is submitted
            raise PyExpError(unknown_runs(exp, path))
    status = 0
    for exp, n in zip(exps, runs, strict=True):
        one = replace(opts, runs=n, progress=Progress(exp.path or "") if args.local else None)
        done = submit_experiment(exp, one)
        for warning in done.warnings:
            print(f"{PROG}: warning: {warning}", file=sys.stderr)
        print(report(done, one), flush=True)
        status = max(status, 1 if done.failed_tasks else 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
