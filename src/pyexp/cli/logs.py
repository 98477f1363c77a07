"""pyexp-logs: the tail of every attempt of the work an index means (its parameters and run),
wherever it ran, and its array tasks' files."""

from __future__ import annotations

import argparse
import os
import sys

from pyexp.cli.args import Parser, console, count

# Each command imports its work inside the functions that do it: `--help` and the console
# scripts start fast.

PROG = "pyexp-logs"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of pyexp-logs."""
    p = Parser(prog=PROG, description=__doc__)
    p.add_argument("experiment", metavar="EXPERIMENT.json")
    p.add_argument("index", type=int, metavar="INDEX")
    p.add_argument("-n", "--lines", type=count, default=20, help="lines per attempt (default 20)")
    args = p.parse_args(argv)
    if args.index < 0:
        p.error(f"INDEX must be at least 0, got {args.index}")
    return args


@console
def main(argv: list[str] | None = None) -> int:
    """Print where the index's output is, with the tail of each attempt."""
    args = parse_args(argv)
    from pyexp.errors import PyExpError, describe
    from pyexp.experiment import loadExperiment

    try:
        print("\n".join(_lines(loadExperiment(args.experiment), args.index, args.lines)))
    except (PyExpError, OSError) as e:
        print(f"{PROG}: {describe(e)}", file=sys.stderr)
        return 1
    return 0


def _lines(exp, index: int, keep: int) -> list[str]:
    from pyexp.state.index_logs import attempts_of, task_files
    from pyexp.state.layout import log_dir
    from pyexp.state.task_logs import archived_files
    from pyexp.timefmt import amount

    attempts = attempts_of(exp, index, keep)
    work = f"index {index} (run {exp.getRun(index)}, {exp.getPermutation(index)})"
    if not attempts:
        out = [f"{work}: no log yet (it has not started)"]
    else:
        out = [f"{work}: {amount(len(attempts), 'attempt')}"]
        for n, a in enumerate(attempts, 1):
            shown = f"last {len(a.tail)} of {a.lines} lines" if a.lines > len(a.tail) else "all"
            moved = ""
            if a.index is not None and a.index != index:
                moved = f"; it ran as index {a.index}, before the sweep was edited"
            out += [f"--- attempt {n}: {a.header} ({shown}; {a.log}{moved})"]
            out += [f"  {x}" for x in a.tail]
    archived = archived_files(log_dir(exp))
    for job, f in task_files(exp, index):
        if os.path.exists(f):
            out.append(f"array task {job}: {f}")
        elif os.path.basename(f) in archived:
            archive, offset = archived[os.path.basename(f)]
            out.append(
                f"array task {job}: {os.path.basename(f)}, archived in {archive} at byte {offset}"
            )
    return out


if __name__ == "__main__":
    sys.exit(main())
