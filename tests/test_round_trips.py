"""Metadata round trips per index on the state and log folders, counted with strace as
scripts/bench_runner.py counts them (skipped without strace)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bench_runner  # noqa: E402

# Per index after the first (which also makes the run's folders, journal and views; counted
# from the first, 6.1 at 300 indices): 6.0, the lease's create with filelock's folder check and
# lookup, the tombstone's temp file and rename, the journal's fsync; 18.2 before lazy info files
# and checkpoint folders, journals and the tombstone before the record, 21.1 before task logs. A
# farm worker adds nothing since it tries leases without a look first and lists no attempts under
# the lease (failure marks, runner/pool.py); it added 2 before.
AFTER = {"true": 6.0, "farm": 6.0}


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
@pytest.mark.parametrize("phase", ["true", "farm"])
def test_the_runner_pays_at_most_its_measured_round_trips_per_index(tmp_path, phase):
    n = 100
    counts = bench_runner.per_index(
        bench_runner.state_calls(phase, n, str(tmp_path)),
        bench_runner.state_calls(phase, 1, str(tmp_path)),
        n - 1,
    )
    trips = counts.get("(round trips)", 0.0)
    assert trips <= AFTER[phase], counts
    # No log per index: the task's slot log, opened once, and its .idx.
    logs = Path(tmp_path) / f"{phase}-{n}-y" / "logs"
    assert sorted(p.parent.name for p in logs.rglob("*") if p.is_file()) == ["tasks", "tasks"]
