"""A farm worker's failure marks its lease: its array does not retry the index even where the
attempts folder looks empty (a cache), and a later array does, at once."""

from pathlib import Path

import pytest
from runner_helpers import Project

from pyexp.indexset import IndexSet
from pyexp.job_environment import JobEnvironment
from pyexp.runner.claim import ClaimWorker
from pyexp.runner.pool import PoolClaims
from pyexp.state.attempts import Attempts
from pyexp.state.layout import state_dirs
from pyexp.state.leases import FAILURE, SUFFIX, failed_arrays, held_keys


def work(project: Project, path: Path, array: str, task: int, fail: bool = False) -> list[int]:
    """The indices one in-process farm worker of array ran (each raises if fail)."""
    exp = project.load(path)
    claims = PoolClaims(exp, IndexSet.span(0, 1), task, 2, array, say=lambda _: None)
    job = JobEnvironment(array_job_id=array, array_task_id=str(task))
    ran = []
    for claimed in ClaimWorker(exp, claims, job):
        with claimed:
            ran.append(claimed.index)
            if fail:
                raise ValueError("boom")
    return ran


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def test_a_failure_is_not_retried_by_its_array_through_a_hidden_listing_but_by_a_later_one(
    project, monkeypatch
):
    path = project.experiment("marks", {"x": [1]})
    assert work(project, path, "100", 0, fail=True) == [0]
    leases = state_dirs(project.load(path)).leases
    (marker,) = Path(leases).glob(f"*{SUFFIX}")
    body = marker.read_bytes()
    assert body.startswith(FAILURE) and failed_arrays(body) == ["100"]
    assert held_keys(leases) == {}  # a failure mark has no holder
    monkeypatch.setattr(Attempts, "names", lambda self: [])  # the failure not listed yet
    assert work(project, path, "100", 1) == []
    assert work(project, path, "200", 0, fail=True) == [0]
    assert failed_arrays(marker.read_bytes()) == ["100", "200"]  # both arrays stay named
    assert work(project, path, "100", 1) == [] and work(project, path, "200", 1) == []
    monkeypatch.undo()
    assert len(project.attempts(path)) == 2
