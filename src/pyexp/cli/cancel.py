"""pyexp-cancel: scancel an experiment's queued and running arrays; their indices become missing."""

from __future__ import annotations

import argparse
import sys

from pyexp.cli.args import Parser, console

# Each command imports its work inside the functions that do it: `--help` and the console
# scripts start fast.

PROG = "pyexp-cancel"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of pyexp-cancel."""
    p = Parser(prog=PROG, description=__doc__)
    p.add_argument("experiments", nargs="+", metavar="EXPERIMENT.json")
    p.add_argument("--dry-run", action="store_true", help="show the jobs, cancel nothing")
    return p.parse_args(argv)


@console
def main(argv: list[str] | None = None) -> int:
    """Cancel each experiment's arrays; the exit status."""
    args = parse_args(argv)
    from pyexp.errors import PyExpError, describe
    from pyexp.experiment import loadExperiment
    from pyexp.scheduler.cancel import cancel_experiment

    try:
        for path in args.experiments:
            print(_line(path, cancel_experiment(loadExperiment(path), args.dry_run)), flush=True)
    except (PyExpError, OSError) as e:
        print(f"{PROG}: {describe(e)}", file=sys.stderr)
        return 1
    return 0


def _line(path: str, done) -> str:
    verb = "would cancel" if done.dry_run else "cancelled"
    follow = done.followup
    chain = f"; {verb} its --until-done chain (follow-up job {follow})" if follow else ""
    if not done.job_ids:
        return f"{path}: nothing queued or running in Slurm{chain}"
    jobs = ", ".join(done.job_ids)
    tail = (
        "" if done.dry_run else "; their unfinished indices are missing (pyexp-submit reruns them)"
    )
    return f"{path}: {verb} job {jobs} ({done.tasks} array tasks){tail}{chain}"


if __name__ == "__main__":
    sys.exit(main())
