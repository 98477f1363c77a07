"""The results store under the real single-node Slurm: farm workers (a plain command and
pyexp.claim()) save into one shard each; pyexp-submit merges them; loadFrame sees every run."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

import pytest
from conftest import write_project

import pyexp
from pyexp.config import load_config
from pyexp.experiment import loadExperiment
from pyexp.state.layout import state_dirs
from pyexp.state.ledger import Ledger
from pyexp.state.store import shard_names

pytestmark = pytest.mark.slurm
pd = pytest.importorskip("pandas")

COMMAND = """\
import sys
import numpy as np
import pyexp
index = int(sys.argv[1])
pyexp.save("returns", np.arange(4.0) + index)
"""

CLAIMER = """\
import numpy as np
import pyexp
for job in pyexp.claim():
    with job:
        pyexp.save("returns", np.arange(4.0) + job.index)
"""


def submit(root, exp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")}
    env["PYEXP_CONFIG"] = str(root / "config.json")
    argv = [sys.executable, "-m", "pyexp.cli.submit", str(exp_path), "--cluster", "local", *args]
    return subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)


def wait_gone(job_ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i"], capture_output=True, text=True
        )
        if not out.stdout.split():
            return
        time.sleep(0.5)
    pytest.fail(f"jobs {job_ids} still in squeue after {timeout} s")


@pytest.mark.parametrize("script", [COMMAND, CLAIMER], ids=["command", "claim"])
def test_farm_workers_save_one_shard_each_and_submit_merges_them(tmp_path, script):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "save.py").write_text(script)
    suffix = " {index}" if script is COMMAND else ""
    command = shlex.join([sys.executable, str(root / "save.py")]) + suffix
    meta = {"name": "store", "metaParameters": {"x": list(range(10))}}
    exp_path = write_project(root, meta, {"command": command}, "experiments/store.json")
    first = submit(root, exp_path, "--runs", "2", "--workers", "3")
    assert first.returncode == 0, first.stderr
    exp = loadExperiment(str(exp_path), config=load_config(str(root / "config.json")))
    wait_gone([e.job_id for e in Ledger(state_dirs(exp).ledger).entries()], timeout=150)
    store = state_dirs(exp).store
    assert 1 <= len(shard_names(store)) <= 3  # at most one per worker
    frame = pyexp.loadFrame(exp, "returns")
    assert len(frame) == 20 * 4
    assert sorted(frame[frame.step == 0].returns) == [float(i) for i in range(20)]
    again = submit(root, exp_path, "--runs", "2")
    assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stderr
    assert len(shard_names(store)) == 1
    assert pyexp.loadFrame(exp, "returns").equals(frame)
