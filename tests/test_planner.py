"""The planner: bundles and arrays, checked as properties over many inputs."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyexp import budget
from pyexp.indexset import IndexSet
from pyexp.scheduler.cluster import load_cluster
from pyexp.scheduler.planner import (
    DEFAULT_INDEX_MINUTES,
    PILOT_WORKERS,
    Estimate,
    Limits,
    PlanError,
    bundle,
    clock,
    describe,
    estimate,
    expected,
    plan_arrays,
    plan_for,
    plan_submission,
)

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
    assert "total: 3 arrays, 13 tasks, 25 indices, <= 6.5 core-hours" in text


# Farm and limit-aware planning (plan_submission).

index_sets = st.lists(st.tuples(st.integers(0, 10**12), st.integers(1, 10**6)), max_size=20).map(
    lambda spans: IndexSet((a, a + n) for a, n in spans)
)
limits = st.builds(
    Limits,
    room=st.none() | st.integers(0, 2000),
    max_array_size=st.integers(2, 5001),
    running=st.none() | st.integers(1, 500),
    source=st.just("test"),
)


def _cluster(cores=1, hours=1.0, lead=60, throttle=None):
    return replace(
        load_cluster("local"), cores=cores, time_hours=hours, signal_lead_seconds=lead,
        array_throttle=throttle,
    )  # fmt: skip


@settings(deadline=None)
@given(
    index_sets,
    limits,
    st.integers(1, 192),
    st.floats(0.01, 10**4),  # shorter than a task: farm (longer: test_an_index_longer_...)
    st.none() | st.integers(1, 10**4),
)
def test_farm_pool_holds_every_missing_index_once_and_workers_stay_within_limits(
    missing, lim, cores, seconds, asked
):
    est = Estimate(seconds, seconds, "test")
    plan = plan_submission(missing, _cluster(cores, hours=3), lim, est, workers=asked)
    if not missing:
        return
    if not plan.arrays:
        assert lim.room == 0 and plan.waiting == len(missing)
        return
    (array,) = plan.arrays
    assert array.pool == missing and plan.waiting == 0
    assert 1 <= array.task_count <= lim.max_array_size - 1
    assert array.task_count <= -(-len(missing) // cores)
    for cap in (lim.room, lim.running, asked):
        assert cap is None or array.task_count <= cap


@settings(deadline=None)
@given(missing_indices, limits, st.integers(1, 20))
def test_static_bundles_take_every_index_once_or_leave_it_waiting(indices, lim, per_task):
    missing = IndexSet.of(indices)
    plan = plan_submission(missing, _cluster(), lim, Estimate(1, 1, "t"), per_task=per_task)
    flat = [i for a in plan.arrays for task in a.tasks for i in task]
    assert flat == indices[: len(flat)]  # the first ones, in order, each once
    assert len(flat) + plan.waiting == len(indices)
    assert lim.room is None or plan.tasks <= lim.room
    assert all(a.task_count <= lim.max_array_size - 1 for a in plan.arrays)


def test_farm_workers_follow_the_expected_work():
    missing, lim = IndexSet.span(0, 1000), Limits(None, 1001)
    # 1000 x 6 min = 100 h of work in tasks of 1 h less a 1 min lead and 30 s of Slurm's early
    # warning: 103 workers
    plan = plan_submission(missing, _cluster(), lim, estimate([], index_minutes=6))
    assert plan.mode == "farm" and plan.tasks == 103
    assert "1000 indices x ~6 min (--index-minutes 6)" in plan.why
    on_4_cores = plan_submission(missing, _cluster(cores=4), lim, estimate([], 6))
    assert on_4_cores.tasks == 26
    capped = plan_submission(
        missing, _cluster(), Limits(7, 1001, None, "max_queued_jobs 7"), plan.estimate
    )
    assert capped.tasks == 7 and "capped by room in the queue (max_queued_jobs 7)" in capped.why
    tiny = plan_submission(IndexSet.span(0, 3), _cluster(cores=8), lim, estimate([], 50))
    assert (
        tiny.tasks == 1
    )  # 150 min of work on 8 cores; more workers than missing / cores would find nothing to take


def test_max_running_jobs_caps_farm_workers_and_throttles_static_arrays():
    lim = Limits(None, 1001)
    trillium = load_cluster("trillium")  # 500 queued, 150 running, 192 cores, 24 h
    farm = plan_submission(IndexSet.span(0, 10**6), trillium, lim, estimate([], 60))
    assert farm.tasks == 150 and farm.why.endswith("capped by max_running_jobs 150")
    missing = IndexSet.span(0, 10**5)
    assert plan_submission(missing, trillium, lim, farm.estimate, workers=52).tasks == 52
    assert plan_submission(missing, trillium, lim, farm.estimate, workers=400).tasks == 150
    static = plan_submission(missing, trillium, lim, farm.estimate, per_task=192)
    assert [a.array_spec for a in static.arrays] == ["0-520%150"]
    assert static.arrays[0].throttle == 150
    own = replace(trillium, array_throttle=20)  # an explicit array_throttle wins
    assert plan_submission(missing, own, lim, farm.estimate, per_task=192).arrays[0].throttle == 20
    unlimited = plan_submission(missing, _cluster(), lim, estimate([], 6), per_task=100)
    assert unlimited.arrays[0].array_spec == "0-999"  # 1000 tasks, none held back


def test_an_index_longer_than_a_task_gets_a_task_of_its_own_with_the_time_it_needs():
    plan = plan_submission(
        IndexSet.span(0, 10), _cluster(hours=1), Limits(None, 1001), estimate([], 90)
    )
    assert plan.mode == "static" and plan.tasks == 10 and "cannot start" in plan.why
    # 90 min + 60 s lead + 30 s early warning + a minute to start: 93 min
    assert [a.time_hours * 60 for a in plan.arrays] == [93]


@pytest.mark.parametrize(
    ("hours", "lead", "durations"),
    [
        (1 / 60, 30, [1.0] * 6),  # 1-minute tasks, 30 s lead: no time left to start anything
        (3, 120, [2.75 * 3600] * 8 + [2.97 * 3600] * 2),  # median 2h45, p90 2h58 under 3 h
    ],
)
def test_a_plan_never_holds_a_farm_whose_workers_cannot_start_an_index(hours, lead, durations):
    cluster = replace(_cluster(hours=hours, lead=lead), max_time_hours=24)
    est = estimate(durations)
    plan = plan_submission(IndexSet.span(0, 6), cluster, Limits(None, 1001), est)
    (array,) = plan.arrays
    usable = budget.usable_seconds(array.time_hours * 3600, lead)
    assert budget.may_start(est.fit, usable)  # the worker's own rule lets it start
    assert plan.mode == "static" and array.per_task == 1 and array.task_count == 6
    assert "cannot start" in plan.why and f"p90 of {len(durations)} done" in plan.why


def test_an_index_that_fits_no_task_the_cluster_allows_is_refused_in_one_line():
    cluster = replace(_cluster(hours=24), max_time_hours=24)
    with pytest.raises(PlanError, match="nor in the cluster's max_time_hours 24") as e:
        plan_submission(IndexSet.span(0, 3), cluster, Limits(None, 1001), estimate([24 * 3600.0]))
    assert "\n" not in str(e.value)


def test_an_unmeasured_sweep_is_not_held_back_by_the_default_guess():
    # workers start any index while nothing is measured; the plan holds a farm then
    cluster, lim = _cluster(hours=0.1), Limits(None, 1001)
    plan = plan_submission(IndexSet.span(0, 6), cluster, lim, estimate([]))
    assert plan.mode == "farm"


def test_estimate_prefers_the_flag_then_the_measured_median_then_the_default():
    assert estimate([1, 2, 30], index_minutes=2).seconds == 120
    measured = estimate([1, 2, 30])
    assert (measured.seconds, measured.mean, measured.source) == (2, 11, "median of 3 done")
    assert estimate([]).seconds == DEFAULT_INDEX_MINUTES * 60


def test_expected_makespan_and_core_hours_from_the_mean_with_upper_bounds():
    est = Estimate(60, 60, "t")  # a minute per index
    plan = plan_submission(
        IndexSet.span(0, 120), _cluster(hours=1), Limits(None, 1001), est, workers=4
    )
    e = expected(plan)
    assert e.makespan == 30 * 60 and e.core_hours == 2  # 120 min of work over 4 workers
    assert e.bound_makespan == 3600 and e.bound_core_hours == 4
    throttled = plan_submission(
        IndexSet.span(0, 120), _cluster(throttle=2), Limits(None, 1001), est, per_task=30
    )
    assert expected(throttled).makespan == 2 * 30 * 60  # 4 tasks of 30 min, 2 at a time


def test_a_trillion_missing_indices_plan_without_enumerating():
    missing = IndexSet.span(0, 10**12) - IndexSet.span(5, 10)
    start = time.monotonic()
    plan = plan_submission(missing, _cluster(), Limits(1000, 1001, None, "t"), estimate([5.0]))
    assert plan.tasks == 1000 and plan.arrays[0].pool == missing
    assert (
        plan_submission(missing, _cluster(), Limits(3, 1001), estimate([]), per_task=2).waiting
        == len(missing) - 6
    )
    with pytest.raises(PlanError, match="would make"):
        plan_submission(missing, _cluster(), Limits(None, 1001), estimate([]), per_task=1)
    assert time.monotonic() - start < 10  # enumerating 10**12 would take hours; loaded: seconds


def test_clock():
    assert [clock(s) for s in (5, 600, 3 * 3600, 5 * 86400)] == ["5 s", "10 min", "3 h", "5 days"]


def test_a_farm_seen_starting_nothing_is_never_planned_again_unchanged():
    cluster, lim = _cluster(hours=0.5, lead=60), Limits(None, 1001)
    est = estimate([1.0] * 6)  # fits on paper: 30 min less 90 s
    assert plan_submission(IndexSet.span(0, 6), cluster, lim, est).mode == "farm"
    # ...but a worker of a 30-minute task started nothing (its Python and setup took the rest)
    again = plan_submission(IndexSet.span(0, 6), cluster, lim, est, started_nothing=1800.0)
    assert again.mode == "static" and again.arrays[0].per_task == 1
    assert again.arrays[0].time_hours * 3600 == budget.seconds_for_one(1.0, 60)
    longer = replace(cluster, time_hours=1.0)  # a longer task was never seen failing to start
    assert plan_submission(IndexSet.span(0, 6), longer, lim, est, started_nothing=1800.0).mode == (
        "farm"
    )


def test_an_unmeasured_farm_is_a_pilot_and_the_next_round_sizes_from_what_it_measured():
    missing, lim = IndexSet.span(0, 1000), Limits(None, 1001)
    pilot = plan_submission(missing, _cluster(hours=0.25), lim, estimate([]))
    assert pilot.mode == "farm" and pilot.tasks == PILOT_WORKERS
    assert pilot.why.startswith(f"a pilot of {PILOT_WORKERS} workers: nothing measured yet")
    # measured: 8 min each -> 8000 min of work in tasks of 15 min less 90 s: 593 workers
    sized = plan_submission(missing, _cluster(hours=0.25), lim, estimate([480.0] * 10))
    assert sized.tasks == 593
    quick = plan_submission(missing, _cluster(hours=0.25), lim, estimate([0.01] * 10))
    assert quick.tasks == 1  # indices that take no time: one worker, not hundreds
    flag = plan_submission(missing, _cluster(hours=0.25), lim, estimate([], index_minutes=8))
    assert flag.tasks == 593  # --index-minutes sizes it at once
    asked = plan_submission(missing, _cluster(hours=0.25), lim, estimate([]), workers=9)
    assert asked.tasks == 9
