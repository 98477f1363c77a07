"""Where a sweep stands in numbers: percentages, runtimes, an ETA, counts by a parameter's values.

Pure: it works on a Standing (reconcile.classify) and figures read elsewhere.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass

from pyexp.errors import PyExpError
from pyexp.experiment import ExperimentDescription
from pyexp.standing.placement import MAP_LIMIT
from pyexp.standing.reconcile import DONE, FAILED_OUT, MISSING, RUNNING, STATUSES, Standing
from pyexp.sweep import ABSENT, value_at

BY_LIMIT = 1_000_000  # indices of one status decoded for --by; above it, --by refuses


class BreakdownError(PyExpError, ValueError):
    """A --by breakdown that cannot be computed (unknown parameter, too many indices)."""


def percentages(counts: dict[str, int], total: int) -> dict[str, float]:
    """Each status's share of total, in percent (0 for an empty sweep)."""
    return {s: 100.0 * counts[s] / total if total else 0.0 for s in STATUSES}


@dataclass(frozen=True)
class Runtimes:
    """How long completed indices took."""

    count: int
    median: float
    p90: float


def runtimes(durations: list[float]) -> Runtimes | None:
    """Median and 90th percentile (nearest rank) of durations; None without any."""
    if not durations:
        return None
    ordered = sorted(durations)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
    return Runtimes(len(ordered), median, p90)


@dataclass(frozen=True)
class Eta:
    """Time left = remaining indices x median runtime / indices running now."""

    seconds: float
    remaining: int
    running: int
    median: float


def eta(standing: Standing, times: Runtimes | None) -> Eta | None:
    """The ETA of the indices not done and not given up; None when nothing runs or nothing has
    finished (no runtime to go by)."""
    counts = standing.counts()
    remaining = standing.total - counts[DONE] - counts[FAILED_OUT]
    running = counts[RUNNING]
    if not running or times is None or not remaining:
        return None
    return Eta(remaining * times.median / running, remaining, running, times.median)


def breakdown(exp: ExperimentDescription, standing: Standing, param: str) -> list[dict]:
    """Per value of param (a dotted name): {'value': its JSON text, status: count, ...}.

    Every status but missing is counted by decoding its indices (few: they come from records,
    leases and the queue); missing is each value's share of the sweep minus those, where a
    value's share is counted over the permutations (up to MAP_LIMIT of them) or, above, follows
    from a swept literal key's values being equally frequent.
    """
    n = exp.numPermutations()
    runs = standing.total // n if n else 0
    shares = _shares(exp, param, n)
    rows: dict[str, Counter] = {v: Counter() for v in shares}
    for status in STATUSES:
        if status == MISSING:
            continue
        indices = standing.indices(status)
        if len(indices) > BY_LIMIT:
            raise BreakdownError(
                f"--by {param}: {len(indices):,} {status} indices are too many to break down "
                f"(limit {BY_LIMIT:,})"
            )
        for i in indices:
            rows.setdefault(_label(exp.getPermutation(i), param), Counter())[status] += 1
    out = []
    for value, c in rows.items():
        c[MISSING] = shares.get(value, 0) * runs - sum(c.values())
        out.append({"value": value, **{s: c[s] for s in STATUSES}})
    return out


def _shares(exp: ExperimentDescription, param: str, n: int) -> dict[str, int]:
    """How many permutations have each value of param, in the sweep's order of values."""
    swept = exp.permutable()
    if n <= MAP_LIMIT:
        shares = Counter(_label(exp.getPermutation(p), param) for p in range(n))
    elif param in swept and not any(isinstance(v, dict) for v in swept[param]):
        values = swept[param]
        shares = Counter({_text(v): n // len(values) for v in values})
    else:
        raise BreakdownError(
            f"--by {param}: a sweep of {n:,} permutations is broken down only by a swept key "
            f"with literal values ({', '.join(sorted(swept)) or 'none'})"
        )
    if ABSENT_LABEL in shares and len(shares) == 1:
        raise BreakdownError(f"--by {param}: no permutation has that parameter")
    return dict(shares)


ABSENT_LABEL = "(absent)"


def _label(params: dict, param: str) -> str:
    value = value_at(params, param)
    return ABSENT_LABEL if value is ABSENT else _text(value)


def _text(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)
