"""Retries that adapt: an index whose last attempt ran out of memory is retried with twice the
memory per core of that attempt's task (capped at what one node of the config has); one whose
last attempt hit the time limit, with twice that task's time (capped at max_time_hours), in a
task of its own (so a farm index too long for its worker's time gets enough time). Each such
retry is an array of its own with those resources, its ledger entry says why, and it counts
against --max-attempts (a timeout in it is charged, reconcile.classify). At a cap, the index is
retried as it was. `pyexp-submit --no-escalate` turns this off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pyexp.indexset import IndexSet
from pyexp.scheduler import planner
from pyexp.state.attempts import OOM, TIMEOUT, Attempts
from pyexp.state.layout import state_dirs
from pyexp.state.ledger import LedgerEntry
from pyexp.timefmt import gigs

if TYPE_CHECKING:
    from pyexp.experiment import ExperimentDescription
    from pyexp.scheduler.cluster import ClusterConfig
    from pyexp.standing.reconcile import Standing


@dataclass(frozen=True)
class Retry:
    """Indices retried with more: memory per core (GB) and time (hours) of their tasks."""

    indices: IndexSet
    mem_per_core_gb: float | None
    time_hours: float
    why: str  # e.g. 'out of memory with 256M per core: 512M'


def retries(
    exp: ExperimentDescription,
    standing: Standing,
    wanted: IndexSet,
    cluster: ClusterConfig,
    entries: list[LedgerEntry],
) -> list[Retry]:
    """The indices of wanted whose last attempt (of an array among entries, the ledger) ran out
    of memory or time, grouped by the resources their retry gets."""
    keys = {i: k for i, k in {**standing.failing_keys, **standing.retried_keys}.items()}
    keys = {i: k for i, k in keys.items() if i in wanted}
    if not keys:
        return []
    latest = Attempts(state_dirs(exp).attempts).latest(set(keys.values()))
    jobs = {e.job_id: e for e in entries if e.job_id}
    groups: dict[tuple[float | None, float, str], list[int]] = {}
    for index, key in sorted(keys.items()):
        attempt = latest.get(key)
        if attempt is None or attempt.outcome not in (OOM, TIMEOUT):
            continue
        entry = jobs.get(str(attempt.info.get("job") or "").split("_")[0])
        more = more_of(attempt.outcome, entry, cluster) if entry else None
        if more is not None:
            groups.setdefault(more, []).append(index)
    return [Retry(IndexSet.of(ix), mem, hours, why) for (mem, hours, why), ix in groups.items()]


def more_of(
    outcome: str, entry: LedgerEntry, cluster: ClusterConfig
) -> tuple[float | None, float, str] | None:
    """(memory per core, time in hours, why) for a retry of an attempt of entry that ended with
    outcome; None when that is no more than it had (at a cap, or nothing known to double)."""
    mem = entry.mem_per_core_gb
    hours = (entry.time_limit_seconds or cluster.time_hours * 3600) / 3600
    if outcome == OOM:
        if mem is None:
            return None
        cap = _node_mem_per_core(cluster)
        more = min(mem * 2, cap) if cap is not None else mem * 2
        if more <= mem:
            return None
        return more, hours, f"out of memory with {gigs(mem)} per core: {gigs(more)}"
    longer = min(hours * 2, cluster.max_time_hours or math.inf)
    if longer <= hours:
        return None
    was, now = planner.clock(hours * 3600), planner.clock(longer * 3600)
    return mem, longer, f"timed out in a task of {was}: a task of its own of {now}"


def _node_mem_per_core(cluster: ClusterConfig) -> float | None:
    if cluster.mem_per_node_gb is None:
        return None
    return cluster.mem_per_node_gb / max(1, cluster.cores)


def plans(found: list[Retry], cluster: ClusterConfig, limits: planner.Limits) -> list:
    """One static array (one index per task) per retry, with its resources and why."""
    out = []
    for retry in found:
        arrays = planner.plan_arrays(
            retry.indices,
            1,
            limits.max_array_size,
            planner.throttle_of(cluster),
            cluster.cores,
            retry.time_hours,
        )
        out += [_with(a, retry) for a in arrays]
    return out


def _with(array: planner.ArrayPlan, retry: Retry) -> planner.ArrayPlan:
    return replace(array, mem_per_core_gb=retry.mem_per_core_gb, why=retry.why)
