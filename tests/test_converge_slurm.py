"""A sweep converges on its own, on the real single-node Slurm of scripts/slurm-local.sh: one
time budget for planner and workers, pilots, chained rounds (--until-done), the --then hook."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections import Counter

import pytest
from slurm_helpers import Project
from slurm_helpers import wait_jobs_gone as _wait_gone

from pyexp.config import load_config
from pyexp.experiment import loadExperiment
from pyexp.state.layout import state_dirs

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


def _chain(project: Project) -> dict:
    exp = loadExperiment(str(project.experiment), config=load_config(str(project.config)))
    path = state_dirs(exp).chain
    return json.loads(open(path).read()) if os.path.exists(path) else {}


def _wait_stopped(project: Project, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chain = _chain(project)
        if chain.get("stopped"):
            return chain
        time.sleep(1)
    pytest.fail(f"the chain did not stop within {timeout} s: {_chain(project)}")


def _fails_once(project: Project, failing: set[int]) -> None:
    """The command: an index in failing exits 1 on its first try; a success appends its number."""
    job = project.root / "job.sh"
    job.write_text(
        'root=$(dirname "$0")\n'
        f'case " {" ".join(map(str, sorted(failing)))} " in *" $1 "*)\n'
        '  [ -e "$root/tried-$1" ] || { touch "$root/tried-$1"; echo "first try fails" >&2; '
        "exit 1; } ;;\n"
        "esac\n"
        'echo "$1" >> "$root/count.txt"\n'
    )
    project.config.write_text(json.dumps({"command": f"sh {shlex.quote(str(job))} {{index}}"}))


def _small_cluster(project: Project) -> str:
    path = project.root / "small.json"
    fields = {"time_hours": 0.05, "signal_lead_seconds": 10, "mem_per_core_gb": 0.25}
    path.write_text(json.dumps({**fields, "account_required": False}))
    return str(path)


def test_until_done_converges_by_itself_joins_a_second_call_and_runs_the_hook_once(tmp_path):
    project = Project(tmp_path, 8)
    _fails_once(project, {1, 6})
    cluster = _small_cluster(project)
    hook = "echo hook >> hook.txt; python -c 'import pyexp; print(1)' >> hook.txt"
    first = project.submit("--runs", "1", "--until-done", "--then", hook, cluster=cluster)
    assert first.returncode == 0, first.stderr
    assert "chain: round 1 of 10" in first.stdout, first.stdout
    second = project.submit("--runs", "1", "--until-done", cluster=cluster)
    assert second.returncode == 0 and "joined its chain (round 1 of 10" in second.stdout
    chain = _wait_stopped(project, timeout=100)
    assert chain["stopped"].startswith("every index done after round"), chain
    assert chain["round"] >= 2 and chain["hook"]
    _wait_gone([chain["hook"]], timeout=60)
    assert project.counts() == Counter(range(8))  # each index done exactly once
    assert (project.root / "hook.txt").read_text() == "hook\n1\n"  # once; `python` is ours
    # the follow-up ran the same pyexp-submit from a bare environment, after the round's arrays
    (script,) = tmp_path.rglob("chain-round-2.sbatch")
    text = script.read_text()
    assert "#SBATCH --export=NONE" in text and "#SBATCH --dependency=afterany:" in text
    assert f"exec {sys.executable} -m pyexp.cli.submit" in text and "--retry-failed" not in text
    status = _status_slurm(project, "--no-slurm")
    assert "chain stopped: every index done after round" in status, status
    assert "nothing to submit" in project.submit("--runs", "1", cluster=cluster).stdout


def test_until_done_with_a_command_that_always_fails_stops_after_the_first_round(tmp_path):
    project = Project(tmp_path, 12)
    project.config.write_text(json.dumps({"command": "sh -c 'exit 3' {index}"}))
    cluster = _small_cluster(project)
    first = project.submit("--runs", "1", "--until-done", "--workers", "1", cluster=cluster)
    assert first.returncode == 0, first.stderr
    chain = _wait_stopped(project, timeout=90)
    assert "a round failed" in chain["stopped"] and "--retry-failed" in chain["stopped"], chain
    assert "(log: " in chain["stopped"] and "chain-round-2.err" in chain["stopped"]
    assert len(project.entries()) == 1  # the first round's array only
    err = (project.root / "logs").rglob("chain-round-2.err")
    assert "--retry-failed" in next(err).read_text()


def test_a_cancelled_follow_up_is_shown_and_a_manual_until_done_restarts_the_chain(tmp_path):
    project, hold = _held_project(tmp_path, 4)  # the follow-up stays pending while it exists
    cluster = _small_cluster(project)
    first = project.submit("--runs", "1", "--until-done", "--workers", "1", cluster=cluster)
    assert first.returncode == 0, first.stderr
    followup = _chain(project)["followup"]
    subprocess.run(["scancel", followup], check=True)
    _wait_gone([followup], timeout=30)
    status = _status_slurm(project)
    assert f"chain broken: follow-up job {followup} of round 2 is gone" in status, status
    assert "chain-round-2.err" in status
    again = project.submit("--runs", "1", "--until-done", cluster=cluster)
    assert "chain: round 1 of 10" in again.stdout, again.stdout + again.stderr
    hold.unlink()
    chain = _wait_stopped(project, timeout=90)
    assert chain["stopped"].startswith("every index done"), chain
    assert project.counts() == Counter(range(4))


def _status_slurm(project: Project, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")}
    env["PYEXP_CONFIG"] = str(project.config)
    argv = [sys.executable, "-m", "pyexp.cli.status", str(project.experiment), *args]
    return subprocess.run(argv, cwd=project.root, env=env, capture_output=True, text=True).stdout


JOB = """\
root=$(dirname "$0")
case $1 in
  0) [ -e "$root/tried-0" ] || { touch "$root/tried-0"; echo "fails once" >&2; exit 1; } ;;
  1) sleep 35 ;;  # more than a one-minute task warned 30 s before its end (and up to 30 s early)
  2) python -c 'bytearray(300 * 2**20)' || exit $? ;;  # more than 256M
esac
echo "$1" >> "$root/count.txt"
"""


@pytest.fixture
def memory_cgroups():
    """Memory enforcement as Slurm's task/cgroup does it: the local Slurm runs task/none (and is
    shared, so it is not reconfigured), so a setup line puts each task in a cgroup-v1 memory
    group limited to its --mem-per-cpu (SLURM_MEM_PER_CPU); the kernel OOM-kills past it."""
    root = f"/sys/fs/cgroup/memory/pyexp-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.mkdir(root)
    except OSError as e:
        pytest.skip(f"no writable cgroup-v1 memory controller here ({e})")
    yield (
        f'cg={root}/"$SLURM_JOB_ID"; mkdir -p "$cg" && '
        'echo "$((SLURM_MEM_PER_CPU * SLURM_CPUS_ON_NODE))M" > "$cg/memory.limit_in_bytes" && '
        'echo $$ > "$cg/cgroup.procs"'
    )
    for folder, _, _ in sorted(os.walk(root), reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def test_a_sweep_that_fails_times_out_and_runs_out_of_memory_once_converges_by_itself(
    tmp_path, memory_cgroups
):
    project = Project(tmp_path, 6)
    job = project.root / "job.sh"
    job.write_text(JOB)
    project.config.write_text(json.dumps({"command": f"sh {shlex.quote(str(job))} {{index}}"}))
    cluster = _minute_cluster(project, setup=[memory_cgroups])
    hook = "echo hook >> hook.txt"
    args = ("--runs", "1", "--indices-per-task", "1", "--until-done")
    first = project.submit(*args, "--then", hook, cluster=cluster)
    assert first.returncode == 0, first.stderr
    second = project.submit(*args, cluster=cluster)
    assert "joined its chain (round 1 of 10" in second.stdout, second.stdout + second.stderr
    chain = _wait_stopped(project, timeout=110)
    assert chain["stopped"].startswith("every index done after round 3"), chain
    _wait_gone([chain["hook"]], timeout=60)
    assert project.counts() == Counter(range(6))  # every index done exactly once
    assert (project.root / "hook.txt").read_text() == "hook\n"
    more = {e.index_set().text(): e for e in project.entries() if e.escalated}
    assert set(more) == {"1", "2"}, [(e.index_set().text(), e.escalated) for e in project.entries()]
    assert more["1"].time_limit_seconds == 120 and more["2"].mem_per_core_gb == 0.5
    verbose = _status_slurm(project, "-v")
    assert "indices 2: retried with more (job " in verbose
    assert "out of memory with 256M per core: 512M" in verbose
    assert "timed out in a task of 60 s: a task of its own of 2 min" in verbose


def _held_project(tmp_path, permutations: int) -> tuple[Project, object]:
    """A project whose tasks wait while the returned file exists (so its jobs stay queued)."""
    project = Project(tmp_path, permutations)
    hold = project.root / "hold"
    hold.touch()
    wait = f'while [ -e {shlex.quote(str(hold))} ]; do sleep 0.2; done; echo "$0" >> "$1"'
    command = f"sh -c {shlex.quote(wait)} {{index}} {shlex.quote(str(project.count))}"
    project.config.write_text(json.dumps({"command": command}))
    return project, hold


def test_status_shows_the_round_and_pyexp_cancel_cancels_the_chain_with_the_arrays(tmp_path):
    project, hold = _held_project(tmp_path, 4)
    cluster = _small_cluster(project)
    first = project.submit("--runs", "1", "--until-done", "--workers", "1", cluster=cluster)
    assert first.returncode == 0, first.stderr
    followup = _chain(project)["followup"]
    status = _status_slurm(project)
    assert (
        f"chain: round 1 of 10 (submitted 4 indices, 1 array queued or running); follow-up "
        f"job {followup} runs round 2 once they end" in status
    ), status
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")}
    env["PYEXP_CONFIG"] = str(project.config)
    argv = [sys.executable, "-m", "pyexp.cli.cancel", str(project.experiment)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert f"cancelled its --until-done chain (follow-up job {followup})" in out.stdout, out
    _wait_gone([followup, *(e.job_id for e in project.entries())], timeout=30)
    hold.unlink()
    assert "chain stopped: cancelled by pyexp-cancel" in _status_slurm(project)


def test_a_chain_stops_after_max_rounds_and_when_indices_failed_for_good_the_hook_waits(tmp_path):
    project, hold = _held_project(tmp_path, 2)
    cluster = _small_cluster(project)
    once = project.submit("--runs", "1", "--until-done", "--max-rounds", "1", cluster=cluster)
    assert "chain stopped: --max-rounds 1 reached with work still queued" in once.stdout, once
    assert not _chain(project)["followup"]
    hold.unlink()
    _wait_gone([e.job_id for e in project.entries()], timeout=60)

    failing = Project(tmp_path / "failing", 6)
    job = failing.root / "job.sh"
    job.write_text('[ "$1" = 0 ] && { echo "index 0 always fails" >&2; exit 1; }\nexit 0\n')
    failing.config.write_text(json.dumps({"command": f"sh {shlex.quote(str(job))} {{index}}"}))
    args = ("--runs", "1", "--until-done", "--max-attempts", "1", "--then", "touch hook")
    assert failing.submit(*args, cluster=_small_cluster(failing)).returncode == 0
    chain = _wait_stopped(failing, timeout=60)
    assert chain["stopped"].startswith("round 2 started nothing new: 1 index failed for good")
    assert "the --then hook does not run" in chain["stopped"] and not chain["hook"]
    assert not (failing.root / "hook").exists()
