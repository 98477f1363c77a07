"""The planner: bundles and arrays, checked as properties over many inputs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyexp.scheduler.cluster import load_cluster
from pyexp.scheduler.planner import bundle, describe, plan_arrays, plan_for

missing_indices = st.lists(st.integers(0, 10**9), unique=True, max_size=3000).map(sorted)


@given(missing_indices, st.integers(1, 50), st.integers(2, 300), st.none() | st.integers(1, 64))
def test_every_index_in_exactly_one_task_in_order(indices, per_task, max_size, throttle):
    plans = plan_arrays(indices, per_task, max_size, throttle)
    flat = [i for p in plans for task in p.tasks for i in task]
    assert flat == indices  # each index once, order preserved
    for p in plans:
        assert 1 <= len(p.tasks) <= max_size - 1  # task ids 0..len-1 stay < MaxArraySize
        assert all(1 <= len(t) <= per_task for t in p.tasks)
        assert p.indices == sum(len(t) for t in p.tasks)
    tasks = [t for p in plans for t in p.tasks]
    assert all(len(t) == per_task for t in tasks[:-1])  # only the very last task is short
    assert len(plans) == -(-len(tasks) // (max_size - 1))


@given(st.integers(1, 5000), st.integers(2, 100), st.none() | st.integers(1, 64))
def test_array_spec_and_core_hours(n_tasks, max_size, throttle):
    plans = plan_arrays(range(n_tasks), 1, max_size, throttle, cores=3, time_hours=2.0)
    for p in plans:
        last = len(p.tasks) - 1
        want = f"0-{last}%{throttle}" if throttle and throttle < len(p.tasks) else f"0-{last}"
        assert p.array_spec == want
        assert last < max_size
        assert p.core_hours == len(p.tasks) * 3 * 2.0


def test_empty_plan_and_bad_arguments():
    assert plan_arrays([], 4, 1001) == []
    with pytest.raises(ValueError):
        bundle([1, 2], 0)
    with pytest.raises(ValueError):
        plan_arrays([1, 2], 1, 1)


def test_plan_for_uses_cluster_settings_and_scontrol_size():
    trillium = load_cluster("trillium")
    plans = plan_for(range(192 * 5 + 1), trillium)
    assert [len(t) for t in plans[0].tasks] == [192] * 5 + [1]
    assert plans[0].cores == 192 and plans[0].core_hours == 6 * 192 * 24
    local = load_cluster("local")  # 4 indices per task
    assert [len(p.tasks) for p in plan_for(range(100), local, max_array_size=11)] == [10, 10, 5]
    assert [len(p.tasks) for p in plan_for(range(100), local)] == [25]  # config's 1001


def test_describe_names_arrays_tasks_indices_and_core_hours():
    text = describe(plan_arrays(range(25), 2, 6, throttle=2, cores=1, time_hours=0.5))
    assert "array 0: --array=0-4%2  5 tasks  10 indices (0..9)  <= 2.5 core-hours" in text
    assert "total: 3 array(s), 13 tasks, 25 indices, <= 6.5 core-hours" in text
