"""Where each index stands (done, running, queued, failed, missing), settling, status."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import write_garbage_ledger_entry, write_project

from pyexp.cli.status import main as status_main
from pyexp.config import getConfig, load_config
from pyexp.experiment import loadExperiment
from pyexp.job_environment import JobEnvironment
from pyexp.scheduler.slurm import parse_squeue
from pyexp.standing.reconcile import (
    DONE,
    FAILED_OUT,
    FAILING,
    MISSING,
    QUEUED,
    RUNNING,
    QueueSnapshot,
    active_indices,
    classify,
    to_submit,
)
from pyexp.standing.settling import settle
from pyexp.state.attempts import FAILED, LOST, OOM, PREEMPTED, TIMEOUT, Attempts
from pyexp.state.layout import log_dir, read_ledger, state_dirs
from pyexp.state.leases import IndexLeases
from pyexp.state.ledger import SETTLED, SUBMITTED, Ledger, LedgerEntry, new_entry_id
from pyexp.state.records import CompletionRecords, record_key
from pyexp.state.task_logs import TaskLog


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An experiment of 6 permutations in a project folder with its own config.json."""
    write_project(tmp_path, {"name": "sweep", "metaParameters": {"x": list(range(6))}})
    monkeypatch.setenv("PYEXP_CONFIG", str(tmp_path / "config.json"))
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
    statuses = [standing.status_of(i) for i in range(8)]
    assert statuses == [DONE, RUNNING, QUEUED, MISSING, FAILED_OUT, FAILING, MISSING, MISSING]
    assert standing.counts() == {
        "done": 1,
        "running": 1,
        "held": 0,
        "queued": 1,
        "continuing": 0,
        "failing": 1,
        "failed": 1,
        "missing": 7,
    }
    assert standing.failed_keys == {4: _key(exp, 4)}
    assert standing.failing_keys == {5: _key(exp, 5)}
    assert list(submit) == [3, 5, 6, 7, 8, 9, 10, 11]
    assert 4 in to_submit(exp, 2, queue, retry_failed=True)
    assert 5 not in to_submit(exp, 2, queue, max_attempts=2)


def test_finished_work_stays_done_when_a_sweep_value_is_added(project):
    exp = _exp(project)
    CompletionRecords(state_dirs(exp).done).mark_complete(exp.getPermutation(5), 0)
    path = project / "experiments" / "sweep.json"
    path.write_text(json.dumps({"name": "sweep", "metaParameters": {"x": [-1, *range(6)]}}))
    grown = _exp(project)
    assert grown.getPermutation(6) == {"x": 5}
    assert list(classify(grown, 1, QueueSnapshot()).indices(DONE)) == [6]


def test_queued_work_keeps_its_parameters_when_sweep_values_are_added_and_reordered(project):
    path = project / "experiments" / "sweep.json"
    path.write_text(json.dumps({"name": "sweep", "metaParameters": {"x": [0, 1], "y": [5, 6]}}))
    exp = _exp(project)
    entry = _entry(exp, [[0, 1], [2, 3, 4]])  # index 4 is run 1 of x=0, y=5
    queue = QueueSnapshot({(entry.id, 0): "PENDING", (entry.id, 1): "RUNNING"})
    meta = {"x": [0, 7, 1], "y": [6, 5]}  # a value in the middle of x, y reordered
    path.write_text(json.dumps({"name": "sweep", "metaParameters": meta}))
    edited = _exp(project)
    queued = classify(edited, 2, queue).indices(QUEUED)
    assert sorted(_key(edited, i) for i in queued) == sorted(_key(exp, i) for i in range(5))
    assert list(queued) == [0, 1, 4, 5, 7]
    submit = to_submit(edited, 2, queue)
    # x=7 in both runs, and run 1 of the three old permutations that were not queued in run 1
    assert list(submit) == [2, 3, 6, 8, 9, 10, 11]
    assert [edited.getPermutation(i)["x"] for i in submit] == [7, 7, 0, 7, 7, 1, 1]


def test_queued_work_whose_value_was_removed_is_not_queued(project):
    exp = _exp(project)
    entry = _entry(exp, [[0, 1, 5]])
    queue = QueueSnapshot({(entry.id, 0): "RUNNING"})
    path = project / "experiments" / "sweep.json"
    path.write_text(json.dumps({"name": "sweep", "metaParameters": {"x": [0, 1, 2, 3, 4]}}))
    removed = _exp(project)
    assert list(classify(removed, 1, queue).indices(QUEUED)) == [0, 1]


def test_queued_work_of_other_save_path_field_values_is_not_queued_for_these(project, monkeypatch):
    config = project / "config.json"
    config.write_text(json.dumps({"command": "true", "save_path": "results/{agent}/{params}"}))
    path = project / "experiments" / "sweep.json"
    path.write_text(json.dumps({"agent": "A", "metaParameters": {"x": list(range(6))}}))
    entry = _entry(_exp(project), [[0, 1]])
    queue = QueueSnapshot({(entry.id, 0): "PENDING"})
    path.write_text(json.dumps({"agent": "B", "metaParameters": {"x": list(range(6))}}))
    assert list(classify(_exp(project), 1, queue).indices(QUEUED)) == []  # A's work records apart


def _noted(exp, tag, key, index):
    """The attempt line a runner of task tag notes in its task log as it starts index."""
    log = TaskLog(log_dir(exp), tag)
    _, path, offset = log.open_slot(0)
    log.note(key, index, path, offset)


def _started(exp, attempt):
    folder = state_dirs(exp).started
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, attempt), "w").close()


def _launched(exp, entry, task):
    """The task's Slurm output file, which exists once Slurm launched its script."""
    os.makedirs(log_dir(exp), exist_ok=True)
    open(os.path.join(log_dir(exp), f"{entry.job_name}_{task}.err"), "w").close()


def test_settle_charges_only_the_index_the_task_was_running(project):
    exp = _exp(project)
    CompletionRecords(state_dirs(exp).done).mark_complete(exp.getPermutation(0), 0)
    attempts = Attempts(state_dirs(exp).attempts)
    attempts.record(_key(exp, 1), FAILED, {"exit_code": 1}, "500_0")  # the runner's own record
    entry = _entry(exp, [[0, 1], [2, 3], [4, 5]])
    for t in range(3):
        _started(exp, f"500_{t}")
    # Task 1 was running index 3 (its lease names the task) when it ran out of memory; index 2
    # never started. Index 5 is run by a live runner of another job: not task 2's to account.
    dead = IndexLeases(state_dirs(exp).leases, 60, job="500_1")
    other = IndexLeases(state_dirs(exp).leases, 60, job="900_0")
    assert dead.try_take(_key(exp, 3)) and other.try_take(_key(exp, 5))
    _noted(exp, "500_1", _key(exp, 3), 3)  # died before its first beat wrote the lease's info
    queue = QueueSnapshot({(entry.id, 1): "OUT_OF_MEMORY", (entry.id, 2): "NODE_FAIL"})
    try:
        assert settle(exp, queue) == 3
    finally:
        dead.release()
        other.release()
    assert set(attempts.names()) == {
        (_key(exp, 1), FAILED, "500_0"),
        (_key(exp, 2), LOST, "500_1"),  # never started: not charged with the OOM
        (_key(exp, 3), OOM, "500_1"),
        (_key(exp, 4), LOST, "500_2"),  # node failure
    }
    assert Ledger(state_dirs(exp).ledger).load(entry.id).state == SETTLED
    assert settle(exp, queue) == 0  # settled once
    # OOM counts towards the attempt cap; lost never does.
    assert list(classify(exp, 1, QueueSnapshot(), max_attempts=1).indices(FAILED_OUT)) == [1, 3]


def test_settle_without_sacct(project):
    exp = _exp(project)
    active = _entry(exp, [[0], [1]], job_id="600")
    broken = _entry(exp, [[2]], job_id="601")  # its script failed before pyexp-run started
    _launched(exp, broken, 0)
    vanished = _entry(exp, [[3]], job_id="602")  # its runner started, then the node died
    _launched(exp, vanished, 0)
    _started(exp, "602_0")
    never = _entry(exp, [[4]], job_id="603")  # cancelled while pending, long ago: no output
    queue = QueueSnapshot({(active.id, 1): "RUNNING"})
    assert settle(exp, queue) == 3
    names = set(Attempts(state_dirs(exp).attempts).names())
    assert names == {
        (_key(exp, 2), FAILED, "601_0"),
        (_key(exp, 3), LOST, "602_0"),
        (_key(exp, 4), LOST, "603_0"),
    }
    ledger = Ledger(state_dirs(exp).ledger)
    assert ledger.load(active.id).state == SUBMITTED
    assert {ledger.load(e.id).state for e in (broken, vanished, never)} == {SETTLED}
    assert list(to_submit(exp, 1, queue)) == [0, 2, 3, 4, 5]  # one failure is under the cap
    assert 2 not in to_submit(exp, 1, queue, max_attempts=1)  # a broken script stops
    assert 4 in to_submit(exp, 1, queue, max_attempts=1)


def _said(exp, entry, task, text):
    """The task's .err, as the array script leaves it when it ends before pyexp-run."""
    os.makedirs(log_dir(exp), exist_ok=True)
    with open(os.path.join(log_dir(exp), f"{entry.job_name}_{task}.err"), "w") as f:
        f.write(f"Lmod has detected the following error: ...\n{text}\n")


def test_a_failed_setup_line_charges_no_index_and_status_and_submit_name_it(project, capsys):
    from pyexp.standing.settling import broken_script

    exp = _exp(project)
    line = "pyexp: setup line failed (exit 1): module load python/3.11"
    for n in range(3):  # three cron rounds, each array's script stopped by its setup line
        entry = _entry(exp, [[0, 1, 2], [3, 4, 5]], job_id=str(610 + n))
        for t in range(2):
            _said(exp, entry, t, line)
        assert settle(exp, QueueSnapshot()) == 6  # state unknown: no sacct, squeue forgot it
    outcomes = {outcome for _, outcome, _ in Attempts(state_dirs(exp).attempts).names()}
    assert outcomes == {LOST}  # retried, never charged
    reason = json.loads(next(Path(state_dirs(exp).attempts).iterdir()).read_text())["why"]
    assert reason.startswith(line)
    assert list(classify(exp, 1, QueueSnapshot(), max_attempts=1).indices(MISSING)) == list(
        range(6)
    )
    refusal = broken_script(exp, 3)  # pyexp-submit stops resubmitting it, saying why
    assert refusal and line in refusal and "--retry-failed" in refusal
    assert status_main([str(project / "experiments" / "sweep.json"), "--no-slurm"]) == 0
    shown = [x for x in capsys.readouterr().out.splitlines() if "setup line failed" in x]
    assert len(shown) == 1 and "before pyexp-run started" in shown[0]
    assert log_dir(exp) in shown[0]


@pytest.mark.parametrize("state", [None, "TIMEOUT"])
def test_a_task_stopped_by_slurm_before_the_runner_started_is_not_charged(project, state):
    exp = _exp(project)
    entry = _entry(exp, [[0, 1]], job_id="620")
    _said(exp, entry, 0, "pyexp: stopped by SIGTERM before pyexp-run started")
    assert settle(exp, QueueSnapshot({(entry.id, 0): state} if state else {})) == 2
    outcomes = {outcome for _, outcome, _ in Attempts(state_dirs(exp).attempts).names()}
    assert outcomes == ({LOST} if state is None else {TIMEOUT})
    assert Ledger(state_dirs(exp).ledger).load(entry.id).script_failed == ""


def _fake(tmp_path, name, body):
    fake = tmp_path / name
    fake.write_text("#!/bin/sh\n" + 'echo "$@" > "$0.args"\n' + body)
    fake.chmod(0o755)
    return fake


def test_pending_array_cancelled_three_times_is_not_failed(project, tmp_path, monkeypatch):
    from pyexp.scheduler import slurm

    exp = _exp(project)
    for round_ in range(3):
        entry = _entry(exp, [[0, 1], [2]], job_id=str(700 + round_))
        lines = "".join(f"{entry.job_id}_{t}|{entry.job_name}|CANCELLED\\n" for t in (0, 1))
        squeue = _fake(tmp_path, "squeue", f"printf '{lines}'\n")
        monkeypatch.setenv("PYEXP_SQUEUE", str(squeue))
        queue = slurm.queue_snapshot()
        assert "-t all" in (tmp_path / "squeue.args").read_text()
        assert settle(exp, queue) == 3
    outcomes = {o for _, o, _ in Attempts(state_dirs(exp).attempts).names()}
    assert outcomes == {PREEMPTED}
    assert list(to_submit(exp, 1, QueueSnapshot(), max_attempts=1)) == list(range(6))


def test_sacct_running_or_pending_task_is_not_settled_nor_resubmitted(
    project, tmp_path, monkeypatch
):
    from pyexp.scheduler import slurm
    from pyexp.standing.settling import with_accounting

    exp = _exp(project)
    entry = _entry(exp, [[0], [1], [2], [3], [4]], job_id="800")
    sacct = _fake(
        tmp_path,
        "sacct",
        "printf '800_0|RUNNING\\n800_[1-2]|PENDING\\n800_3|REQUEUED\\n800_4|PREEMPTED\\n'\n",
    )
    monkeypatch.setenv("PYEXP_SACCT", str(sacct))
    queue = with_accounting(exp, QueueSnapshot(), slurm.sacct_states)  # squeue forgot them
    assert "-j 800" in (tmp_path / "sacct.args").read_text()
    assert settle(exp, queue) == 0
    assert Ledger(state_dirs(exp).ledger).load(entry.id).state == SUBMITTED
    assert list(classify(exp, 1, queue).indices(QUEUED)) == [0, 1, 2, 3]
    assert list(to_submit(exp, 1, queue)) == [4, 5]

    sacct.write_text("#!/bin/sh\nprintf '800_[0-3]|COMPLETED\\n800_4|PREEMPTED\\n'\n")
    queue = with_accounting(exp, QueueSnapshot(), slurm.sacct_states)
    assert settle(exp, queue) == 5  # no runner left a record: none started, none charged
    assert {o for _, o, _ in Attempts(state_dirs(exp).attempts).names()} == {LOST, PREEMPTED}
    assert list(to_submit(exp, 1, queue, max_attempts=1)) == list(range(6))


def test_squeue_listing_wins_over_lagging_accounting():
    queue = QueueSnapshot({("e", 0): "COMPLETED", ("e", 1): "PENDING"})
    merged = queue.merged({("e", 0): "RUNNING", ("e", 1): "CANCELLED", ("e", 2): "RUNNING"})
    assert [merged.active("e", t) for t in range(3)] == [False, True, True]


def test_requeued_task_attempts_are_counted_separately(project, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "700")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    first = JobEnvironment.read().attempt
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert (first, JobEnvironment.read().attempt) == ("700_3", "700_3-1")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    assert JobEnvironment.read().attempt is None


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


def test_stray_files_in_attempts_are_ignored(project):
    exp = _exp(project)
    attempts = Attempts(state_dirs(exp).attempts)
    attempts.record(_key(exp, 0), FAILED, {"exit_code": 1}, "5_0")
    with open(os.path.join(state_dirs(exp).attempts, "README"), "w") as f:
        f.write("notes")
    assert attempts.names() == [(_key(exp, 0), FAILED, "5_0")]
    counts = classify(exp, 1, QueueSnapshot()).counts()
    assert (counts["failing"], counts["missing"]) == (1, 5)


def test_every_state_squeue_shows_is_active_but_the_final_ones():
    queue = QueueSnapshot({("e", 0): "REQUEUE_HOLD", ("e", 1): "STOPPED", ("e", 2): "COMPLETED"})
    assert [queue.active("e", t) for t in range(4)] == [True, True, False, False]


def test_status_uses_the_attempt_cap_of_the_last_explicit_submit(project):
    from pyexp.standing.reconcile import max_attempts

    exp = _exp(project)
    assert max_attempts(exp, None) == 3
    assert max_attempts(exp, 1, remember=False) == 1 and max_attempts(exp, None) == 3
    assert max_attempts(exp, 1, remember=True) == 1
    assert max_attempts(exp, None) == 1  # status and later cron runs agree with it


def test_submit_refuses_while_an_unreadable_entrys_array_is_in_squeue(project):
    from pyexp.standing.reconcile import LedgerUnreadable, check_ledger

    exp = _exp(project)
    bad = write_garbage_ledger_entry(exp)
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n\xff\xfe")  # binary junk
    # The advice names the array as Slurm does (squeue's name, else the experiment's job name).
    queue = parse_squeue("77_3|renamed-pyexp-0badc0ffee00|RUNNING\n")
    with pytest.raises(LedgerUnreadable) as refused:
        check_ledger(exp, queue, read_ledger(exp))
    message = str(refused.value)
    assert "\n" not in message and bad in message
    assert "(scancel -n renamed-pyexp-0badc0ffee00)" in message
    with pytest.raises(LedgerUnreadable) as refused:
        check_ledger(exp, QueueSnapshot({("0badc0ffee00", 3): "RUNNING"}), read_ledger(exp))
    assert "(scancel -n sweep-pyexp-0badc0ffee00)" in str(refused.value)
    gone = QueueSnapshot({("0badc0ffee00", 3): "CANCELLED"})
    (warning,) = check_ledger(exp, gone, read_ledger(exp))
    assert bad in warning and "\n" not in warning
    assert list(to_submit(exp, 1, gone)) == list(range(6))


def _marker(exp, i, body, age):
    folder = state_dirs(exp).leases
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, _key(exp, i) + ".lease")
    with open(path, "w") as f:
        f.write(body)
    os.utime(path, (os.path.getmtime(path) - age,) * 2)
    return path


def test_stale_lease_markers_are_held_and_resubmitted_live_foreign_ones_are_running(
    project, capsys
):
    from pyexp.standing.reconcile import HELD, RUNNING

    exp = _exp(project)
    foreign = "filelock/2\npid=4242\nhost=node7\nmode=lease\ntoken=t\nduration=600.0\n"
    _marker(exp, 1, foreign, age=120)  # a longer lease duration than ours, still renewed
    _marker(exp, 2, "", age=3600)  # killed between creating and writing it
    ours = "filelock/2\npid=4243\nhost=node8\nmode=lease\ntoken=t\nduration=60.0\n"
    _marker(exp, 3, ours, age=120)  # a dead holder
    standing = classify(exp, 1, QueueSnapshot())
    assert list(standing.indices(RUNNING)) == [1]
    assert list(standing.indices(HELD)) == [2, 3]
    assert list(to_submit(exp, 1, QueueSnapshot())) == [0, 2, 3, 4, 5]

    path = str(project / "experiments" / "sweep.json")
    assert status_main([path, "--no-slurm"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "never submitted and no --runs" in lines[0]
    assert lines[2].split("  ")[1:4] == ["done 0", "running 1 (16.7%)", "held 2 (33.3%)"]
    assert any(
        "index 3: held by a stale lease" in line
        and "pid 4243 on node8" in line
        and "120 s ago" in line
        for line in lines
    ), lines
    assert any("index 2: held" in line and "nobody" in line for line in lines)


def _farm(exp, pool, workers, job_id="600"):
    entry = LedgerEntry(
        new_entry_id(), exp.path, exp.fingerprint(), exp.description, 1, [],
        mode="farm", pool=pool, workers=workers,
    )  # fmt: skip
    ledger = Ledger(state_dirs(exp).ledger)
    ledger.write(entry)
    ledger.mark_submitted(entry, job_id)
    return entry


def test_a_farm_pool_is_queued_while_any_worker_may_run(project):
    exp = _exp(project)
    entry = _farm(exp, "1-4", workers=3)
    one_left = QueueSnapshot({(entry.id, 0): "COMPLETED", (entry.id, 2): "RUNNING"})
    assert list(active_indices(entry, one_left)) == [1, 2, 3, 4]
    assert list(classify(exp, 1, one_left).indices(QUEUED)) == [1, 2, 3, 4]
    all_left = QueueSnapshot({(entry.id, w): "COMPLETED" for w in range(3)})
    assert list(active_indices(entry, all_left)) == []
    assert list(classify(exp, 1, all_left).indices(MISSING)) == list(range(6))


def test_settled_farm_charges_only_what_its_workers_were_running(project):
    exp = _exp(project)
    entry = _farm(exp, "0-5", workers=2)
    CompletionRecords(state_dirs(exp).done).mark_complete(exp.getPermutation(0), 0)
    # Worker 1 was running index 3 when it ran out of time; index 4 is another job's, live.
    dead = IndexLeases(state_dirs(exp).leases, 60, job="600_1")
    other = IndexLeases(state_dirs(exp).leases, 60, job="900_0")
    assert dead.try_take(_key(exp, 3)) and other.try_take(_key(exp, 4))
    _noted(exp, "600_1", _key(exp, 3), 3)  # died before its first beat wrote the lease's info
    queue = QueueSnapshot({(entry.id, 0): "COMPLETED", (entry.id, 1): "TIMEOUT"})
    try:
        assert settle(exp, queue) == 1
    finally:
        dead.release()
        other.release()
    attempts = Attempts(state_dirs(exp).attempts)
    assert set(attempts.names()) == {(_key(exp, 3), TIMEOUT, "600_1")}  # the rest: lost, uncharged
    assert Ledger(state_dirs(exp).ledger).load(entry.id).state == SETTLED
    assert list(classify(exp, 1, queue).indices(MISSING)) == [1, 2, 3, 4, 5]


def test_array_whose_sbatch_may_still_be_in_flight_is_queued_until_sbatch_would_time_out(
    project, monkeypatch
):
    # A submitter paused (or a slow slurmctld) between recording an array and sbatch's answer:
    # another submitter must not submit the same indices while that sbatch may still queue them.
    monkeypatch.setenv("PYEXP_SLURM_TIMEOUT", "5")
    exp = _exp(project)
    fresh = LedgerEntry(new_entry_id(), exp.path, exp.fingerprint(), exp.description, 1, [[0, 1]])
    stale = LedgerEntry(new_entry_id(), exp.path, exp.fingerprint(), exp.description, 1, [[2]])
    stale.created -= 5 + 31
    for entry in (fresh, stale):
        Ledger(state_dirs(exp).ledger).write(entry)  # recorded, never marked submitted
    assert list(classify(exp, 1, QueueSnapshot()).indices(QUEUED)) == [0, 1]
    assert list(to_submit(exp, 1, QueueSnapshot())) == [2, 3, 4, 5]


def test_farms_whose_script_keeps_failing_before_the_runner_are_not_resubmitted_forever(project):
    from pyexp.standing.settling import broken_script
    from pyexp.state.layout import experiment_id

    exp = _exp(project)
    logs = os.path.join(exp.config.log_path, experiment_id(exp))
    os.makedirs(logs, exist_ok=True)
    for n in range(3):  # three cron rounds: the workers' script dies before pyexp-run starts
        entry = _farm(exp, "0-5", workers=2, job_id=str(700 + n))
        for t in range(2):
            open(os.path.join(logs, f"{entry.job_name}_{t}.err"), "w").close()
        queue = QueueSnapshot({(entry.id, 0): "FAILED", (entry.id, 1): "FAILED"})
        assert broken_script(exp, 3) is None
        settle(exp, queue)
    line = broken_script(exp, 3)
    assert line and "the last 3 arrays failed before pyexp-run started" in line
    assert "--retry-failed" in line and line.count("\n") == 0
    cancelled = _farm(exp, "0-5", workers=2, job_id="800")  # cancelled while pending: no output
    settle(exp, QueueSnapshot({(cancelled.id, 0): "CANCELLED", (cancelled.id, 1): "CANCELLED"}))
    assert broken_script(exp, 3) is None  # not the script's fault
