"""pyexp-adopt: record as done the indices whose result file already exists, so none is rerun."""

from __future__ import annotations

import argparse
import sys

from pyexp.cli.args import Parser, console, count, runs_for, unknown_runs

# Each command imports its work inside the functions that do it: `--help` and the console
# scripts start fast.

PROG = "pyexp-adopt"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of pyexp-adopt."""
    p = Parser(prog=PROG, description=__doc__)
    p.add_argument("experiments", nargs="+", metavar="EXPERIMENT.json")
    p.add_argument(
        "--result-file", required=True, metavar="NAME", help="e.g. returns.npy, in each save path"
    )
    p.add_argument(
        "--runs", type=count, help="runs per permutation (default: as the last pyexp-submit)"
    )
    p.add_argument(
        "--store",
        metavar="METRIC",
        help="also put each file's data into the results store as METRIC (pyexp.loadFrame)",
    )
    p.add_argument("--dry-run", action="store_true", help="count them, record nothing")
    return p.parse_args(argv)


@console
def main(argv: list[str] | None = None) -> int:
    """Adopt each experiment's existing results; the exit status."""
    args = parse_args(argv)
    from pyexp.errors import PyExpError, describe
    from pyexp.experiment import loadExperiment
    from pyexp.standing.adopt import adopt

    try:
        for path in args.experiments:
            exp = loadExperiment(path)
            runs = runs_for(exp, args.runs)
            if runs is None:
                raise PyExpError(unknown_runs(exp, path))
            adopted, already = adopt(exp, runs, args.result_file, args.dry_run, args.store)
            verb = "would adopt" if args.dry_run else "adopted"
            print(
                f"{path}: {verb} {len(adopted)} of {exp.numPermutations() * runs} indices "
                f"with {args.result_file} ({already} already done)",
                flush=True,
            )
    except (PyExpError, OSError) as e:
        print(f"{PROG}: {describe(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
