"""Outside-tester attacks on the real local Slurm: what a user or the cluster does to a running
sweep, each checked for nothing lost, nothing run twice, and one line said."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from slurm_helpers import Sweep, err_texts, our_jobs, runner_of, wait_gone

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
    said = "".join(err_texts(sweep.root / "logs"))
    assert said.count(": preempted (exit") == 4, said  # recorded by the runner, not settled
    assert took < _kill_wait() + 2, took
    report = sweep.status()
    assert (report["running"], report["held"], report["missing"]) == (0, 0, 4), report
    assert list((tmp_path / "p" / ".pyexp").rglob("leases-*/*")) == []  # all released


def test_task_paused_past_its_lease_kills_its_stale_command_on_resume_and_records_no_done(
    tmp_path,
):
    sweep = Sweep(tmp_path / "p", 2, slow=(0,))
    sweep.env["PYEXP_LEASE_SECONDS"] = "4"  # a heartbeat every 1.3 s: slower than the fence
    assert sweep.submit().returncode == 0
    child = sweep.wait_for_start(0)
    runner = runner_of(child)
    for pid in (runner, child):  # as `scontrol suspend` does to every process of the task
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(4 + 1)  # past the lease: the marker goes stale
        report = sweep.status()
        assert report["running"] == 0 and report["held"] == 1, report
        assert sweep.submit().returncode == 0  # another array takes the index over
        deadline = time.monotonic() + 60
        while sweep.starts()[0] < 2:
            assert time.monotonic() < deadline, sweep.events()
            time.sleep(0.1)
    finally:
        for pid in (child, runner):
            os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    while os.path.exists(f"/proc/{child}") and _state(child) != "Z":
        assert time.monotonic() - resumed < 0.5, "the stale command still runs after resume"
        time.sleep(0.01)
    (sweep.root / "slow-0").unlink()
    sweep.converge()
    said = "".join(err_texts(sweep.root / "logs"))
    assert said.count("index 0: lease_lost") == 1 and said.count("index 0: done") == 1, said
    ends = [(i, p) for w, i, p, _ in sweep.events() if w == "end"]
    assert sorted(i for i, _ in ends) == [0, 1] and (0, child) not in ends, ends
    assert sweep.status()["done"] == 2


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]
