"""End to end against the real single-node Slurm of scripts/slurm-local.sh (`--cluster local`).

They run only when asked (PYEXP_TEST_SLURM=1, CI=true, or the local script's marker: see
conftest.py), and then fail when Slurm is not reachable.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import subprocess
import sys
import time
from collections import Counter

import pytest
from slurm_helpers import Project, err_texts
from slurm_helpers import squeue_words as _squeue
from slurm_helpers import wait_jobs_gone as _wait_gone

from pyexp.config import load_config
from pyexp.experiment import ExperimentDescription, loadExperiment
from pyexp.state.attempts import TIMEOUT, Attempts
from pyexp.state.layout import state_dirs
from pyexp.state.ledger import SUBMITTED, LedgerEntry

pytestmark = pytest.mark.slurm


def test_every_index_runs_exactly_once(tmp_path):
    project = Project(tmp_path, 100)
    first = project.submit("--runs", "3", "--indices-per-task", "4")
    assert first.returncode == 0, first.stderr
    assert "submitted 300 indices as 1 array to local" in first.stdout
    entries = project.entries()
    assert [e.state for e in entries] == [SUBMITTED] and len(entries[0].tasks) == 75
    again = project.submit(
        "--runs", "3", "--indices-per-task", "4"
    )  # queued or running: nothing is submitted twice
    assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stderr
    _wait_gone([entries[0].job_id], timeout=150)
    assert project.counts() == Counter(range(300))
    after = project.submit("--runs", "3")
    assert "nothing to submit" in after.stdout and len(project.entries()) == 1


def test_resubmission_after_scancel_submits_exactly_the_cancelled_indices(tmp_path):
    project = Project(tmp_path, 100)
    assert project.submit("--runs", "1", "--indices-per-task", "4").returncode == 0
    (entry,) = project.entries()
    job = entry.job_id
    # Hold the array so the tasks picked below cannot start while they are being cancelled.
    subprocess.run(["scontrol", "hold", job], check=True, capture_output=True)
    pending = [
        int(line.split("|")[0].split("_")[1])
        for line in _squeue("-r", "-j", job, "-o", "%i|%T")
        if line.endswith("|PENDING")
    ]
    assert len(pending) >= 5, pending
    cancelled = pending[-5:]
    subprocess.run(["scancel", *(f"{job}_{t}" for t in cancelled)], check=True)
    subprocess.run(["scontrol", "release", job], check=True, capture_output=True)
    _wait_gone([job], timeout=90)

    unfinished = sorted(i for t in cancelled for i in entry.tasks[t])
    assert project.counts() == Counter(set(range(100)) - set(unfinished))
    again = project.submit("--runs", "1", "--indices-per-task", "4")
    assert again.returncode == 0, again.stderr
    assert f"submitted {len(unfinished)} indices as 1 array" in again.stdout
    (new,) = [e for e in project.entries() if e.id != entry.id]
    assert new.indices() == unfinished
    _wait_gone([new.job_id], timeout=60)
    assert project.counts() == Counter(range(100))


JOB = """
import os, sys, time
index, root = int(sys.argv[1]), os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(root, "count.txt"), "a") as f:
    f.write(f"{{index}}\\n")
if index in {fail}:
    sys.exit(3)
marker = os.path.join(root, f"overran-{{index}}")
if index in {overrun} and not os.path.exists(marker):
    open(marker, "w").close()
    time.sleep(600)  # past the one-minute limit: Slurm's USR1 (or TERM) stops it
"""


def test_cron_resubmission_converges_with_failures_timeouts_and_cancellations(tmp_path):
    fail, overrun = {1, 7}, {2}
    project = Project(tmp_path, 12)
    job = project.root / "job.py"
    job.write_text(JOB.format(fail=sorted(fail), overrun=sorted(overrun)))
    project.count = project.root / "count.txt"
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(job))} {{index}}"
    project.config.write_text(json.dumps({"command": command}))
    cluster = project.root / "minute.json"
    cluster.write_text(
        json.dumps(
            {
                "time_hours": 1 / 60,
                "mem_per_core_gb": 0.25,
                "indices_per_task": 1,
                "array_throttle": 4,
                "signal_lead_seconds": 40,
                "account_required": False,
            }
        )
    )

    def submit():
        result = project.submit("--runs", "1", "--indices-per-task", "1", cluster=str(cluster))
        # 3 (cron hears it) once indices failed for good, with one line saying so first
        assert result.returncode == (3 if "failed for good" in result.stderr else 0), result.stderr
        assert result.stdout.count("\n") == 1, result.stdout  # one line a run, cron-friendly
        return result

    assert "submitted 12 indices" in submit().stdout
    (first,) = project.entries()
    subprocess.run(["scontrol", "hold", first.job_id], check=True, capture_output=True)
    pending = [
        int(line.split("|")[0].split("_")[1])
        for line in _squeue("-r", "-j", first.job_id, "-o", "%i|%T")
        if line.endswith("|PENDING")
    ]
    victims = [t for t in pending if first.tasks[t][0] not in fail | overrun][:2]
    assert victims, pending
    cancelled = {first.tasks[t][0] for t in victims}
    subprocess.run(["scancel", *(f"{first.job_id}_{t}" for t in victims)], check=True)
    subprocess.run(["scontrol", "release", first.job_id], check=True, capture_output=True)

    rounds = 1
    while True:
        _wait_gone([e.job_id for e in project.entries()], timeout=180)
        last = submit()
        if "nothing to submit" in last.stdout:
            break
        rounds += 1
        assert rounds <= 5, "did not converge"

    assert last.returncode == 3 and "2 indices failed for good" in last.stderr
    runs = project.counts()
    assert {i: runs[i] for i in fail} == {i: 3 for i in fail}  # --max-attempts 3, then given up
    assert {i: runs[i] for i in overrun} == {i: 2 for i in overrun}  # timed out once, then done
    assert all(runs[i] == 1 for i in set(range(12)) - fail - overrun), runs
    assert cancelled <= set(runs)  # resubmitted after the cancellation

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")}
    env["PYEXP_CONFIG"] = str(project.config)
    status = subprocess.run(
        [sys.executable, "-m", "pyexp", "status", str(project.experiment), "--json"],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 3, status.stderr  # indices failed for good
    (report,) = json.loads(status.stdout)
    assert (report["done"], report["failed"], report["missing"]) == (10, 2, 0)
    reasons = {f["index"]: (f["outcome"], f["exit_code"]) for f in report["failed_indices"]}
    assert reasons == {1: ("failed", 3), 7: ("failed", 3)}
    assert all(os.path.exists(f["log"]) for f in report["failed_indices"])


def test_two_cron_runs_at_the_same_moment_submit_each_index_once(tmp_path):
    project = Project(tmp_path, 40)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")}
    env["PYEXP_CONFIG"] = str(project.config)
    argv = [sys.executable, "-m", "pyexp.cli.submit", str(project.experiment), "--runs", "2"]
    argv += ["--cluster", "local", "--indices-per-task", "4"]
    runs = [
        subprocess.Popen(argv, cwd=project.root, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [proc.communicate(timeout=120)[0] for proc in runs]
    assert [proc.returncode for proc in runs] == [0, 0], outs
    assert sorted("nothing to submit" in out for out in outs) == [False, True], outs
    entries = project.entries()
    assert sorted(i for e in entries for i in e.indices()) == list(range(80))
    _wait_gone([e.job_id for e in entries], timeout=150)
    assert project.counts() == Counter(range(80))  # every index of both runs, once


def test_queued_work_survives_added_reordered_and_removed_sweep_values(tmp_path):
    project = Project(tmp_path, 1)
    go, ran = project.root / "go", project.root / "ran.txt"

    def sweep(x: list, y: list) -> None:
        project.experiment.write_text(
            json.dumps({"name": "e2e", "metaParameters": {"x": x, "y": y}})
        )

    sweep([1, 2, 3], ["a", "b"])  # index = 2 * x position + y position
    # Each (params, run) appends its save path once `go` exists; one task per array at a time.
    wait = f'while [ ! -e {shlex.quote(str(go))} ]; do sleep 0.2; done; echo "$PYEXP_SAVE_PATH"'
    command = f"sh -c {shlex.quote(wait + ' >> ' + shlex.quote(str(ran)))}"
    config = {"command": command, "save_path": "results/{params}/{run}"}
    project.config.write_text(json.dumps(config))
    cluster = project.root / "one-at-a-time.json"
    limits = {"time_hours": 0.1, "indices_per_task": 1, "array_throttle": 1}
    cluster.write_text(json.dumps({**limits, "mem_per_core_gb": 0.25, "account_required": False}))

    def submit(*args: str) -> str:  # static bundles: tasks own fixed indices
        result = project.submit(
            "--runs", "1", "--indices-per-task", "1", *args, cluster=str(cluster)
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def status() -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")}
        argv = [sys.executable, "-m", "pyexp", "status", str(project.experiment), "--json"]
        env["PYEXP_CONFIG"] = str(project.config)
        out = subprocess.run(argv, cwd=project.root, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        (report,) = json.loads(out.stdout)
        return {k: report[k] for k in ("done", "running", "queued", "missing")}

    assert "submitted 6 indices" in submit()
    (first,) = project.entries()
    sweep([1, 5, 2, 3], ["b", "a"])  # a value in the middle of x, y reordered
    assert "would submit 2 indices" in submit("--dry-run")
    before = status()
    assert before["queued"] + before["running"] == 6 and before["missing"] == 2, before
    assert "submitted 2 indices" in submit()
    (second,) = [e for e in project.entries() if e.id != first.id]
    assert {_x(second, i) for i in second.indices()} == {5}
    assert status()["missing"] == 0

    deadline = time.monotonic() + 20
    while status()["running"] < 2:  # a task of each array takes its index, waits for `go`
        assert time.monotonic() < deadline, "no task started"
        time.sleep(0.5)
    running = [i for t in _running_tasks(first) for i in first.tasks[t]]
    assert all(_x(first, i) != 3 for i in running), running  # x=3 is still queued
    assert status() == {"done": 0, "running": 2, "queued": 6, "missing": 0}
    sweep([1, 5, 2], ["b", "a"])  # x=3 removed
    assert "nothing to submit" in submit()
    assert status() == {"done": 0, "running": 2, "queued": 4, "missing": 0}

    go.touch()
    _wait_gone([first.job_id, second.job_id], timeout=45)
    paths = Counter(os.path.relpath(p, project.root) for p in ran.read_text().splitlines())
    final = [f"results/x-{x}_y-{y}/0" for x in (1, 5, 2) for y in "ab"]
    assert paths == Counter(final)  # each (params, run) of the final sweep once, x=3 never
    logs = project.root / "logs"
    skipped = [line for text in err_texts(logs) for line in text.splitlines()]
    skipped = sorted(line for line in skipped if "removed" in line)
    experiment = project.experiment
    assert skipped == [  # x=3 was indices 4 and 5 when submitted
        f"pyexp-run: index {i}: its parameters were removed from {experiment}: skipped"
        for i in (4, 5)
    ]
    assert status() == {"done": 6, "running": 0, "queued": 0, "missing": 0}


def _x(entry: LedgerEntry, index: int) -> int:
    """x of an index of the sweep as the entry submitted it."""
    return ExperimentDescription(entry.snapshot).getPermutation(index)["x"]


def _running_tasks(entry: LedgerEntry) -> list[int]:
    lines = _squeue("-r", "-j", entry.job_id, "-t", "RUNNING", "-o", "%i")
    return [int(line.split("_")[1]) for line in lines]


def _our_tasks(project: Project) -> int:
    """Array tasks of this project's ledger entries that squeue shows pending or running."""
    names = {e.job_name for e in project.entries()}
    return sum(1 for line in _squeue("--me", "-r", "-o", "%j") if line in names)


def test_a_queue_limit_of_5_converges_over_cron_runs_never_queueing_more(tmp_path):
    project = Project(tmp_path, 12)
    command = f"sh -c 'sleep 1; echo {{index}} >> \"$0\"' {shlex.quote(str(project.count))}"
    project.config.write_text(json.dumps({"command": command}))
    cluster = project.root / "limited.json"
    with open(os.path.join(os.path.dirname(__file__), "..", "cluster_configs", "local.json")) as f:
        cluster.write_text(json.dumps({**json.load(f), "max_queued_jobs": 5}))
    deadline, runs, most = time.monotonic() + 400, 0, 0
    while project.counts() != Counter(range(12)):
        assert time.monotonic() < deadline, f"not converged after {runs} runs: {project.counts()}"
        result = project.submit("--runs", "1", "--indices-per-task", "1", cluster=str(cluster))
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("\n") == 1, result.stdout
        runs += 1
        for _ in range(6):  # poll between cron runs
            most = max(most, _our_tasks(project))
            assert most <= 5, f"{most} of our tasks queued under max_queued_jobs 5"
            time.sleep(0.5)
    assert runs >= 3  # 12 one-index tasks through a queue of 5
    _wait_gone([e.job_id for e in project.entries()], timeout=60)
    assert project.counts() == Counter(range(12))  # every index exactly once
    assert "nothing to submit" in project.submit("--runs", "1", cluster=str(cluster)).stdout


def test_farm_workers_run_a_pool_once(tmp_path):
    # Needs the farm worker of pyexp-run (issue 11, runner side).
    project = Project(tmp_path, 40)
    first = project.submit("--runs", "1", "--workers", "3")
    assert first.returncode == 0, first.stderr
    assert "submitted 40 indices as 1 array to local" in first.stdout
    assert "a farm of 3 workers" in first.stdout
    (entry,) = project.entries()
    assert entry.mode == "farm" and entry.workers == 3 and entry.pool == "0-39"
    assert "nothing to submit" in project.submit("--runs", "1").stdout  # the pool is queued
    _wait_gone([entry.job_id], timeout=150)
    assert project.counts() == Counter(range(40))
    assert "nothing to submit" in project.submit("--runs", "1").stdout


def _outcomes(project: Project) -> Counter:
    """Outcomes of the recorded (unsuccessful) attempts of project's experiment."""
    exp = loadExperiment(str(project.experiment), config=load_config(str(project.config)))
    return Counter(outcome for _, outcome, _ in Attempts(state_dirs(exp).attempts).names())


def test_farm_finishes_uneven_indices_within_the_time_limit_where_static_bundles_lose_some(
    tmp_path,
):
    # 24 indices of 1-6 s (fixed seed), tasks of one minute warned 5 s before their end: Slurm
    # sends that warning up to 30 s early, and a warned task's running index is lost (timeout).
    rng = random.Random(11)
    durations = [rng.randint(1, 6) for _ in range(24)]
    projects = {mode: Project(tmp_path / mode, 24) for mode in ("farm", "static")}
    limits = {"time_hours": 1 / 60, "signal_lead_seconds": 5, "mem_per_core_gb": 0.25}
    for project in projects.values():
        (project.root / "durations.txt").write_text("".join(f"{d}\n" for d in durations))
        job = project.root / "job.sh"
        job.write_text(
            'root=$(dirname "$0"); echo "$1" >> "$root/count.txt"\n'
            'sleep "$(sed -n "$(($1 + 1))p" "$root/durations.txt")"\n'
        )
        project.config.write_text(json.dumps({"command": f"sh {shlex.quote(str(job))} {{index}}"}))
        (project.root / "minute.json").write_text(
            json.dumps({**limits, "indices_per_task": 1, "account_required": False})
        )

    def submit(mode: str, *args: str) -> str:
        project = projects[mode]
        result = project.submit("--runs", "1", *args, cluster=str(project.root / "minute.json"))
        assert result.returncode == 0, result.stderr
        return result.stdout

    # Static: the whole sweep in one in-order bundle of 84 s, past the minute.
    assert "submitted 24 indices" in submit("static", "--indices-per-task", "24")
    # Farm: 4 workers; before anything is measured an index is taken to need up to 12 s.
    farm = ("--workers", "4", "--index-minutes", "0.2")
    assert "a farm of 4 workers" in submit("farm", *farm)
    rounds = 1
    while True:
        _wait_gone([e.job_id for e in projects["farm"].entries()], timeout=120)
        if "nothing to submit" in submit("farm", *farm):
            break
        rounds += 1
        assert rounds <= 4, "farm did not converge"
    assert rounds >= 2  # the first workers stopped starting indices their minute could not hold
    assert projects["farm"].counts() == Counter(range(24))  # each index once, none killed
    assert _outcomes(projects["farm"]) == Counter()

    _wait_gone([e.job_id for e in projects["static"].entries()], timeout=120)
    assert _outcomes(projects["static"])[TIMEOUT] >= 1  # the bundle lost its running index
    assert len(projects["static"].counts()) < 24


def _status(project: Project) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")}
    env["PYEXP_CONFIG"] = str(project.config)
    argv = [sys.executable, "-m", "pyexp.cli.status", str(project.experiment), "--no-slurm"]
    return subprocess.run(argv, cwd=project.root, env=env, capture_output=True, text=True).stdout


def _attempt_outcomes(project: Project) -> Counter:
    exp = loadExperiment(str(project.experiment), config=load_config(str(project.config)))
    return Counter(outcome for _, outcome, _ in Attempts(state_dirs(exp).attempts).names())


def _cluster(project: Project, name: str, **fields) -> str:
    path = project.root / name
    base = {"time_hours": 0.1, "mem_per_core_gb": 0.25, "account_required": False}
    path.write_text(json.dumps({**base, **fields}))
    return str(path)


def test_a_failing_setup_line_stops_the_task_charges_nothing_and_status_names_it(tmp_path):
    project = Project(tmp_path, 4)
    cluster = _cluster(project, "broken-setup.json", setup=["true", "false"])
    for _ in range(2):  # the second run settles the first array (and submits it again)
        result = project.submit("--runs", "1", "--indices-per-task", "2", cluster=cluster)
        assert result.returncode == 0 and "submitted 4 indices" in result.stdout, result.stderr
        _wait_gone([e.job_id for e in project.entries()], timeout=60)
    errs = err_texts(project.root / "logs")  # the first array's folded by the second submit
    assert len(errs) == 4
    for err in errs:
        assert "pyexp: setup line failed (exit 1): false" in err.splitlines()
    assert project.counts() == Counter()  # the runner never started
    assert set(_attempt_outcomes(project)) == {"lost"}  # retried, never charged
    said = [line for line in _status(project).splitlines() if "setup line failed" in line]
    assert len(said) == 1 and "before pyexp-run started" in said[0]


def test_slurms_warning_signal_before_the_runner_is_up_starts_nothing_and_charges_nothing(
    tmp_path,
):
    # A one-minute limit with a 58 s lead: Slurm's USR1 comes at once, while the setup lines
    # run. The setup line waits for it (the script's trap notes it in PYEXP_EARLY_SIGNAL).
    project = Project(tmp_path, 4)
    wait = 'for i in $(seq 250); do [ -n "$PYEXP_EARLY_SIGNAL" ] && break; sleep 0.2; done'
    cluster = _cluster(
        project, "minute.json", time_hours=1 / 60, signal_lead_seconds=58, setup=[wait]
    )
    result = project.submit("--runs", "1", "--indices-per-task", "2", cluster=cluster)
    assert result.returncode == 0, result.stderr
    _wait_gone([e.job_id for e in project.entries()], timeout=120)
    said = "".join(err_texts(project.root / "logs"))
    assert said.count("before pyexp-run was up: starting no index") == 2, said
    assert project.counts() == Counter()  # no index started
    again = project.submit("--runs", "1", "--indices-per-task", "2", cluster=cluster)
    assert "submitted 4 indices" in again.stdout, again.stdout + again.stderr  # settles first
    assert "failed" not in _attempt_outcomes(project)  # never the user's failure
    _wait_gone([e.job_id for e in project.entries()], timeout=120)
