"""One time budget: whether a task still has time to start an index. The planner (before it
submits) and farm workers (before each index) decide with these same functions: the same
estimate of one index, the same signal lead and the same allowance for Slurm's early warning,
so a plan never holds a task that cannot start its work.
"""

from __future__ import annotations

import math

# slurmctld checks time limits every 30 s and sends --signal's warning at the first check
# within 30 s of (end - lead): up to 30 s early (measured 25 s early on Slurm 22.05).
EARLY_WARNING_SECONDS = 30.0
PERCENTILE = 0.9  # of measured durations: how long the next index may take
SLACK_SECONDS = 60.0  # a task of its own for one index: room to start Python and the setup


def high_percentile(values: list[float], q: float = PERCENTILE) -> float:
    """The q-quantile of values (nearest rank, so an observed value); values must not be empty."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def index_seconds(durations: list[float], index_minutes: float | None) -> float | None:
    """How long the next index may take: the high percentile of the measured durations, else
    --index-minutes, else None (unknown: nothing is held back)."""
    if durations:
        return high_percentile(durations)
    return index_minutes * 60 if index_minutes is not None else None


def usable_seconds(time_seconds: float, lead: float | None, under_slurm: bool = True) -> float:
    """Seconds from a task's start in which an index may still start: its time limit less the
    signal lead and, under Slurm, less how early Slurm's warning may come."""
    early = EARLY_WARNING_SECONDS if lead and under_slurm else 0.0
    return time_seconds - (lead or 0.0) - early


def may_start(estimate: float | None, left: float | None) -> bool:
    """Whether an index that may take estimate seconds may start with left seconds to go."""
    return left is None or left > (estimate or 0.0)


def seconds_for_one(estimate: float, lead: float | None) -> float:
    """The time limit (whole minutes) of a task that runs one index of estimate seconds."""
    needed = estimate + (lead or 0.0) + (EARLY_WARNING_SECONDS if lead else 0.0) + SLACK_SECONDS
    return math.ceil(needed / 60) * 60.0
