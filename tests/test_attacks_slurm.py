"""Outside-tester attacks on the real local Slurm: what a user or the cluster does to a running
sweep, each checked for nothing lost, nothing run twice, and one line said."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time

import pytest
from test_faults_slurm import Sweep, our_jobs, wait_gone

pytestmark = pytest.mark.slurm

DEAF = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a command that ignores scancel's SIGTERM
open(os.path.join(os.path.dirname(os.path.abspath(__file__)), f"started-{sys.argv[1]}"), "w")
time.sleep(600)
"""


def _kill_wait() -> int:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    return int(
        next(line.split("=")[1].split()[0] for line in out.splitlines() if "KillWait" in line)
    )


def test_scancel_of_a_command_ignoring_sigterm_records_every_index_before_killwait(tmp_path):
    sweep = Sweep(tmp_path / "p", 4, indices_per_task=2, cores=2)
    (sweep.root / "deaf.py").write_text(DEAF)
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(sweep.root / 'deaf.py'))} {{index}}"
    sweep.config.write_text(json.dumps({"command": command, "state_path": sweep.state}))
    del sweep.env["PYEXP_GRACE_SECONDS"]  # the script's grace, from KillWait, rules
    assert sweep.submit().returncode == 0
    deadline = time.monotonic() + 60
    while len(list(sweep.root.glob("started-*"))) < 4:
        assert time.monotonic() < deadline, "the 4 indices did not all start"
        time.sleep(0.2)
    jobs = {j.split("_")[0] for j in our_jobs(sweep.state)}
    start = time.monotonic()
    subprocess.run(["scancel", *jobs], check=True)
    wait_gone(sweep.state, start + 60)
    took = time.monotonic() - start
    said = "".join(p.read_text() for p in (sweep.root / "logs").rglob("*.err"))
    assert said.count(": preempted (exit") == 4, said  # recorded by the runner, not settled
    assert took < _kill_wait() + 2, took
    report = sweep.status()
    assert (report["running"], report["held"], report["missing"]) == (0, 0, 4), report
    assert list((tmp_path / "p" / ".pyexp").rglob("leases-*/*")) == []  # all released
