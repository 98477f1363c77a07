"""pyexp-repair: set damaged completion segments aside, keeping every record they still hold."""

from __future__ import annotations

import argparse
import sys

from pyexp.cli.args import Parser, console
from pyexp.errors import PyExpError, describe

# Each command imports its work inside the functions that do it: `--help` and the console
# scripts start fast.


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of pyexp-repair."""
    p = Parser(prog="pyexp-repair", description=__doc__)
    p.add_argument("experiments", nargs="+", metavar="EXPERIMENT.json")
    return p.parse_args(argv)


@console
def main(argv: list[str] | None = None) -> int:
    """Repair each experiment's completion records; one line per experiment."""
    from pyexp.experiment import loadExperiment
    from pyexp.state.layout import state_dirs
    from pyexp.state.records import repair_records

    args = parse_args(argv)
    try:
        for path in args.experiments:
            folder = state_dirs(loadExperiment(path)).done
            print(f"{path}: {_summary(repair_records(folder), folder)}")
    except (PyExpError, OSError) as e:
        print(f"pyexp-repair: {describe(e)}", file=sys.stderr)
        return 1
    return 0


def _summary(report, folder: str) -> str:
    if not report.damaged:
        return f"{report.segments} segments in {folder}, none damaged"
    lost = f"; {report.lost} records could not be read and will run again" if report.lost else ""
    return (
        f"moved {len(report.damaged)} damaged segments to {', '.join(report.damaged)}, "
        f"kept the {report.salvaged} records they still held{lost}"
    )


if __name__ == "__main__":
    sys.exit(main())
