"""Metadata round trips per index on the state and log folders, counted with strace as
scripts/bench_runner.py counts them (skipped without strace)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bench_runner  # noqa: E402

# Measured at 200 indices: 18.2, 21.1 before task logs, known-empty checkpoint folders and
# own folds; at 100 the task's fixed costs (its log, .idx, segment) add a little.
AFTER = 19.5


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
def test_the_runner_pays_at_most_its_measured_round_trips_per_index(tmp_path):
    n = 100
    counts = bench_runner.per_index(
        bench_runner.state_calls("true", n, str(tmp_path)),
        bench_runner.state_calls("true", 0, str(tmp_path)),
        n,
    )
    trips = counts.get("(round trips)", 0.0)
    assert trips <= AFTER, counts
    # No log per index: the task's slot log, opened once, and its .idx.
    logs = Path(tmp_path) / f"true-{n}-y" / "logs"
    assert sorted(p.parent.name for p in logs.rglob("*") if p.is_file()) == ["tasks", "tasks"]
