"""A sweep converges on its own, on the real single-node Slurm of scripts/slurm-local.sh: one
time budget for planner and workers, pilots, chained rounds (--until-done), the --then hook."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from test_slurm_e2e import Project, _wait_gone

pytestmark = pytest.mark.slurm


def _minute_cluster(project: Project, lead: int = 30, **fields) -> str:
    path = project.root / "minute.json"
    base = {"time_hours": 1 / 60, "signal_lead_seconds": lead, "mem_per_core_gb": 0.25}
    path.write_text(json.dumps({**base, "account_required": False, **fields}))
    return str(path)


def test_a_farm_no_worker_could_start_is_never_planned_runs_one_index_per_task(tmp_path):
    # 6 indices measured at ~0 s under 1-minute tasks with a 30 s signal lead: a farm worker
    # has 60 - 30 - 30 s (Slurm's early warning) to start an index, so it could start none and
    # every submit sent the same farm again. Now: one index per task with the time it needs.
    project = Project(tmp_path, 6)
    assert project.submit("--runs", "1", "--local").returncode == 0  # measured
    cluster = _minute_cluster(project)
    first = project.submit("--runs", "2", cluster=cluster)
    assert first.returncode == 0, first.stderr
    assert "submitted 6 indices" in first.stdout and "cannot start" in first.stdout, first.stdout
    (entry,) = [e for e in project.entries() if e.cluster == "minute"]
    assert entry.mode == "static" and entry.time_limit_seconds == 180
    _wait_gone([entry.job_id], timeout=100)
    assert project.counts() == Counter(range(12))
    assert "nothing to submit" in project.submit("--runs", "2", cluster=cluster).stdout
