"""Planning, pure: missing indices -> farm pools or static task bundles -> job arrays that fit
under MaxArraySize and the user's room in the queue.

Farm mode (the default): one array of `workers` tasks that pull indices from one pool; as many
workers as the expected work fills (index time x missing / (task time x cores)), capped by the
room left in the queue, MaxArraySize and missing / cores; before anything is measured (and
without --index-minutes), a pilot of PILOT_WORKERS. Static mode (--indices-per-task N):
task t of an array runs the N indices after t * N, as pyexp always did.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, replace

from pyexp import budget
from pyexp.errors import PyExpError
from pyexp.indexset import IndexSet
from pyexp.scheduler.cluster import ClusterConfig
from pyexp.state.ledger import FARM, STATIC  # the ledger records a plan's mode
from pyexp.timefmt import amount

DEFAULT_INDEX_MINUTES = 10.0  # nothing finished yet and no --index-minutes
PILOT_WORKERS = 4  # a farm before anything is measured: the next round sizes from what it measures
SANE_MISSING = 10**7  # more missing indices than this needs --yes: likely a sweep typo
MAX_STATIC_TASKS = 10**5  # static bundles beyond this would plan lists of too many tasks


class PlanError(PyExpError, ValueError):
    """A plan that cannot be made (one line, shown to the user)."""


@dataclass(frozen=True)
class ArrayPlan:
    """One job array over `pool`: farm (per_task 0): task_count workers pull from the pool;
    static: task t runs the per_task indices from position t * per_task of the pool."""

    pool: IndexSet
    task_count: int
    per_task: int
    throttle: int | None
    cores: int
    time_hours: float
    mem_per_core_gb: float | None = None  # None: the cluster config's
    why: str = ""  # a retry with more memory or time (scheduler/escalate.py): why

    @property
    def mode(self) -> str:
        """'farm' or 'static'."""
        return STATIC if self.per_task else FARM

    @property
    def tasks(self) -> list[list[int]]:
        """Static: each task's indices; farm: [] (workers own no fixed indices)."""
        if not self.per_task:
            return []
        step = self.per_task
        return [self.pool.take(t * step, step).first(step) for t in range(self.task_count)]

    @property
    def indices(self) -> int:
        """How many indices the array runs."""
        return len(self.pool)

    @property
    def array_spec(self) -> str:
        """The value of sbatch --array: '0-N', with '%throttle' when that limits anything."""
        n = self.task_count
        limits = self.throttle is not None and self.throttle < n
        return f"0-{n - 1}%{self.throttle}" if limits else f"0-{n - 1}"

    @property
    def core_hours(self) -> float:
        """Core-hours the array may use at most: every task for its whole time limit."""
        return self.task_count * self.cores * self.time_hours


@dataclass(frozen=True)
class Estimate:
    """How long one index takes: typical (median, for sizing), mean (for totals), and how long
    it may take (budget.index_seconds, for whether it fits; None: unknown)."""

    seconds: float
    mean: float
    source: str  # e.g. 'median of 40 finished indices'
    fit: float | None = None
    fit_source: str = ""  # e.g. 'p90 of 40 done'


def estimate(durations: list[float], index_minutes: float | None = None) -> Estimate:
    """For sizing: --index-minutes if given, else the measured durations' median, else the
    default; for fitting: budget.index_seconds, as farm workers decide."""
    fit = budget.index_seconds(durations, index_minutes)
    if durations:
        fit_source = f"p{budget.PERCENTILE * 100:.0f} of {len(durations)} done"
    else:
        fit_source = f"--index-minutes {index_minutes:g}" if index_minutes is not None else ""
    if index_minutes is not None:
        s = index_minutes * 60
        return Estimate(s, s, f"--index-minutes {index_minutes:g}", fit, fit_source)
    if durations:
        median, mean = statistics.median(durations), statistics.fmean(durations)
        return Estimate(median, mean, f"median of {len(durations)} done", fit, fit_source)
    s = DEFAULT_INDEX_MINUTES * 60
    return Estimate(s, s, f"default {DEFAULT_INDEX_MINUTES:g} min: nothing finished yet")


@dataclass(frozen=True)
class Limits:
    """What caps a submission: array tasks the user may still queue (None: no known limit),
    tasks that may run at once (None: no known limit), and Slurm's MaxArraySize; and the
    runner's stop grace that ends before Slurm's KillWait (None: the runner's default)."""

    room: int | None
    max_array_size: int
    running: int | None = None
    source: str = ""  # where room came from, e.g. 'sacctmgr MaxSubmitJobs 1000'
    grace_seconds: int | None = None


@dataclass(frozen=True)
class Plan:
    """The arrays to submit, why this mode and size, and how many indices wait for room."""

    arrays: list[ArrayPlan]
    mode: str
    why: str
    waiting: int
    estimate: Estimate

    @property
    def tasks(self) -> int:
        """Array tasks in all arrays."""
        return sum(a.task_count for a in self.arrays)


def plan_submission(
    missing: IndexSet,
    cluster: ClusterConfig,
    limits: Limits,
    est: Estimate,
    workers: int | None = None,
    per_task: int | None = None,
    started_nothing: float | None = None,
) -> Plan:
    """The plan for missing: static bundles when per_task is given, else a farm pool whose
    workers can start their work (budget.may_start, as they decide; started_nothing: the time
    limit of a farm task that started nothing with this estimate), else one index per task with
    the time it needs."""
    if per_task is not None:
        return _static(missing, cluster, limits, est, per_task, f"--indices-per-task {per_task}")
    time_seconds = cluster.time_hours * 3600
    capacity = budget.usable_seconds(time_seconds, cluster.signal_lead_seconds)
    if started_nothing is not None and time_seconds <= started_nothing:
        capacity = min(capacity, 0.0)  # seen: its workers could not start (Python, setup)
    if not budget.may_start(est.fit, capacity):
        return _one_per_task(missing, cluster, limits, est, capacity)
    return _farm(missing, cluster, limits, est, capacity, workers)


def _one_per_task(
    missing: IndexSet, cluster: ClusterConfig, limits: Limits, est: Estimate, capacity: float
) -> Plan:
    need = est.fit if est.fit is not None else est.seconds
    source = est.fit_source or est.source
    seconds = budget.seconds_for_one(need, cluster.signal_lead_seconds)
    where = (
        f"one index (~{clock(need)}, {source}) cannot start in a task of "
        f"{clock(cluster.time_hours * 3600)} ({clock(max(capacity, 0))} before its signal lead "
        "and Slurm's early warning)"
    )
    most = cluster.max_time_hours
    if most is not None and seconds > most * 3600:
        raise PlanError(
            f"{where}, nor in the cluster's max_time_hours {most:g}; split the work of one "
            "index or checkpoint it so it continues across tasks"
        )
    own = replace(cluster, time_hours=seconds / 3600)
    return _static(missing, own, limits, est, 1, f"{where}: one index per task of {clock(seconds)}")


def _farm(
    missing: IndexSet,
    cluster: ClusterConfig,
    limits: Limits,
    est: Estimate,
    capacity: float,
    asked: int | None,
) -> Plan:
    useful = math.ceil(len(missing) / cluster.cores)  # more workers would find nothing to take
    caps = {
        "missing / cores": useful,
        "MaxArraySize": limits.max_array_size - 1,
        f"room in the queue ({limits.source})": limits.room,
        "jobs that may run at once": limits.running,
        f"max_running_jobs {cluster.max_running_jobs}": cluster.max_running_jobs,
    }
    if asked is not None:
        want, why = asked, f"--workers {asked}"
    elif est.fit is None:  # nothing measured and no --index-minutes
        want = PILOT_WORKERS
        why = (
            f"a pilot of {amount(want, 'worker')}: nothing measured yet (the next submit sizes "
            "the farm from what they measure; --index-minutes or --workers set it now)"
        )
    else:
        want = math.ceil(est.seconds * len(missing) / (capacity * cluster.cores))
        why = (
            f"{amount(len(missing), 'index', 'indices')} x ~{clock(est.seconds)} ({est.source}) "
            f"fill {amount(want, 'task')} of {clock(capacity)} x {amount(cluster.cores, 'core')}"
        )
    n, capped = max(1, want), ""
    for name, cap in caps.items():
        if cap is not None and cap < n:
            n, capped = cap, name
    why += f", capped by {capped}" if capped else ""
    if n < 1:
        return Plan([], FARM, why, len(missing), est)
    array = ArrayPlan(missing, n, 0, throttle_of(cluster), cluster.cores, cluster.time_hours)
    return Plan([array], FARM, why, 0, est)


def _static(
    missing: IndexSet,
    cluster: ClusterConfig,
    limits: Limits,
    est: Estimate,
    per_task: int,
    why: str,
) -> Plan:
    if per_task < 1:
        raise PlanError(f"indices per task must be at least 1, got {per_task}")
    tasks = math.ceil(len(missing) / per_task)
    if limits.room is not None and limits.room < tasks:
        tasks = max(0, limits.room)
        why += f", {amount(tasks, 'task')} fit in the queue ({limits.source})"
    if tasks > MAX_STATIC_TASKS:
        raise PlanError(
            f"static bundles would make {tasks} array tasks (more than {MAX_STATIC_TASKS}; "
            f"{why}); use farm mode or a larger --indices-per-task"
        )
    pool = missing.take(0, tasks * per_task)
    size, throttle = limits.max_array_size, throttle_of(cluster)
    arrays = plan_arrays(pool, per_task, size, throttle, cluster.cores, cluster.time_hours)
    return Plan(arrays, STATIC, why, len(missing) - len(pool), est)


def plan_arrays(
    indices: Iterable[int] | IndexSet,
    per_task: int,
    max_array_size: int,
    throttle: int | None = None,
    cores: int = 1,
    time_hours: float = 1.0,
) -> list[ArrayPlan]:
    """Static arrays of at most max_array_size - 1 tasks (task ids stay below MaxArraySize)."""
    if max_array_size < 2:
        raise ValueError(f"max array size must be at least 2, got {max_array_size}")
    if per_task < 1:
        raise ValueError(f"indices per task must be at least 1, got {per_task}")
    pool = indices if isinstance(indices, IndexSet) else IndexSet.of(indices)
    step = (max_array_size - 1) * per_task  # indices per full array
    out = []
    for offset in range(0, len(pool), step):
        part = pool.take(offset, step)
        tasks = math.ceil(len(part) / per_task)
        out.append(ArrayPlan(part, tasks, per_task, throttle, cores, time_hours))
    return out


def plan_for(
    indices: Iterable[int], cluster: ClusterConfig, max_array_size: int | None = None
) -> list[ArrayPlan]:
    """Static arrays with a cluster's settings; max_array_size from scontrol, else the config's."""
    return plan_arrays(
        indices,
        cluster.indices_per_task,
        max_array_size or cluster.max_array_size,
        throttle_of(cluster),
        cluster.cores,
        cluster.time_hours,
    )


def throttle_of(cluster: ClusterConfig) -> int | None:
    """An array's %N: the config's array_throttle, else its max_running_jobs (no array runs
    more tasks at once than the user may run jobs)."""
    return cluster.array_throttle or cluster.max_running_jobs


def bundle(indices: Iterable[int], per_task: int) -> list[list[int]]:
    """Consecutive groups of per_task indices (the last may be shorter), in order."""
    if per_task < 1:
        raise ValueError(f"indices per task must be at least 1, got {per_task}")
    as_list = list(indices)
    return [as_list[i : i + per_task] for i in range(0, len(as_list), per_task)]


@dataclass(frozen=True)
class Expected:
    """What a plan is expected to cost from the estimate, and at most (every task's limit)."""

    makespan: float  # seconds, if the queue starts tasks as they fit
    core_hours: float
    bound_makespan: float
    bound_core_hours: float


def expected(plan: Plan) -> Expected:
    """Expected makespan and core-hours from the mean index time; the upper bounds."""
    span = bound = hours = bound_hours = 0.0
    for a in plan.arrays:
        limit = a.time_hours * 3600
        slots = min(a.task_count, a.throttle or a.task_count)
        waves = math.ceil(a.task_count / slots)
        work = a.indices * plan.estimate.mean  # seconds of one core
        if a.per_task:  # a task runs its bundle, cores at a time; tasks go in waves
            task = math.ceil(a.per_task / a.cores) * plan.estimate.mean
            span = max(span, waves * min(task, limit))
        else:  # workers share the pool: the work spreads over every running slot
            span = max(span, min(work / (slots * a.cores), limit * waves))
        bound = max(bound, waves * limit)
        hours += work / 3600
        bound_hours += a.core_hours
    return Expected(span, min(hours, bound_hours), bound, bound_hours)


def describe(plans: list[ArrayPlan], shown: int = 5) -> str:
    """A human summary: one line per array (the first `shown`) and a total."""
    lines = []
    for n, p in enumerate(plans[:shown]):
        first, last = p.pool.ranges[0][0], p.pool.ranges[-1][1] - 1
        what = "worker" if p.mode == FARM else "task"
        lines.append(
            f"  array {n}: --array={p.array_spec}  {amount(p.task_count, what)}  "
            f"{amount(p.indices, 'index', 'indices')} "
            f"({first}..{last})  <= {p.core_hours:g} core-hours"
        )
    if len(plans) > shown:
        lines.append(f"  ... and {len(plans) - shown} more arrays like these")
    tasks = sum(p.task_count for p in plans)
    indices = sum(p.indices for p in plans)
    hours = sum(p.core_hours for p in plans)
    lines.append(
        f"  total: {amount(len(plans), 'array')}, {amount(tasks, 'task')}, "
        f"{amount(indices, 'index', 'indices')}, <= {hours:g} core-hours"
    )
    return "\n".join(lines)


def clock(seconds: float) -> str:
    """A duration for people: '45 s', '12 min', '3.5 h', '2.1 days'."""
    if seconds < 90:
        return f"{seconds:.3g} s"
    if seconds < 5400:
        return f"{seconds / 60:.3g} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86400:.3g} days"
