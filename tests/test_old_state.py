"""State written by the landed main (before the packages moved) is read unchanged.

tests/data/main_state is a project run by main's code: `pyexp-submit --local --runs 2` of a
6-permutation sweep whose command fails indices 3, 7 and 11 (so: records, attempts, a local
ledger entry, logs, settings), plus a ledger entry of a Slurm array (job 4242, tasks [3], [7])
written with main's Ledger and never settled.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pyexp import listMissingResults, loadExperiment
from pyexp.cli.logs import main as logs_main
from pyexp.cli.status import main as status_main
from pyexp.config import getConfig

MAIN_STATE = Path(__file__).parent / "data" / "main_state"


@pytest.fixture
def old_project(tmp_path, monkeypatch):
    """A copy of the project main left, as the working directory."""
    root = tmp_path / "proj"
    shutil.copytree(MAIN_STATE, root)
    monkeypatch.chdir(root)
    monkeypatch.setenv("PYEXP_CONFIG", str(root / "config.json"))
    getConfig.cache_clear()
    yield root
    getConfig.cache_clear()


def test_status_reads_records_attempts_ledger_and_settings_as_main_wrote_them(old_project, capsys):
    assert status_main(["experiments/sweep.json", "--no-slurm", "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    counts = {k: report[k] for k in ("runs", "total", "done", "queued", "failing", "missing")}
    assert counts == {"runs": 2, "total": 12, "done": 9, "queued": 2, "failing": 1, "missing": 0}
    assert report["jobs"] == ["4242"] and report["problems"] == []


def test_missing_and_logs_read_main_state(old_project, capsys):
    exp = loadExperiment("experiments/sweep.json")
    assert listMissingResults(exp, runs=2) == [3, 7, 11]
    assert logs_main(["experiments/sweep.json", "11"]) == 0
    out = capsys.readouterr().out
    assert "index 11 (run 1, " in out and ": 1 attempt" in out and "11.log)" in out
    assert "pyexp-run index=11 run=1" in out  # an old per-index log, still read
