"""The researcher's day: the same answer from any folder, remembered runs, cancel, logs, adopt."""

from __future__ import annotations

import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from conftest import no_slurm_env, write_project

from pyexp.cli.progress import Progress
from pyexp.experiment import loadExperiment
from pyexp.scheduler.local import Tick, eta
from pyexp.state.layout import state_dirs
from pyexp.state.ledger import CANCELLED, SUBMITTED, Ledger, LedgerEntry, entry_id_from_job_name


class Project:
    """A project folder with config.json and experiments/day/e.json, and a sibling folder."""

    def __init__(self, root, permutations: int = 4, command: str = "true {index}") -> None:
        self.root = root / "project"
        self.sibling = root / "sibling"
        self.sibling.mkdir(parents=True)
        meta = {"metaParameters": {"x": list(range(permutations))}}
        config = {"command": command}
        self.experiment = write_project(self.root, meta, config, "experiments/day/e.json")
        self.env: dict[str, str] = {}

    def cli(
        self, *args: str, cwd=None, slurm: bool = False, scancel: str | None = None
    ) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")}
        if not slurm:  # no Slurm command: local runs and status see no queue
            env |= no_slurm_env()
        if scancel:
            env["PYEXP_SCANCEL"] = scancel
        env |= self.env
        argv = [sys.executable, "-m", "pyexp", *args]
        return subprocess.run(
            argv, cwd=cwd or self.root, env=env, capture_output=True, text=True, timeout=120
        )

    def status(self, *args: str, cwd=None, slurm: bool = False) -> dict:
        extra = () if slurm else ("--no-slurm",)
        out = self.cli(
            "status", str(self.experiment), "--json", *extra, *args, cwd=cwd, slurm=slurm
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)[0]

    def exp(self):
        return loadExperiment(str(self.experiment))


@pytest.fixture
def project(tmp_path):
    return Project(tmp_path)


def test_cli_gives_the_same_answer_from_root_and_a_sibling_folder(project):
    ran = project.cli("submit", str(project.experiment), "--runs", "2", "--local")
    assert ran.returncode == 0, ran.stderr
    here = project.status()
    assert here["done"] == 8 and here["runs"] == 2
    before = set(os.listdir("/"))
    for cwd in ("/", project.sibling):
        assert project.status(cwd=cwd) == here
        plan = project.cli("submit", str(project.experiment), "--dry-run", cwd=cwd)
        assert plan.returncode == 0 and plan.stdout.strip().endswith("nothing to submit")
    assert os.listdir(project.sibling) == [] and set(os.listdir("/")) == before


def test_status_without_runs_or_history_says_so_in_its_first_line(project):
    out = project.cli("status", str(project.experiment), "--no-slurm")
    assert out.returncode == 0
    first = out.stdout.splitlines()[0]
    assert first.endswith("never submitted and no --runs: counting 1 run (pass --runs N)")
    assert project.status()["runs_unknown"] is True


def test_status_counts_the_runs_of_the_last_submission(project):
    assert project.cli("submit", str(project.experiment), "--runs", "3", "--local").returncode == 0
    report = project.status()
    assert report["runs"] == 3 and not report["runs_unknown"] and report["done"] == 12
    assert project.status("--runs", "4")["missing"] == 4


def test_local_runs_show_progress_on_stderr(project):
    out = project.cli("submit", str(project.experiment), "--runs", "1", "--local")
    assert out.returncode == 0
    assert "4/4 indices" in out.stderr.splitlines()[-1]


def test_progress_off_a_terminal_prints_a_line_per_tenth():
    stream = io.StringIO()
    progress = Progress("e.json", stream)
    for n in range(1, 101):
        progress(Tick(n, 100, n // 50, 1.0, n == 100))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("e.json: [" + "#" * 30 + "] 100/100 indices")
    assert "2 tasks with failures" in lines[-1] and "left" not in lines[-1]
    assert "1 task with failures" in lines[5]  # not "1 tasks"


def test_first_eta_of_a_local_run_counts_the_slots_still_busy():
    # 16 tasks of 10 s on 4 slots: when the first ends, the other 3 are about to; 30 s are left.
    assert eta([10.0], [9.9, 9.9, 9.9], queued=12, slots=4) == pytest.approx(30.0, abs=0.1)
    # (the old estimate, elapsed / indices done x indices left, said 150 s: slots x too long)
    assert eta([10.0] * 14, [5.0], queued=1, slots=4) == pytest.approx(7.5)  # the tail: 2 busy


def test_logs_show_every_attempt_and_the_array_task_files(tmp_path):
    script = 'echo "try of $1"; seq 1 50; exit 3'
    project = Project(tmp_path, 2, f"sh -c {shlex.quote(script)} sh {{index}}")
    for _ in range(2):
        project.cli("submit", str(project.experiment), "--runs", "1", "--local")
    out = project.cli("logs", str(project.experiment), "1", "-n", "3", cwd="/")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("index 1 (run 0, ") and lines[0].endswith(": 2 attempts")
    attempts = [n for n, line in enumerate(lines) if line.startswith("--- attempt")]
    assert len(attempts) == 2 and "pyexp-run index=1" in lines[attempts[1]]
    assert "(last 3 of" in lines[attempts[0]]
    assert lines[attempts[0] + 1 : attempts[0] + 3] == ["  49", "  50"]
    assert lines[attempts[0] + 3].startswith("  === ") and "exit 3" in lines[attempts[0] + 3]
    task_lines = [line for line in lines if line.startswith("array task local-")]
    assert len(task_lines) == 4 and all("day-e-pyexp-" in line for line in task_lines)


def test_logs_of_an_index_that_never_ran(project):
    out = project.cli("logs", str(project.experiment), "3")
    assert out.returncode == 0 and "no log yet (it has not started)" in out.stdout


def test_adopt_records_existing_results_so_they_are_never_rerun(project):
    exp = project.exp()
    for i in (0, 2, 5):
        folder = exp.buildSaveContext(i).ensureExists("returns.npy")
        open(folder, "w").close()
    args = ("adopt", str(project.experiment), "--result-file", "returns.npy", "--runs", "2")
    out = project.cli(*args, cwd=project.sibling)
    assert out.returncode == 0, out.stderr
    assert "adopted 3 of 8 indices with returns.npy (0 already done)" in out.stdout
    assert "(3 already done)" in project.cli(*args).stdout
    report = project.status("--runs", "2")
    assert report["done"] == 3 and report["missing"] == 5
    plan = project.cli("submit", str(project.experiment), "--runs", "2", "--dry-run")
    assert "would submit 5 indices" in plan.stdout


def test_adopt_without_runs_or_history_is_refused_with_one_line(project):
    out = project.cli("adopt", str(project.experiment), "--result-file", "r.npy")
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "never submitted, so how many runs? pass --runs N" in out.stderr


def test_job_names_carry_the_experiment_name_and_old_names_still_parse():
    entry = LedgerEntry("abc123", "/p/experiments/mc/sarsa.json", "f", {}, 1, [[0]])
    assert entry.job_name == "mc-sarsa-pyexp-abc123"
    named = LedgerEntry("abc123", "/p/x.json", "f", {"name": "Mountain Car/v0;rm"}, 1, [[0]])
    assert named.job_name == "Mountain_Car_v0_rm-pyexp-abc123"
    assert len(LedgerEntry("a1", "/p/x.json", "f", {"name": "n" * 99}, 1, []).job_name) == 49
    for name in (entry.job_name, named.job_name, "pyexp-abc123"):
        assert entry_id_from_job_name(name) == "abc123"
    assert entry_id_from_job_name("train-model") is None


def wait_for(predicate, timeout: float, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


def _squeue_names() -> str:
    return subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True).stdout


@pytest.mark.slurm
def test_cancel_scancels_the_experiments_jobs_and_their_indices_become_missing(tmp_path):
    project = Project(tmp_path, 3, "sleep 300")
    # A runner that Slurm kills before it releases its lease holds it one lease duration more.
    project.env["PYEXP_LEASE_SECONDS"] = "5"
    submit = project.cli(
        "submit", str(project.experiment), "--runs", "1", "--cluster", "local",
        "--indices-per-task", "1", slurm=True,
    )  # fmt: skip
    assert submit.returncode == 0, submit.stderr
    entries = Ledger(state_dirs(project.exp()).ledger).entries()
    names = {e.job_name for e in entries}
    wait_for(lambda: all(n in _squeue_names() for n in names), 30)
    dry = project.cli("cancel", str(project.experiment), "--dry-run", slurm=True, cwd="/")
    assert dry.returncode == 0 and "would cancel job" in dry.stdout
    refused = project.cli("cancel", str(project.experiment), slurm=True, scancel="false")
    assert refused.returncode == 1 and refused.stderr.startswith("pyexp-cancel: scancel failed")
    assert {e.state for e in Ledger(state_dirs(project.exp()).ledger).entries()} == {SUBMITTED}
    out = project.cli("cancel", str(project.experiment), slurm=True, cwd=project.sibling)
    assert out.returncode == 0, out.stderr
    assert f"cancelled job {entries[0].job_id}" in out.stdout
    assert {e.state for e in Ledger(state_dirs(project.exp()).ledger).entries()} == {CANCELLED}
    # The runner stops its command and records a preemption; squeue lets go of the job soon after.
    wait_for(lambda: project.status(slurm=True)["missing"] == 3, 60, 1)
    report = project.status(slurm=True)
    assert report["failed"] == 0 and report["queued"] == 0 and report["running"] == 0
    plan = project.cli("submit", str(project.experiment), "--dry-run", slurm=True)
    assert "would submit 3 indices" in plan.stdout
    again = project.cli("cancel", str(project.experiment), slurm=True)
    assert "nothing queued or running in Slurm" in again.stdout
    assert SUBMITTED not in {e.state for e in Ledger(state_dirs(project.exp()).ledger).entries()}


def test_logs_of_a_farm_index_name_the_worker_that_ran_it(project):
    from pyexp.state.index_logs import index_log, task_files
    from pyexp.state.records import record_key

    exp = project.exp()
    entry = LedgerEntry(
        "f1", str(project.experiment), exp.fingerprint(), exp.description, 1, [],
        mode="farm", pool="0-3", workers=4, job_id="600",
    )  # fmt: skip
    Ledger(state_dirs(exp).ledger).write(entry)
    log = index_log(exp, 2)
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "w") as f:
        key = record_key(exp.getPermutation(2), exp.getRun(2))
        f.write(f"=== 2026-01-01T00:00:00 pyexp-run index=2 run=0 key={key} host=h job=600_3\n")
    files = task_files(exp, 2)
    assert [job for job, _ in files] == ["600_3", "600_3"]
    assert files[1][1].endswith(f"{entry.job_name}_3.err")
    assert task_files(exp, 1) == []  # no worker has run it yet


# Runs argv in its own session; once a command has written its pid, says "started", and on a
# line from stdin signals the whole session and kills the commands (they have sessions of their
# own). As the session's subreaper it reaps every orphan: a dead runner must not linger as a
# zombie, which a container's pid 1 may never reap and which looks alive to kill(pid, 0).
INTERRUPT = """
import ctypes, os, signal, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
signum, pids, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
run = subprocess.Popen(argv, start_new_session=True, **quiet)
while not (os.path.exists(pids) and open(pids).read().strip()):
    time.sleep(0.05)
print("started", flush=True)
sys.stdin.readline()
os.killpg(run.pid, signum)
if signum == signal.SIGINT:
    run.wait(60)
for pid in open(pids).read().split():
    try:
        os.kill(int(pid), signal.SIGKILL)
    except ProcessLookupError:
        pass
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
"""


class HangingLocalRun:
    """A project whose 2 indices' commands wait until `go` exists, and its --local run."""

    def __init__(self, tmp_path, signum: int) -> None:
        self.go = tmp_path / "go"
        command = (
            f"sh -c 'echo $$ >> {tmp_path / 'pids'}; while [ ! -e {self.go} ]; do sleep 0.1; done'"
            " {index}"
        )
        self.project = Project(tmp_path, 2, command)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")} | no_slurm_env()
        submit = ["-m", "pyexp", "submit", str(self.project.experiment), "--runs", "1", "--local"]
        argv = [sys.executable, "-c", INTERRUPT, str(signum), str(tmp_path / "pids")]
        self.proc = subprocess.Popen(
            [*argv, sys.executable, *submit], cwd=self.project.root, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout.readline().strip() == "started"

    def interrupt(self) -> None:
        """Send the signal to the run, kill the commands, and reap every process it left."""
        self.proc.communicate("go\n", timeout=90)
        assert self.proc.returncode == 0


def test_a_local_run_killed_with_sigkill_frees_its_indices_at_once(tmp_path):
    hanging = HangingLocalRun(tmp_path, signal.SIGKILL)
    project = hanging.project
    assert project.status()["running"] >= 1
    hanging.interrupt()  # the submit and its runners, killed at once: leases stay behind
    report = project.status()  # well within the 60 s lease: dead holders on this host hold nothing
    assert (report["running"], report["done"]) == (0, 0)
    hanging.go.touch()
    again = project.cli("submit", str(project.experiment), "--local")
    assert again.returncode == 0, again.stderr
    assert project.status()["done"] == 2


def test_runs_are_remembered_when_the_first_local_run_is_interrupted(tmp_path):
    hanging = HangingLocalRun(tmp_path, signal.SIGINT)
    hanging.interrupt()  # Ctrl-C in its terminal
    report = hanging.project.status()
    assert (report["runs"], report["runs_unknown"]) == (1, False)
