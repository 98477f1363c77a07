"""Fault injection against the real single-node Slurm: killed runners, cancels, a controller that
does not answer, a full state filesystem, two cron runs at once.

Every scenario runs a job that notes when each index starts and ends, holds an flock on the
index while it runs (a second holder notes an overlap), and then checks: no index ran twice at
the same time, nothing that finished was lost, nothing is done that did not finish, and every
error pyexp printed is one line. In CI (CI=true) these fail when Slurm is not reachable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter

import pytest
from slurm_helpers import Sweep, err_texts, our_jobs, runner_of, wait_gone

pytestmark = pytest.mark.slurm


def test_runner_sigkilled_mid_index_reruns_it_once_its_lease_is_stale(tmp_path):
    sweep = Sweep(tmp_path / "p", 4, slow=(1,))
    assert sweep.submit().returncode == 0
    child = sweep.wait_for_start(1)
    (tmp_path / "p" / "slow-1").unlink()
    os.kill(runner_of(child), 9)
    sweep.converge()
    sweep.check()
    assert sweep.starts()[1] == 2 and all(sweep.starts()[i] == 1 for i in (0, 2, 3))


def test_scancel_of_a_running_task_retries_its_index_uncharged(tmp_path):
    sweep = Sweep(tmp_path / "p", 4, slow=(2,))
    assert sweep.submit().returncode == 0
    child = sweep.wait_for_start(2)
    (tmp_path / "p" / "slow-2").unlink()
    subprocess.run(["scancel", _job_of(child)], check=True)
    sweep.converge()
    sweep.check()
    assert sweep.status()["failed"] == 0 and sweep.starts()[2] == 2


def _job_of(pid: int) -> str:
    """The array task `<job>_<task>` a process runs in, from its environment."""
    with open(f"/proc/{runner_of(pid)}/environ", "rb") as f:
        env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
    return f"{env[b'SLURM_ARRAY_JOB_ID'].decode()}_{env[b'SLURM_ARRAY_TASK_ID'].decode()}"


def test_pending_array_cancelled_three_times_is_never_failed(tmp_path):
    sweep = Sweep(tmp_path / "p", 3, sbatch={"hold": None})  # held: it stays pending
    for _ in range(3):  # with --max-attempts 1, one charged cancel would give an index up
        result = sweep.submit("--max-attempts", "1")
        assert "submitted 3 indices" in result.stdout, result.stderr
        for job in {j.split("_")[0] for j in our_jobs(sweep.state)}:
            subprocess.run(["scancel", job], check=True)
        wait_gone(sweep.state, time.monotonic() + 30)
    result = sweep.submit("--dry-run")
    assert "would submit 3 indices" in result.stdout, result.stdout + result.stderr
    report = sweep.status()
    assert (report["failed"], report["missing"]) == (0, 3), report
    assert sweep.events() == []  # never ran
    sweep.cluster.write_text(json.dumps({**json.loads(sweep.cluster.read_text()), "sbatch": {}}))
    sweep.converge()
    sweep.check()
    assert sweep.starts() == Counter(range(3))


def test_sbatch_that_hangs_or_cannot_reach_slurmctld_submits_nothing_twice(tmp_path):
    sweep = Sweep(tmp_path / "p", 6, indices_per_task=3)
    down = tmp_path / "sbatch-down"
    down.write_text(
        "#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Unable to contact slurm "
        "controller (connect failure)' >&2\nexit 1\n"
    )
    hangs = tmp_path / "sbatch-hangs"  # queues the job (held, to look at it), never answers
    hangs.write_text('#!/bin/sh\nsbatch --hold "$@" > /dev/null\nexec sleep 60\n')
    for fake in (down, hangs):
        fake.chmod(0o755)
    result = sweep.submit(PYEXP_SBATCH=str(down))
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "Unable to contact" in result.stderr
    assert sweep.events() == [] and not our_jobs(sweep.state)

    result = sweep.submit(PYEXP_SBATCH=str(hangs), PYEXP_SLURM_TIMEOUT="3")
    assert result.returncode == 1 and "did not answer within 3 s" in result.stderr, result.stderr
    assert our_jobs(sweep.state)  # queued although sbatch never said so
    again = sweep.submit()  # the queued array's indices are found by its job name
    assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stdout
    for job in {j.split("_")[0] for j in our_jobs(sweep.state)}:
        subprocess.run(["scontrol", "release", job], check=True)
    sweep.converge()
    sweep.check()
    assert sweep.starts() == Counter(range(6))


@pytest.fixture
def tiny_state(tmp_path):
    """A 1 MiB tmpfs to hold state_path, filled up on demand."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "state"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder) -> None:
    with open(os.path.join(folder, "filler"), "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:  # full
            pass


def test_full_state_filesystem_during_record_writes_loses_nothing(tmp_path, tiny_state):
    sweep = Sweep(tmp_path / "p", 4, slow=(0, 1, 2, 3), state_path=str(tiny_state))
    assert sweep.submit().returncode == 0
    for i in range(4):
        sweep.wait_for_start(i)
    _fill(tiny_state)
    for i in range(4):
        (tmp_path / "p" / f"slow-{i}").unlink()
    deadline = time.monotonic() + 60
    wait_gone(sweep.state, deadline)  # each finished, unable to write its record
    said = "".join(err_texts(tmp_path / "p" / "logs"))
    unrecorded = "not recorded" in said or "cannot be written" in said
    assert unrecorded and all(x.startswith("pyexp-run: ") for x in said.splitlines())
    # Unrecorded completions are missing, or failing where their failed attempt fit (retried).
    report = sweep.status()
    settled = report["done"] + report["missing"] + report["failing"]
    assert report["done"] < 4 and settled == 4, (report, said)
    full = sweep.submit()
    assert full.returncode in (0, 1) and full.stderr.count("\n") <= 1, full.stderr
    os.unlink(tiny_state / "filler")
    sweep.converge()
    sweep.check()


def test_two_cron_submits_at_the_same_instant_run_each_index_once(tmp_path):
    sweep = Sweep(tmp_path / "p", 12, indices_per_task=2)
    argv = [sys.executable, "-m", "pyexp", "submit", str(sweep.experiment), "--runs", "1"]
    argv += ["--cluster", str(sweep.cluster), "--indices-per-task", sweep.per_task]
    procs = [
        subprocess.Popen(argv, cwd=sweep.root, env=sweep.env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert sorted("nothing to submit" in out for out in outs) == [False, True], outs
    sweep.converge()
    sweep.check()
    assert sweep.starts() == Counter(range(12))
