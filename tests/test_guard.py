"""A broken command stops early (the broken-command guard), cron hears that indices failed for
good (exit 3), and status output that a reader cuts short (`| head -1`) ends quietly.

Real processes: pyexp-submit --local runs the tasks through pyexp-run, as on Slurm.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

import pytest
from conftest import no_slurm_env, write_project

from pyexp.config import load_config
from pyexp.errors import ClusterConfigError
from pyexp.experiment import loadExperiment
from pyexp.runner.guard import FailFast
from pyexp.scheduler.cluster import parse_cluster
from pyexp.state.attempts import FAILED, LEASE_LOST, TIMEOUT, Attempts
from pyexp.state.layout import state_dirs
from pyexp.state.ledger import Ledger
from pyexp.state.records import CompletionRecords

ERROR = "ModuleNotFoundError: No module named 'torhc'"
ALWAYS_FAILS = (
    f"sh -c {shlex.quote(f'echo starting; echo {shlex.quote(ERROR)} >&2; exit 1')} {{index}}"
)
HALF_FAILS = "sh -c 'exit $(($0 % 2))' {index}"  # odd indices fail, at once


class Project:
    """A project of `n` permutations with a cluster config of its own; CLI runs as subprocesses."""

    def __init__(self, root, n: int = 20, **cluster) -> None:
        self.root = root
        meta, config = (
            {"metaParameters": {"x": list(range(n))}},
            {"state_path": "state", "log_path": "logs"},
        )
        self.experiment = write_project(root, meta, config, "experiments/guard.json")
        self.config = root / "config.json"
        self.cluster = root / "cluster.json"
        self.cluster.write_text(json.dumps({"time_hours": 1, "indices_per_task": n, **cluster}))

    def cli(self, *args: str, shell_tail: str = "") -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYEXP_", "SLURM_"))}
        env |= no_slurm_env()  # every cluster command pyexp runs, the quota check's too
        env["PYEXP_CONFIG"] = str(self.config)
        argv = [sys.executable, "-m", "pyexp", *args]
        return subprocess.run(
            argv, cwd=self.root, env=env, capture_output=True, text=True, timeout=120
        )

    def submit(self, command: str, *args: str) -> subprocess.CompletedProcess:
        return self.cli(
            "submit", str(self.experiment), "--runs", "1", "--cluster", str(self.cluster),
            "--local", "--parallel", "1", "--command", command, *args,
        )  # fmt: skip

    def status(self, *args: str) -> subprocess.CompletedProcess:
        return self.cli("status", str(self.experiment), "--no-slurm", *args)

    def exp(self):
        return loadExperiment(str(self.experiment), config=load_config(str(self.config)))

    def outcomes(self) -> list[str]:
        return [outcome for _, outcome, _ in Attempts(state_dirs(self.exp()).attempts).names()]

    def done(self) -> int:
        return len(CompletionRecords(state_dirs(self.exp()).done).completed(compact=False))

    def task_err(self) -> str:
        return "".join(p.read_text() for p in sorted((self.root / "logs").rglob("*.err")))


@pytest.mark.parametrize("mode", [["--indices-per-task", "20"], ["--workers", "1"]])
def test_always_failing_command_stops_after_five_and_submit_refuses_until_retry_failed(
    tmp_path, mode
):
    project = Project(tmp_path)
    ran = project.submit(ALWAYS_FAILS, *mode)
    assert ran.returncode == 1, ran.stderr
    assert project.outcomes() == [FAILED] * 5  # the other 15 were never started
    (line,) = [x for x in project.task_err().splitlines() if "all failed" in x]
    first_log = tmp_path / "logs" / "experiments" / "guard"
    assert "its first 5 indices all failed within 5s each (first: " in line
    assert f"{first_log}/" in line and line.endswith(
        f": {ERROR}); a broken command? taking no more indices"
    )

    status = project.status()
    assert status.returncode == 3, status.stderr
    top = status.stdout.splitlines()[0]
    assert top.startswith(f"{project.experiment}: not resubmitted: task ")
    assert ERROR in top and top.endswith("fix the command, then pass --retry-failed")

    again = project.submit(ALWAYS_FAILS, *mode)
    assert again.returncode == 1 and again.stderr.count("\n") == 1, again.stderr
    assert again.stderr.startswith(
        f"pyexp-submit: {project.experiment.resolve()}: not resubmitted: task "
    )
    assert ERROR in again.stderr and "--retry-failed" in again.stderr
    assert project.outcomes() == [FAILED] * 5  # nothing ran

    fixed = project.submit("true {index}", *mode, "--retry-failed")
    assert fixed.returncode == 0, fixed.stderr
    assert project.done() == 20
    assert project.status().returncode == 0
    assert "not resubmitted" not in project.status().stdout


@pytest.mark.parametrize("mode", [["--indices-per-task", "20"], ["--workers", "1"]])
def test_guard_line_names_the_first_failures_own_last_line_though_its_slot_log_goes_on(
    tmp_path, mode
):
    """The five failures share one slot log: the line is the first one's, not the latest's."""
    project = Project(tmp_path)
    fails = "sh -c 'echo error of index $0 >&2; echo; exit 1' {index}"
    project.submit(fails, *mode)
    (log,) = (tmp_path / "logs").rglob("*-0.log")  # the one slot of the one task or worker
    assert log.read_text().count("error of index") == 5
    first = next(x for x in log.read_text().splitlines() if x.startswith("error of index "))
    (line,) = [x for x in project.task_err().splitlines() if "all failed" in x]
    assert line.endswith(f": {first}); a broken command? taking no more indices"), line


def test_local_tasks_not_yet_started_are_not_started_once_the_guard_trips(tmp_path):
    project = Project(tmp_path, n=30)
    ran = project.submit(ALWAYS_FAILS, "--indices-per-task", "6")  # 5 tasks, one at a time
    assert ran.returncode == 1
    assert project.outcomes() == [FAILED] * 5  # the first task's five, then nothing
    assert "ran 5 of 30 indices locally in 5 tasks, 1 of them with failures" in ran.stdout
    warning = [x for x in ran.stderr.splitlines() if x.startswith("pyexp-submit: warning: ")]
    assert len(warning) == 1 and "not resubmitted: task " in warning[0] and ERROR in warning[0]


def test_local_default_bundles_are_large_enough_for_the_guard_to_trip(tmp_path):
    project = Project(tmp_path, n=30)
    project.cluster.write_text(json.dumps({"time_hours": 1, "indices_per_task": 1}))
    ran = project.submit(ALWAYS_FAILS)  # no --indices-per-task: the local default bundles
    assert ran.returncode == 1
    assert project.outcomes() == [FAILED] * 5
    assert "not resubmitted: task " in ran.stderr


def test_command_failing_for_half_the_parameters_runs_the_whole_sweep(tmp_path):
    project = Project(tmp_path)
    ran = project.submit(HALF_FAILS, "--indices-per-task", "20")
    assert ran.returncode == 1
    assert project.done() == 10 and project.outcomes().count(FAILED) == 10
    assert "all failed" not in project.task_err()
    assert not os.path.exists(state_dirs(project.exp()).broken)
    assert project.submit(HALF_FAILS, "--indices-per-task", "20").returncode == 1  # resubmitted
    assert project.outcomes().count(FAILED) == 20


def test_slow_failures_do_not_trip_the_guard(tmp_path):
    project = Project(tmp_path, n=7, fail_fast_indices=3, fail_fast_seconds=0.2)
    ran = project.submit("sh -c 'sleep 0.4; exit 1' {index}", "--indices-per-task", "7")
    assert ran.returncode == 1
    assert project.outcomes() == [FAILED] * 7
    assert "all failed" not in project.task_err()


def test_thresholds_come_from_the_cluster_config(tmp_path):
    project = Project(tmp_path, n=10, fail_fast_indices=2, fail_fast_seconds=30)
    project.submit("sh -c 'sleep 0.4; exit 1' {index}", "--indices-per-task", "10")
    assert project.outcomes() == [FAILED] * 2
    assert "its first 2 indices all failed within 30s each" in project.task_err()
    off = Project(tmp_path / "off", n=8, fail_fast_indices=0)
    off.submit(ALWAYS_FAILS, "--indices-per-task", "8")
    assert off.outcomes() == [FAILED] * 8


def test_claim_script_whose_jobs_all_raise_stops_after_five(tmp_path):
    project = Project(tmp_path)
    script = tmp_path / "work.py"
    script.write_text(
        "import pyexp\n"
        "for job in pyexp.claim():\n"
        "    with job:\n"
        "        raise ValueError('bad {}'.format(job.index))\n"
    )
    project.submit(f"{sys.executable} {script}", "--workers", "1")  # exits as the script does
    assert project.outcomes() == [FAILED] * 5
    (line,) = [x for x in project.task_err().splitlines() if "all failed" in x]
    assert line.startswith("pyexp.claim: task ") and "ValueError: bad " in line
    assert project.status().returncode == 3


def test_guard_is_off_after_a_success_or_a_slow_failure_and_ignores_stops():
    guard = FailFast(3, 5.0)
    assert not guard.saw(TIMEOUT, 0.1, "a.log") and not guard.saw(LEASE_LOST, 0.1, "a.log")
    assert not guard.saw(FAILED, 0.1, "first.log") and not guard.saw(FAILED, 0.1, "b.log")
    assert guard.saw(FAILED, 0.1, "c.log") and guard.tripped and guard.first_log == "first.log"
    succeeded = FailFast(2, 5.0)
    assert not succeeded.saw("done", 0.1, "a.log")
    assert not any(succeeded.saw(FAILED, 0.1, "x.log") for _ in range(5))
    slow = FailFast(2, 5.0)
    assert not slow.saw(FAILED, 6.0, "a.log")
    assert not any(slow.saw(FAILED, 0.1, "x.log") for _ in range(5)) and not slow.tripped


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("fail_fast_indices", -1, "'fail_fast_indices' must be 0 (no guard) or more, got -1"),
        ("fail_fast_seconds", 0, "'fail_fast_seconds' must be a positive number, got 0"),
        ("fail_fast_seconds", "5", "'fail_fast_seconds' must be Real, got \"5\""),
    ],
)
def test_bad_guard_thresholds_are_one_line_errors(field, value, says):
    with pytest.raises(
        ClusterConfigError, match="^c.json: " + says.replace("(", r"\(").replace(")", r"\)")
    ):
        parse_cluster({"time_hours": 1, field: value}, "c", "c.json")


def test_shipped_cluster_configs_set_the_guard():
    from pyexp.scheduler.cluster import known_clusters, load_cluster

    for name in known_clusters():
        config = load_cluster(name)
        assert (config.fail_fast_indices, config.fail_fast_seconds) == (5, 5), name


def test_status_cut_short_by_its_reader_ends_without_a_traceback(tmp_path):
    project = Project(tmp_path, n=200)
    project.submit("true {index}", "--indices-per-task", "200")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")}
    env["PYEXP_CONFIG"] = str(project.config)
    for args in (["status", "-v", "--by", "x"], ["status", "--json"], ["logs"]):
        argv = [sys.executable, "-m", "pyexp", args[0], str(project.experiment), *args[1:]]
        if args[0] == "logs":
            argv.append("3")
        else:
            argv.append("--no-slurm")
        # `true` exits without reading: every write after it finds the pipe closed.
        shell = f"{shlex.join(argv)} | true; echo $(( PIPESTATUS[0] ))"
        out = subprocess.run(["bash", "-c", shell], env=env, capture_output=True, text=True)
        assert out.stderr == "", out.stderr
        assert out.stdout.strip() == "141"  # 128 + SIGPIPE, as a shell reports it


def test_local_farm_whose_command_never_claims_reports_what_ran(tmp_path):
    project = Project(tmp_path, n=6)
    ran = project.submit("true", "--workers", "1")
    assert ran.returncode == 1
    report = ran.stdout.strip()
    assert report.startswith(
        f"{project.experiment.resolve()}: ran 0 of 6 indices locally in a farm of 1 worker"
    )
    assert "claimed nothing" in report and "add {index}" in report
    assert "0/6 indices" in ran.stderr and "1 task with failures" in ran.stderr
    assert "[" + "." * 30 + "]" in ran.stderr  # an empty bar, not a full one


def _wait_gone(job_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i"], capture_output=True)
        if not out.stdout.strip():
            return
        time.sleep(0.5)
    pytest.fail(f"job {job_id} still in squeue after {timeout} s")


@pytest.mark.slurm
def test_on_slurm_a_farm_worker_stops_after_five_and_the_next_submit_refuses(tmp_path):
    project = Project(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYEXP_", "SLURM_"))}
    env["PYEXP_CONFIG"] = str(project.config)
    argv = [sys.executable, "-m", "pyexp", "submit", str(project.experiment), "--runs", "1"]
    argv += ["--cluster", "local", "--workers", "1", "--command", ALWAYS_FAILS]
    first = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    (entry,) = Ledger(state_dirs(project.exp()).ledger).entries()
    _wait_gone(entry.job_id, timeout=120)
    assert project.outcomes() == [FAILED] * 5
    assert "its first 5 indices all failed within 5s each" in project.task_err()
    again = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 1 and again.stderr.count("\n") == 1, again.stderr
    assert "not resubmitted: task " in again.stderr and ERROR in again.stderr
    assert len(Ledger(state_dirs(project.exp()).ledger).entries()) == 1
