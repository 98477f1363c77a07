"""PyExpUtils' CSV results files: one file, rows of parameter values, the run, then the data."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pyexp.errors import ResultsError
from pyexp.sweep import flat_items

if TYPE_CHECKING:
    from pyexp.experiment import ExperimentDescription

logger = logging.getLogger("pyexp.results")


class CsvTable:
    """A PyExpUtils CSV results file: rows of parameter values, the run, then the data."""

    def __init__(self, path: str, lines: list[str]) -> None:
        self.path = path
        self.lines = lines
        self._by_cols: dict[int, dict[str, dict[int, list[str]]]] = {}

    def rows(
        self, exp: ExperimentDescription, header: list[str]
    ) -> dict[str, dict[int, list[str]]]:
        """{parameter columns joined by ',': {run: values}}; ResultsError if they do not fit."""
        cols = len(header)
        if cols not in self._by_cols:
            table: dict[str, dict[int, list[str]]] = {}
            for lineno, line in enumerate(self.lines, 1):
                parts = line.split(",")
                if len(parts) <= cols or not parts[cols].isdigit():
                    found = parts[cols] if len(parts) > cols else "nothing"
                    raise ResultsError(
                        f"{self.path}:{lineno}: not a PyExpUtils results row for this experiment: "
                        f"after its {cols} parameter column(s) ({','.join(header)}) comes "
                        f"{found!r}, not a run number"
                    )
                table.setdefault(",".join(parts[:cols]), {})[int(parts[cols])] = parts[cols + 1 :]
            wanted = {csv_key(exp.getPermutation(p)) for p in range(exp.numPermutations())}
            if table and not wanted & table.keys():
                raise ResultsError(
                    f"{self.path}: no row's parameter columns ({','.join(header)}) match a "
                    "permutation of this experiment; was it written for another one?"
                )
            self._by_cols[cols] = table
        return self._by_cols[cols]


def csv_key(params: dict) -> str:
    """PyExpUtils' CSV parameter columns of a permutation: its flat values, ','-joined."""
    return ",".join(str(v) for _, v in flat_items(params))


def csv_runs(
    tables: dict[str, CsvTable | None],
    exp: ExperimentDescription,
    path: str,
    runs: int | None,
    params: dict,
) -> dict[int, Any]:
    """{run: data} of one permutation in the PyExpUtils CSV file at path shared by all its runs;
    tables caches the files parsed so far (None: unreadable); runs None: those found."""
    import numpy as np  # lazy: the submit path imports no numpy

    if path not in tables:
        try:
            with open(path, encoding="utf-8") as f:
                tables[path] = CsvTable(path, f.read().splitlines())
        except (OSError, UnicodeDecodeError) as e:
            logger.warning("result file unreadable: %s (%s)", path, e)
            tables[path] = None
    table = tables[path]
    header = [k for k, _ in flat_items(params)]
    found = {} if table is None else table.rows(exp, header).get(csv_key(params), {})
    runs = runs if runs is not None else max(found, default=-1) + 1
    out: dict[int, Any] = {}
    for run in range(runs):
        try:
            out[run] = None if run not in found else np.asarray(found[run], dtype=float)
        except ValueError:
            raise ResultsError(f"{path}: run {run} of {csv_key(params)}: not numbers") from None
    return out
