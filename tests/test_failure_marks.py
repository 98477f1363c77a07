"""A farm worker's failure marks its lease: its array does not retry the index even where the
attempts folder looks empty (a cache), and a later array does, at once."""

import os
import time
from pathlib import Path

import pytest
from runner_helpers import Project

from pyexp.indexset import IndexSet
from pyexp.job_environment import JobEnvironment
from pyexp.runner.claim import ClaimWorker
from pyexp.runner.pool import PoolClaims
from pyexp.state.attempts import Attempts
from pyexp.state.layout import state_dirs
from pyexp.state.leases import (
    CLOCK_SKEW,
    FAILURE,
    RETAIN_LEASES,
    SUFFIX,
    failed_arrays,
    held_keys,
    sweep_tombstones,
)


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


def test_failure_marks_are_swept_by_their_time_and_lease_duration_and_hold_no_lease(tmp_path):
    old, new = tmp_path / "old.lease", tmp_path / "new.lease"
    written = time.time() - RETAIN_LEASES * 2 - CLOCK_SKEW - 5  # of a 2 s lease
    old.write_bytes(FAILURE + f"{written:.3f} elsewhere 2 100 -\n".encode())
    os.utime(old, (written, written))
    new.write_bytes(FAILURE + f"{time.time():.3f} elsewhere 2 100\n".encode())
    os.utime(new, (written, written))  # a cached old mtime only preselects
    assert failed_arrays(old.read_bytes()) == ["100", ""]
    assert sweep_tombstones(str(tmp_path)) == 1
    assert not old.exists() and new.exists()
    assert held_keys(str(tmp_path), 2.0) == {}
