"""pyexp-run: run indices of an experiment under leases, recording each success.

  pyexp-run --ledger STATE/ledger/ID.json [--task N]     inside a Slurm array task
  pyexp-run EXPERIMENT.json --indices 0-9,12 [--runs R]  directly, on any machine

The command comes from --command, else the ledger entry, else config.json's "command";
placeholders {experiment}, {index} and {run} fill single arguments (no shell is involved;
inside a `sh -c` script of your own, pass them as "$1" instead). With --ledger, {experiment}
is a frozen copy of the experiment as submitted (PYEXP_SNAPSHOT), which loadExperiment names
after the original (PYEXP_EXPERIMENT). The command also sees PYEXP_INDEX, PYEXP_RUN,
PYEXP_EXPERIMENT and PYEXP_SAVE_PATH. Its output goes to
<log_path>/<experiment>/<index>.log. Exit status: 0 when every index is done (or left to a
live runner elsewhere), 1 when one failed or lost its lease, 2 on bad usage, 128+N on signal N.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from pyexp.cli.args import Parser, console, count
from pyexp.job_environment import EARLY_SIGNAL


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of pyexp-run."""
    p = Parser(
        prog="pyexp-run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "experiment", nargs="?", metavar="EXPERIMENT.json", help="run this file's indices"
    )
    p.add_argument("--ledger", metavar="PATH", help="the ledger entry of this job array")
    p.add_argument("--task", type=int, help="array task (default: $SLURM_ARRAY_TASK_ID)")
    p.add_argument("--indices", help="indices to run, e.g. 0-9,12 (with EXPERIMENT.json)")
    p.add_argument("--runs", type=count, help="runs per permutation; alone: every index of R runs")
    p.add_argument("--command", help='e.g. "python src/main.py -e {experiment} -i {index}"')
    p.add_argument(
        "--parallel",
        type=count,
        metavar="N",
        help="indices at once (default: the entry's cores, else $SLURM_CPUS_PER_TASK, else 1)",
    )
    args = p.parse_args(argv)
    if (args.ledger is None) == (args.experiment is None):
        p.error("give either --ledger PATH or EXPERIMENT.json")
    if args.ledger is not None and (args.indices or args.runs):
        p.error("--indices and --runs go with EXPERIMENT.json, not --ledger")
    return args


def _note_stop_signals() -> None:
    """Until the runner watches signals itself, a stop signal from Slurm (USR1, TERM) is noted
    in PYEXP_EARLY_SIGNAL, as the array script notes one that comes before pyexp-run: the
    runner then starts no index and exits as stopped."""

    def note(signum: int, frame: object) -> None:
        os.environ.setdefault(EARLY_SIGNAL, signal.Signals(signum).name.removeprefix("SIG"))

    for signum in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(signum, note)


@console
def main(argv: list[str] | None = None) -> int:
    """Run the requested indices; 0 when all succeeded, 2 on bad usage, 128+N on signal N."""
    _note_stop_signals()
    args = parse_args(argv)
    # Imported here so that `--help` and importing this module stay fast.
    from pyexp import runner
    from pyexp.config import load_config
    from pyexp.environment import config_file
    from pyexp.errors import PyExpError, describe

    try:
        if args.ledger is not None:
            # An array task uses the config its script exports: the one pyexp-submit used.
            env = config_file()
            config = load_config(env) if env else None
            return runner.run_ledger(args.ledger, args.task, args.command, args.parallel, config)
        return runner.run_direct(
            args.experiment, args.indices, args.runs, args.command, args.parallel
        )
    except (PyExpError, OSError) as e:
        print(f"pyexp-run: {describe(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the runner's own handler is installed, or after
        print("pyexp-run: interrupted", file=sys.stderr)
        return 128 + 2


if __name__ == "__main__":
    sys.exit(main())
