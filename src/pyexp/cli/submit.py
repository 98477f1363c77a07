"""pyexp-submit: submit experiments' missing indices as Slurm job arrays, or run them here.

Exit status: 0; 3 when all went well but indices failed for good (attempts exhausted: the first
line says how many and where to look); 1 on an error or, with --local, tasks with failures;
2 on bad usage.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from pyexp.cli.args import GAVE_UP, Parser, cluster_for, console, count, runs_for, unknown_runs
from pyexp.scheduler.planner import SANE_MISSING

# Each command imports its work inside the functions that do it: `--help` and the console
# scripts start fast.

if TYPE_CHECKING:
    from pyexp.experiment import ExperimentDescription
    from pyexp.scheduler.cluster import ClusterConfig
    from pyexp.scheduler.submit import SubmitOptions, Submitted

PROG = "pyexp-submit"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of pyexp-submit."""
    p = Parser(prog=PROG, description=__doc__)
    add = p.add_argument
    add("experiments", nargs="+", metavar="EXPERIMENT.json")
    add("--runs", type=count, help="runs per permutation (default: as the last pyexp-submit)")
    add(
        "--cluster",
        metavar="NAME|PATH",
        help="cluster config (default: as last submitted, else $CC_CLUSTER, else local)",
    )
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
    add("--no-escalate", action="store_true", help="retry out-of-memory/time as they were")
    add("--until-done", action="store_true", help="chain follow-up jobs until the sweep is done")
    add("--max-rounds", type=count, metavar="N", help="rounds of --until-done (default 10)")
    add("--then", metavar="CMD", help="with --until-done: a job that runs CMD once all is done")
    args = p.parse_args(argv)
    if args.until_done and (args.local or args.dry_run):
        p.error("--until-done chains Slurm jobs; it goes with neither --local nor --dry-run")
    if (args.max_rounds is not None or args.then is not None) and not args.until_done:
        p.error("--max-rounds and --then go with --until-done")
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


@console
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
    from pyexp.cli.submit_view import given_up_line, report
    from pyexp.errors import PyExpError
    from pyexp.experiment import loadExperiment
    from pyexp.scheduler.submit import SubmitOptions, submit_experiment

    exps = [loadExperiment(path) for path in args.experiments]
    runs = [runs_for(exp, args.runs) for exp in exps]
    for path, exp, n in zip(args.experiments, exps, runs, strict=True):
        if n is None:  # refused before anything is submitted
            raise PyExpError(unknown_runs(exp, path))
    # An account is needed to submit; a dry run or a local run goes without one.
    needed = not (args.local or args.dry_run)
    clusters = [_cluster(exp, args.cluster, args.account, needed) for exp in exps]
    opts = SubmitOptions(
        runs=0,  # per experiment below: --runs, else remembered
        cluster=clusters[0][0],  # per experiment below: --cluster, else remembered
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
        escalate=not args.no_escalate,
    )
    failed = gave_up = False
    each = zip(args.experiments, exps, runs, clusters, strict=True)
    for path, exp, n, (cluster, remembered) in each:
        progress = Progress(exp.path or "") if args.local else None
        one = replace(opts, runs=n, cluster=cluster, progress=progress)
        if remembered:
            note = "remembered from its last submission (--cluster NAME|PATH replaces it)"
            print(f"{path}: cluster {cluster.spec}, {note}", flush=True)
        done = _round(args, path, exp, one) if args.until_done else submit_experiment(exp, one)
        if done.given_up:  # first, so that a cron log's reader sees it
            print(f"{PROG}: {given_up_line(done)}", file=sys.stderr, flush=True)
        for warning in done.warnings:
            print(f"{PROG}: warning: {warning}", file=sys.stderr)
        print(report(done, one), flush=True)
        if done.chain:
            print(done.chain, flush=True)
        failed, gave_up = failed or bool(done.failed_tasks), gave_up or bool(done.given_up)
    return 1 if failed else GAVE_UP if gave_up else 0


def _round(
    args: argparse.Namespace, path: str, exp: ExperimentDescription, opts: SubmitOptions
) -> Submitted:
    """One round of --until-done: submit, then (under the lock) join, stop or chain the chain."""
    import os
    from dataclasses import replace

    from pyexp.errors import PyExpError, describe
    from pyexp.job_environment import JobEnvironment
    from pyexp.scheduler import chain
    from pyexp.scheduler.submit import submit_experiment

    chain.refuse_where_jobs_cannot_submit(opts.cluster)
    request = chain.ChainRequest(
        _next_round_argv(args, os.path.abspath(path), opts),
        args.max_rounds or chain.DEFAULT_MAX_ROUNDS,
        args.then,
    )
    job = JobEnvironment.read().job_id

    def after(done: Submitted) -> str:
        return chain.step(exp, done, request, opts.cluster, job)

    try:
        return submit_experiment(exp, replace(opts, after=after))
    except PyExpError as e:
        chain.round_failed(exp, describe(e), job)
        raise


def _next_round_argv(args: argparse.Namespace, path: str, opts: SubmitOptions) -> list[str]:
    """pyexp-submit's arguments for the next round: the same options, everything explicit (the
    follow-up job has no $CC_CLUSTER nor $SBATCH_ACCOUNT); never --retry-failed (once is
    enough)."""
    import os

    argv = [path, "--runs", str(opts.runs), "--cluster", opts.cluster.spec, "--until-done"]
    given = {
        "--account": opts.cluster.account,
        "--command": args.command,
        "--template": os.path.abspath(args.template) if args.template else None,
        "--max-attempts": args.max_attempts,
        "--workers": args.workers,
        "--indices-per-task": args.indices_per_task,
        "--index-minutes": args.index_minutes,
        "--max-rounds": args.max_rounds,
        "--then": args.then,
    }
    argv += [part for flag, v in given.items() if v is not None for part in (flag, str(v))]
    flags = {"--yes": args.yes, "--no-escalate": args.no_escalate}
    return argv + [flag for flag, on in flags.items() if on]


def _cluster(
    exp: ExperimentDescription, given: str | None, account: str | None, needed: bool
) -> tuple[ClusterConfig, bool]:
    """The experiment's cluster config with its account, and whether it was remembered."""
    from pyexp.errors import ClusterConfigError
    from pyexp.scheduler.cluster import load_cluster
    from pyexp.state.layout import state_dirs

    spec, remembered = cluster_for(exp, given)
    try:
        cluster = load_cluster(spec)
    except ClusterConfigError as e:
        if not remembered:
            raise
        raise ClusterConfigError(
            f"{e} (the cluster of the last submission, remembered in "
            f"{state_dirs(exp).settings}; --cluster NAME|PATH replaces it)"
        ) from None
    return cluster.with_account(account, required=needed), remembered


if __name__ == "__main__":
    sys.exit(main())
