"""Where each index stands (done, running, queued, failed, missing), settling, status."""

from __future__ import annotations

import json
import os

import pytest

from pyexp.cli.status import main as status_main
from pyexp.config import getConfig, load_config
from pyexp.experiment import loadExperiment
from pyexp.reconcile import (
    DONE,
    FAILED_OUT,
    MISSING,
    QUEUED,
    RUNNING,
    QueueSnapshot,
    classify,
    settle,
    to_submit,
)
from pyexp.state.attempts import FAILED, LOST, OOM, TIMEOUT, Attempts
from pyexp.state.layout import state_dirs
from pyexp.state.leases import IndexLeases
from pyexp.state.ledger import SETTLED, SUBMITTED, Ledger, LedgerEntry, new_entry_id
from pyexp.state.records import CompletionRecords, record_key


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An experiment of 6 permutations in a project folder with its own config.json."""
    (tmp_path / "experiments").mkdir()
    path = tmp_path / "experiments" / "sweep.json"
    path.write_text(json.dumps({"name": "sweep", "metaParameters": {"x": list(range(6))}}))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"command": "true"}))
    monkeypatch.setenv("PYEXP_CONFIG", str(config))
    getConfig.cache_clear()
    yield tmp_path
    getConfig.cache_clear()


def _exp(root):
    return loadExperiment(
        str(root / "experiments" / "sweep.json"), load_config(root / "config.json")
    )


def _key(exp, i):
    return record_key(exp.getPermutation(i), exp.getRun(i))


def _entry(exp, tasks, job_id="500"):
    entry = LedgerEntry(new_entry_id(), exp.path, exp.fingerprint(), exp.description, 2, tasks)
    ledger = Ledger(state_dirs(exp).ledger)
    ledger.write(entry)
    ledger.mark_submitted(entry, job_id)
    return entry


def _fail(exp, i, times, outcome=FAILED):
    for t in range(times):
        Attempts(state_dirs(exp).attempts).record(_key(exp, i), outcome, {"exit_code": 3}, f"9_{t}")


def test_every_index_has_exactly_one_status(project):
    exp = _exp(project)
    dirs = state_dirs(exp)
    CompletionRecords(dirs.done).mark_complete(exp.getPermutation(0), 0)
    leases = IndexLeases(dirs.leases, 30)
    assert leases.try_take(_key(exp, 1)) is not None
    entry = _entry(exp, [[2], [3]])
    _fail(exp, 4, 3)
    _fail(exp, 5, 2)
    _fail(exp, 7, 5, TIMEOUT)  # timeouts never exhaust an index
    queue = QueueSnapshot({(entry.id, 0): "PENDING", (entry.id, 1): "COMPLETED"})
    try:
        standing = classify(exp, 2, queue, max_attempts=3)
        submit = to_submit(exp, 2, queue)
    finally:
        leases.release()
    assert standing.status[:6] == [DONE, RUNNING, QUEUED, MISSING, FAILED_OUT, MISSING]
    assert standing.status[7] == MISSING
    assert standing.counts() == {"done": 1, "running": 1, "queued": 1, "failed": 1, "missing": 8}
    assert standing.failed_keys == {4: _key(exp, 4)}
    assert submit == [3, 5, 6, 7, 8, 9, 10, 11]
    assert 4 in to_submit(exp, 2, queue, retry_failed=True)
    assert 5 not in to_submit(exp, 2, queue, max_attempts=2)


def test_finished_work_stays_done_when_a_sweep_value_is_added(project):
    exp = _exp(project)
    CompletionRecords(state_dirs(exp).done).mark_complete(exp.getPermutation(5), 0)
    path = project / "experiments" / "sweep.json"
    path.write_text(json.dumps({"name": "sweep", "metaParameters": {"x": [-1, *range(6)]}}))
    grown = _exp(project)
    assert grown.getPermutation(6) == {"x": 5}
    assert classify(grown, 1, QueueSnapshot()).indices(DONE) == [6]


def test_queued_index_whose_parameters_changed_is_not_queued(project):
    exp = _exp(project)
    entry = _entry(exp, [[0, 1, 5]])
    queue = QueueSnapshot({(entry.id, 0): "RUNNING"})
    path = project / "experiments" / "sweep.json"
    path.write_text(json.dumps({"name": "sweep", "metaParameters": {"x": [0, 1, 2, 3, 4, 9]}}))
    changed = _exp(project)
    # 0 and 1 mean what they meant; 5 now means x=9, which the runner will refuse.
    assert classify(changed, 1, queue).indices(QUEUED) == [0, 1]
    assert 5 in to_submit(changed, 1, queue)


def _started(exp, attempt):
    folder = state_dirs(exp).started
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, attempt), "w").close()


def test_settle_records_how_vanished_tasks_ended(project):
    exp = _exp(project)
    CompletionRecords(state_dirs(exp).done).mark_complete(exp.getPermutation(0), 0)
    attempts = Attempts(state_dirs(exp).attempts)
    attempts.record(_key(exp, 1), FAILED, {"exit_code": 1}, "500_0")  # the runner's own record
    entry = _entry(exp, [[0, 1], [2, 3], [4]])
    _started(exp, "500_0")
    _started(exp, "500_1")
    asked = []

    def sacct(jobs):
        asked.append(jobs)
        return {"500_1": "OUT_OF_MEMORY", "500_2": "NODE_FAIL"}

    assert settle(exp, QueueSnapshot(), sacct) == 3
    assert asked == [["500"]]
    assert set(attempts.names()) == {
        (_key(exp, 1), FAILED, "500_0"),  # index 0 was done, index 1 had its own record
        (_key(exp, 2), OOM, "500_1"),  # running when the task ran out of memory
        (_key(exp, 3), LOST, "500_1"),  # never started: not charged with the OOM
        (_key(exp, 4), LOST, "500_2"),  # node failure
    }
    assert Ledger(state_dirs(exp).ledger).load(entry.id).state == SETTLED
    assert settle(exp, QueueSnapshot(), sacct) == 0  # settled once
    # OOM counts towards the attempt cap; lost never does.
    assert classify(exp, 1, QueueSnapshot(), max_attempts=1).indices(FAILED_OUT) == [1, 2]


def test_settle_without_sacct(project):
    exp = _exp(project)
    active = _entry(exp, [[0], [1]], job_id="600")
    broken = _entry(exp, [[2]], job_id="601")  # its script failed before pyexp-run started
    vanished = _entry(exp, [[3]], job_id="602")  # its runner started, then the node died
    _started(exp, "602_0")
    queue = QueueSnapshot({(active.id, 1): "RUNNING"})
    assert settle(exp, queue, lambda jobs: None) == 2
    names = set(Attempts(state_dirs(exp).attempts).names())
    assert names == {(_key(exp, 2), FAILED, "601_0"), (_key(exp, 3), LOST, "602_0")}
    ledger = Ledger(state_dirs(exp).ledger)
    assert ledger.load(active.id).state == SUBMITTED
    assert {ledger.load(e.id).state for e in (broken, vanished)} == {SETTLED}
    assert to_submit(exp, 1, queue) == [0, 2, 3, 4, 5]  # one failure is under the cap
    assert 2 not in to_submit(exp, 1, queue, max_attempts=1)  # a broken script stops


def test_requeued_task_attempts_are_counted_separately(project, monkeypatch):
    from pyexp.state.leases import slurm_attempt

    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "700")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    first = slurm_attempt()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert (first, slurm_attempt()) == ("700_3", "700_3-1")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    assert slurm_attempt() is None


def test_status_shows_counts_and_failed_indices_with_reason_and_log(project, capsys):
    exp = _exp(project)
    CompletionRecords(state_dirs(exp).done).mark_complete(exp.getPermutation(0), 0)
    key = _key(exp, 2)
    attempts = Attempts(state_dirs(exp).attempts)
    for job in ("1_0", "2_0", "3_0"):
        attempts.record(key, FAILED, {"exit_code": 7, "log": "/logs/2.log"}, job)
    path = str(project / "experiments" / "sweep.json")

    assert status_main([path, "--runs", "1", "--no-slurm", "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert {k: report[k] for k in ("done", "running", "queued", "failed", "missing")} == {
        "done": 1,
        "running": 0,
        "queued": 0,
        "failed": 1,
        "missing": 4,
    }
    assert report["failed_indices"] == [
        {"index": 2, "outcome": FAILED, "exit_code": 7, "log": "/logs/2.log"}
    ]

    assert status_main([path, "--runs", "1", "--no-slurm", "-v"]) == 0
    table = capsys.readouterr().out
    assert "index 2: failed (exit 7) log: /logs/2.log" in table
    assert table.splitlines()[1].split()[1:] == ["1", "0", "0", "1", "4"]


def test_status_of_a_broken_experiment_is_one_line(project, capsys):
    bad = project / "experiments" / "bad.json"
    bad.write_text('{"metaParameters": {"x": []}}')
    assert status_main([str(bad), "--no-slurm"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pyexp-status: ") and err.count("\n") == 1 and "x" in err


def test_sacct_states_parsed_and_none_without_accounting(tmp_path, monkeypatch):
    from pyexp.scheduler import slurm

    fake = tmp_path / "sacct"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ -n "$NO_DBD" ]; then echo "Slurm accounting storage is disabled" >&2; exit 1; fi\n'
        'echo "$@" > "$0.args"\n'
        "printf '500_0|COMPLETED\\n500_1|OUT_OF_MEMORY\\n500_2|CANCELLED by 0\\n'\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PYEXP_SACCT", str(fake))
    states = slurm.sacct_states(["500", "501"])
    assert states == {"500_0": "COMPLETED", "500_1": "OUT_OF_MEMORY", "500_2": "CANCELLED"}
    assert "-j 500,501" in (tmp_path / "sacct.args").read_text()
    monkeypatch.setenv("NO_DBD", "1")
    assert slurm.sacct_states(["500"]) is None
    assert slurm.sacct_states([]) is None


def test_status_verbose_names_who_runs_an_index(project, capsys):
    import socket

    exp = _exp(project)
    leases = IndexLeases(state_dirs(exp).leases, 60, job="77_3")
    assert leases.try_take(_key(exp, 4)) is not None
    try:
        path = str(project / "experiments" / "sweep.json")
        assert status_main([path, "--no-slurm", "-v"]) == 0
    finally:
        leases.release()
    line = f"index 4: running on {socket.gethostname()} pid {os.getpid()} job 77_3"
    assert line in capsys.readouterr().out


def test_stray_files_in_attempts_are_ignored(project):
    exp = _exp(project)
    attempts = Attempts(state_dirs(exp).attempts)
    attempts.record(_key(exp, 0), FAILED, {"exit_code": 1}, "5_0")
    with open(os.path.join(state_dirs(exp).attempts, "README"), "w") as f:
        f.write("notes")
    assert attempts.names() == [(_key(exp, 0), FAILED, "5_0")]
    assert classify(exp, 1, QueueSnapshot()).counts()["missing"] == 6


def test_bad_lease_seconds_is_a_one_line_error(project, capsys, monkeypatch):
    monkeypatch.setenv("PYEXP_LEASE_SECONDS", "abc")
    assert status_main([str(project / "experiments" / "sweep.json"), "--no-slurm"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PYEXP_LEASE_SECONDS='abc'" in err


def test_every_state_squeue_shows_is_active_but_the_final_ones():
    queue = QueueSnapshot({("e", 0): "REQUEUE_HOLD", ("e", 1): "STOPPED", ("e", 2): "COMPLETED"})
    assert [queue.active("e", t) for t in range(4)] == [True, True, False, False]


def test_status_rejects_zero_runs_in_one_line(project, capsys):
    with pytest.raises(SystemExit) as exit_info:
        status_main([str(project / "experiments" / "sweep.json"), "--runs", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("pyexp-status: ") and err.count("\n") == 1 and "at least 1" in err


def test_status_uses_the_attempt_cap_of_the_last_explicit_submit(project):
    from pyexp.reconcile import max_attempts

    exp = _exp(project)
    assert max_attempts(exp, None) == 3
    assert max_attempts(exp, 1, remember=False) == 1 and max_attempts(exp, None) == 3
    assert max_attempts(exp, 1, remember=True) == 1
    assert max_attempts(exp, None) == 1  # status and later cron runs agree with it
