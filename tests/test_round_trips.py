"""Metadata round trips per index on the state and log folders, counted with strace as
scripts/bench_runner.py counts them (skipped without strace)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bench_runner  # noqa: E402

# Measured at 300 indices: 6.1 (the lease's create with filelock's folder check and lookup, the
# tombstone's temp file and rename, the journal's fsync); 18.2 before lazy info files and
# checkpoint folders, journals and the tombstone before the record, 21.1 before task logs. At
# 100 the task's fixed costs (its log, .idx, journal, segment) add a little. A farm worker adds
# the pool's liveness lookup and its attempts listing under the lease (runner/pool.py).
AFTER = {"true": 6.5, "farm": 8.5}


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
@pytest.mark.parametrize("phase", ["true", "farm"])
def test_the_runner_pays_at_most_its_measured_round_trips_per_index(tmp_path, phase):
    n = 100
    counts = bench_runner.per_index(
        bench_runner.state_calls(phase, n, str(tmp_path)),
        bench_runner.state_calls(phase, 0, str(tmp_path)),
        n,
    )
    trips = counts.get("(round trips)", 0.0)
    assert trips <= AFTER[phase], counts
    # No log per index: the task's slot log, opened once, and its .idx.
    logs = Path(tmp_path) / f"{phase}-{n}-y" / "logs"
    assert sorted(p.parent.name for p in logs.rglob("*") if p.is_file()) == ["tasks", "tasks"]
