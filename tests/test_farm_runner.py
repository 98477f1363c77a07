"""Farm mode, runner side: pool entries in the ledger, pulling workers, pyexp.claim()."""

import json
import re
import shlex
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest
from runner_helpers import Project, sh, wait_for, write_entry

from pyexp.budget import EARLY_WARNING_SECONDS
from pyexp.indexset import IndexSet
from pyexp.job_environment import EARLY_SIGNAL, JobEnvironment
from pyexp.runner.pool import TimeBudget
from pyexp.state.layout import state_dirs
from pyexp.state.ledger import FARM, Ledger, LedgerEntry
from pyexp.state.records import CompletionRecords


def test_farm_entry_round_trips_and_lists_its_pool(tmp_path):
    ledger = Ledger(str(tmp_path))
    entry = LedgerEntry("e1", "/x.json", "f", {}, 1, [], mode=FARM, pool="0-4,9", workers=3)
    entry.time_limit_seconds, entry.index_minutes = 600.0, 0.5
    ledger.write(entry)
    back = ledger.load("e1")
    assert back == entry
    assert back.indices() == [0, 1, 2, 3, 4, 9]
    assert back.index_set() == IndexSet.parse("0-4,9")
    assert back.task_count() == 3


def test_entry_written_before_farm_fields_loads_as_static(tmp_path):
    old = asdict(LedgerEntry("e2", "/x.json", "f", {}, 1, [[3, 1], [2]]))
    for key in ("mode", "pool", "workers", "time_limit_seconds"):
        old.pop(key)
    (tmp_path / "e2.json").write_text(json.dumps(old))
    entry = Ledger(str(tmp_path)).load("e2")
    assert not entry.is_farm
    assert entry.indices() == [3, 1, 2]
    assert entry.index_set() == IndexSet.of([1, 2, 3])
    assert entry.task_count() == 2


# --- pulling workers (pyexp-run --ledger on a farm entry), real processes --------------------


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def farm_entry(project: Project, path: Path, pool: str, workers: int, **fields) -> str:
    return write_entry(project, path, [], mode=FARM, pool=pool, workers=workers, **fields)


def lease_figures(stderr: str) -> tuple[int, int]:
    found = re.search(r"(\d+) lease tries \((\d+) refused\)", stderr)
    assert found, stderr
    return int(found.group(1)), int(found.group(2))


def test_eight_workers_on_one_pool_run_each_index_once_and_rarely_meet(project):
    path = project.experiment("pool", {"a": list(range(20)), "b": list(range(10))})
    out = project.root / "ran.txt"
    ledger = farm_entry(project, path, "0-199", 8)
    command = sh('I=$2; echo "$I" >> "$1"; sleep 0.02', out, "{index}")
    procs = [project.start("--ledger", ledger, "--task", w, "--command", command) for w in range(8)]
    results = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, results
    ran = Counter(int(x) for x in out.read_text().split())
    assert sorted(ran) == list(range(200)) and set(ran.values()) == {1}
    tries, refused = map(sum, zip(*(lease_figures(err) for _, err in results), strict=True))
    # Workers start 25 indices apart: they meet only where one reaches the next one's start
    # (then each refused try is a meeting: ~80 here, as many as the look before each try used
    # to walk past); workers that started together would meet about 7 times per index.
    print(f"lease tries {tries}, refused {refused}")
    assert refused < 200, (tries, refused)
    assert tries - refused >= 200


def test_index_of_a_worker_killed_midway_is_run_by_the_next_worker(project):
    path = project.experiment("killed", {"x": list(range(4))})
    out, started = project.root / "ran.txt", project.root / "started"
    ledger = farm_entry(project, path, "0-3", 1)
    script = (
        'I=$2; echo "$I" >> "$1"; [ "$I" = 1 ] && [ ! -e "$3" ] && : > "$3" && sleep 60; exit 0'
    )
    command = sh(script, out, "{index}", started)
    first = project.start("--ledger", ledger, "--task", 0, "--command", command)
    wait_for(lambda: started.exists())
    first.kill()
    first.communicate(timeout=30)
    assert not project.complete(path, 1)  # it was running: no record, its lease is stale
    second = project.run("--ledger", ledger, "--task", 0, "--command", command)
    assert second.returncode == 0, second.stderr
    assert all(project.complete(path, i) for i in range(4))


def test_index_failed_by_one_worker_is_not_retried_by_the_others(project):
    path = project.experiment("failing", {"x": list(range(12))})
    out = project.root / "ran.txt"
    ledger = farm_entry(project, path, "0-11", 3)
    command = sh('I=$2; echo "$I" >> "$1"; sleep 0.05; [ "$I" != 5 ]', out, "{index}")
    procs = [project.start("--ledger", ledger, "--task", w, "--command", command) for w in range(3)]
    [p.communicate(timeout=120) for p in procs]
    ran = Counter(int(x) for x in out.read_text().split())
    assert ran[5] == 1 and set(ran.values()) == {1}
    assert [a["index"] for a in project.attempts(path)] == [5]


def test_worker_runs_cores_indices_at_once(project):
    path = project.experiment("cores", {"x": list(range(4))})
    out = project.root / "ran.txt"
    ledger = farm_entry(project, path, "0-3", 1, cores=4)
    command = sh(
        'I=$2; echo "start $PYEXP_INDEX" >> "$1"; sleep 1; echo "end" >> "$1"', out, "{index}"
    )
    result = project.run("--ledger", ledger, "--task", 0, "--command", command)
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert [line.split()[0] for line in lines[:4]] == ["start"] * 4  # all four before any end


def test_worker_does_not_start_an_index_its_time_cannot_hold(project):
    path = project.experiment("timed", {"x": list(range(10))})
    out = project.root / "ran.txt"
    # Measured: indices take 1.5 s (p90), which beats the 0.1 s index_minutes would say.
    exp = project.load(path)
    records = CompletionRecords(state_dirs(exp).done)
    for i in (8, 9):
        records.mark_complete(exp.getPermutation(i), exp.getRun(i), {"duration": 1.5})
    ledger = farm_entry(
        project,
        path,
        "0-9",
        1,
        time_limit_seconds=8.0,
        signal_lead_seconds=0.5,
        index_minutes=0.1 / 60,
    )
    command = sh('I=$2; echo "$I" >> "$1"; sleep 1', out, "{index}")
    result = project.run("--ledger", ledger, "--task", 0, "--command", command)
    assert result.returncode == 0, result.stderr
    ran = [int(x) for x in out.read_text().split()]
    assert 1 <= len(ran) <= 6  # 7.5 s of budget, 1.5 s per index estimated; a slow start: fewer
    assert re.search(r"not starting index \d+: it may take 2s and [01]s are left", result.stderr)
    assert "stopped before the time limit" in result.stderr
    assert project.attempts(path) == []  # nothing killed, nothing charged
    assert sum(project.complete(path, i) for i in range(8)) == len(ran)


def test_worker_uses_index_minutes_while_nothing_has_finished(project):
    path = project.experiment("guess", {"x": list(range(10))})
    ledger = farm_entry(project, path, "0-9", 1, time_limit_seconds=2.0, index_minutes=1.0)
    result = project.run("--ledger", ledger, "--task", 0, "--command", "true {index}")
    assert result.returncode == 0, result.stderr
    assert "not starting index 0: it may take 60s and 2s are left" in result.stderr
    assert not any(project.complete(path, i) for i in range(10))
    # seen, for the planner: a farm of tasks this short would start nothing again
    seen = json.loads(Path(state_dirs(project.load(path)).unfit).read_text())
    assert seen == {"time_limit_seconds": 2.0, "estimate": 60.0}


def test_worker_under_slurm_stops_starting_before_slurms_early_warning(tmp_path):
    # Slurm 22.05 here sent USR1@10 of a 60 s job 35 s before its end: the budget allows for it.
    entry = LedgerEntry(
        "e", "/x.json", "f", {}, 1, [], mode=FARM, pool="0-9", workers=1,
        time_limit_seconds=600.0, signal_lead_seconds=10,
    )  # fmt: skip
    records = CompletionRecords(str(tmp_path))
    slurm, plain = JobEnvironment(job_id="7"), JobEnvironment()
    under = TimeBudget.for_entry(entry, slurm, records, started=1000.0).deadline
    outside = TimeBudget.for_entry(entry, plain, records, started=1000.0).deadline
    assert outside == 1000.0 + 600 - 10
    assert under == outside - EARLY_WARNING_SECONDS == 1000.0 + 600 - 40


# --- in-process workers: pyexp.claim() in the user's script ---------------------------------

WORKER = """\
import os, sys, time
import pyexp
for job in pyexp.claim({args}):
    with job:
        if job.index == 2:
            raise ValueError("boom at index 2")
        if job.index == 0 and len(sys.argv) > 2:
            open(sys.argv[2], "w").close()
            time.sleep(30)
        with open(sys.argv[1], "a") as f:
            f.write(f"{{job.index}}\\n")
"""


def worker_script(project: Project, args: str = "") -> Path:
    script = project.root / "worker.py"
    script.write_text(WORKER.format(args=args))
    return script


def test_in_process_workers_run_each_index_once_and_an_exception_fails_only_its_index(project):
    # 3 workers of 2 cores: pyexp-run starts the script twice per worker.
    path = project.experiment("inproc", {"x": list(range(30))})
    out = project.root / "ran.txt"
    command = shlex.join([sys.executable, str(worker_script(project)), str(out)])
    ledger = farm_entry(project, path, "0-29", 3, command=command, cores=2)
    procs = [project.start("--ledger", ledger, "--task", w) for w in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], results
    ran = Counter(int(x) for x in out.read_text().split())
    assert sorted(ran) == [i for i in range(30) if i != 2] and set(ran.values()) == {1}
    assert [(a["index"], a["outcome"]) for a in project.attempts(path)] == [(2, "failed")]
    log = Path(project.attempts(path)[0]["log"]).read_text()
    assert "ValueError: boom at index 2" in log and "ValueError" in project.log(path, 2)
    assert sum(project.complete(path, i) for i in range(30)) == 29
    logs = [p for p in (project.root / "logs").rglob("*") if p.is_file()]
    assert len(logs) <= 3 * 2 * 2 + 3 * 2  # per worker: its slots, its 2 scripts; none per index


def test_in_process_worker_stopped_by_sigterm_records_its_index_preempted(project):
    path = project.experiment("stopped", {"x": list(range(5))})
    out, started = project.root / "ran.txt", project.root / "started"
    command = shlex.join([sys.executable, str(worker_script(project)), str(out), str(started)])
    ledger = farm_entry(project, path, "0-4", 1, command=command)
    proc = project.start("--ledger", ledger, "--task", 0)
    wait_for(lambda: started.exists(), timeout=30)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert [(a["index"], a["outcome"]) for a in project.attempts(path)] == [(0, "preempted")]
    assert not any(project.complete(path, i) for i in range(5))  # no new index started
    assert project.leases(path) == []


@pytest.mark.parametrize("in_process", [True, False])
def test_farm_worker_warned_before_the_runner_was_up_starts_nothing(project, in_process):
    path = project.experiment("early", {"x": list(range(4))})
    out = project.root / "ran.txt"
    if in_process:
        command = shlex.join([sys.executable, str(worker_script(project)), str(out)])
    else:
        command = sh('echo "$1" >> "$2"', "{index}", out)
    ledger = farm_entry(project, path, "0-3", 1, command=command)
    result = project.run("--ledger", ledger, "--task", 0, env={EARLY_SIGNAL: "USR1"})
    assert result.returncode == 128 + signal.SIGUSR1, result.stderr
    assert "stop signal came before pyexp-run was up" in result.stderr
    assert not out.exists() and project.attempts(path) == []


def test_claim_with_an_experiment_file_runs_locally(project):
    path = project.experiment("local", {"x": list(range(6))})
    out = project.root / "ran.txt"
    script = worker_script(project, args=f"{str(path)!r}, runs=1")
    result = subprocess.run(
        [sys.executable, str(script), str(out)], env=project.env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert sorted(int(x) for x in out.read_text().split()) == [0, 1, 3, 4, 5]
    assert "pyexp.claim: 5 done, 0 already complete, 1 failed" in result.stderr


def test_farm_command_without_index_that_never_claims_says_so(project):
    path = project.experiment("noclaim", {"x": [1, 2]})
    ledger = farm_entry(project, path, "0-1", 1, command="true")
    result = project.run("--ledger", ledger, "--task", 0)
    assert result.returncode == 1
    assert "never did; add {index} to run it per index" in result.stderr


def test_farm_worker_skips_indices_whose_parameters_were_removed(project):
    path = project.experiment("removed", {"x": [10, 20, 30, 40]})
    out = project.root / "ran"
    ledger = farm_entry(project, path, "0-3", 1, command=sh('echo "$1" >> "$2"', "{index}", out))
    path.write_text(json.dumps({"metaParameters": {"x": [40, 25, 10]}}))  # 20, 30 removed
    result = project.run("--ledger", ledger, "--task", "0")
    assert result.returncode == 0, result.stderr
    assert sorted(out.read_text().split()) == ["0", "3"]
    skipped = [line for line in result.stderr.splitlines() if line.endswith("skipped")]
    assert skipped == [
        f"pyexp-run: index {i}: its parameters were removed from {path}: skipped" for i in (1, 2)
    ]
