"""A sweep converges on its own, on the real single-node Slurm of scripts/slurm-local.sh: one
time budget for planner and workers, pilots, chained rounds (--until-done), the --then hook."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections import Counter

import pytest
from test_slurm_e2e import Project, _status, _wait_gone

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
    status = _status(project)
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
    assert len(project.entries()) == 1  # the first round's array only
    err = (project.root / "logs").rglob("chain-round-2.err")
    assert "--retry-failed" in next(err).read_text()


def test_a_cancelled_follow_up_is_shown_and_a_manual_until_done_restarts_the_chain(tmp_path):
    project = Project(tmp_path, 4)
    cluster = _small_cluster(project)
    hold = project.root / "hold"
    hold.touch()  # the tasks wait while it exists, so the follow-up stays pending
    wait = f'while [ -e {shlex.quote(str(hold))} ]; do sleep 0.2; done; echo "$0" >> "$1"'
    command = f"sh -c {shlex.quote(wait)} {{index}} {shlex.quote(str(project.count))}"
    project.config.write_text(json.dumps({"command": command}))
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


def _status_slurm(project: Project) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")}
    env["PYEXP_CONFIG"] = str(project.config)
    argv = [sys.executable, "-m", "pyexp.cli.status", str(project.experiment)]
    return subprocess.run(argv, cwd=project.root, env=env, capture_output=True, text=True).stdout
