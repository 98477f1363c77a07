"""Planning, pure: missing indices -> task bundles -> job arrays that fit under MaxArraySize."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyexp.scheduler.cluster import ClusterConfig


@dataclass(frozen=True)
class ArrayPlan:
    """One job array: task t runs the indices tasks[t]."""

    tasks: list[list[int]]
    throttle: int | None
    cores: int
    time_hours: float

    @property
    def indices(self) -> int:
        """How many indices the array runs."""
        return sum(len(t) for t in self.tasks)

    @property
    def array_spec(self) -> str:
        """The value of sbatch --array: '0-N', with '%throttle' when that limits anything."""
        n = len(self.tasks)
        limits = self.throttle is not None and self.throttle < n
        return f"0-{n - 1}%{self.throttle}" if limits else f"0-{n - 1}"

    @property
    def core_hours(self) -> float:
        """Core-hours the array may use at most: every task for its whole time limit."""
        return len(self.tasks) * self.cores * self.time_hours


def bundle(indices: Sequence[int], per_task: int) -> list[list[int]]:
    """Consecutive groups of per_task indices (the last may be shorter), in order."""
    if per_task < 1:
        raise ValueError(f"indices per task must be at least 1, got {per_task}")
    as_list = list(indices)
    return [as_list[i : i + per_task] for i in range(0, len(as_list), per_task)]


def plan_arrays(
    indices: Sequence[int],
    per_task: int,
    max_array_size: int,
    throttle: int | None = None,
    cores: int = 1,
    time_hours: float = 1.0,
) -> list[ArrayPlan]:
    """Arrays of at most max_array_size - 1 tasks, so every task id stays below MaxArraySize."""
    if max_array_size < 2:
        raise ValueError(f"max array size must be at least 2, got {max_array_size}")
    tasks = bundle(indices, per_task)
    step = max_array_size - 1
    return [
        ArrayPlan(tasks[i : i + step], throttle, cores, time_hours)
        for i in range(0, len(tasks), step)
    ]


def plan_for(
    indices: Sequence[int], cluster: ClusterConfig, max_array_size: int | None = None
) -> list[ArrayPlan]:
    """The plan with a cluster's settings; max_array_size from scontrol, else the config's."""
    return plan_arrays(
        indices,
        cluster.indices_per_task,
        max_array_size or cluster.max_array_size,
        cluster.array_throttle,
        cluster.cores,
        cluster.time_hours,
    )


def describe(plans: list[ArrayPlan]) -> str:
    """A human summary: one line per array and a total."""
    lines = []
    for n, p in enumerate(plans):
        first, last = p.tasks[0][0], p.tasks[-1][-1]
        lines.append(
            f"  array {n}: --array={p.array_spec}  {len(p.tasks)} tasks  {p.indices} indices "
            f"({first}..{last})  <= {p.core_hours:g} core-hours"
        )
    tasks = sum(len(p.tasks) for p in plans)
    indices = sum(p.indices for p in plans)
    hours = sum(p.core_hours for p in plans)
    lines.append(
        f"  total: {len(plans)} array(s), {tasks} tasks, {indices} indices, <= {hours:g} core-hours"
    )
    return "\n".join(lines)
