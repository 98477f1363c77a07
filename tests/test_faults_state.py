"""Faults the state layer survives: damaged segments, read-only and full filesystems, changed
save-path fields, and a submitter paused past its lock. Real processes and signals; real tmpfs
mounts where the machine allows them (skipped otherwise)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import write_project

from pyexp import listMissingResults, loadExperiment
from pyexp.cli.repair import main as repair_main
from pyexp.cli.status import main as status_main
from pyexp.config import getConfig, load_config
from pyexp.state import records
from pyexp.state.atomic import write_atomic
from pyexp.state.attempts import FAILED, Attempts
from pyexp.state.layout import state_dirs
from pyexp.state.ledger import Ledger
from pyexp.state.records import SEGMENTS, CompletionRecords, StateCorrupt, record_key


@pytest.fixture(autouse=True)
def fresh_config():
    """The CLIs read config.json through a cache: each test starts and ends without it."""
    getConfig.cache_clear()
    yield
    getConfig.cache_clear()


def experiment(root, d: dict, save_path: str = "results/{name}/{params}/{run}"):
    path = write_project(root, d, config={"save_path": save_path})
    return loadExperiment(str(path), config=load_config(str(root / "config.json")))


def mark(exp, *indices: int) -> None:
    recs = CompletionRecords(state_dirs(exp).done)
    for i in indices:
        recs.mark_complete(exp.getPermutation(i), exp.getRun(i))


SWEEP = {"agent": "A", "metaParameters": {"x": list(range(6))}}


# ---------------------------------------------------------------- identity of work


def test_changing_agent_in_save_path_makes_work_missing_and_keeps_old_records(tmp_path):
    template = "results/{agent}/{params}/{run}"
    a = experiment(tmp_path, SWEEP, template)
    mark(a, 0, 1, 2)
    assert listMissingResults(a) == [3, 4, 5]
    b = experiment(tmp_path, {**SWEEP, "agent": "B"}, template)
    assert state_dirs(b).done != state_dirs(a).done
    assert state_dirs(b).ledger == state_dirs(a).ledger  # the queue is shared
    assert listMissingResults(b) == list(range(6))
    assert listMissingResults(experiment(tmp_path, SWEEP, template)) == [3, 4, 5]


def test_fields_the_save_path_does_not_use_leave_work_done(tmp_path):
    a = experiment(tmp_path, SWEEP)
    mark(a, 0)
    b = experiment(tmp_path, {**SWEEP, "agent": "B"})  # {agent} not in the save path
    assert state_dirs(b).done == os.path.join(state_dirs(b).root, "done")
    assert listMissingResults(b) == [1, 2, 3, 4, 5]
    named = experiment(tmp_path, {**SWEEP, "name": "other"})  # {name} set in the JSON
    assert listMissingResults(named) == list(range(6))


# ---------------------------------------------------------------- readers never write


def test_reads_work_on_a_read_only_state_folder(tmpfs, monkeypatch, capsys):
    monkeypatch.setattr(records, "COMPACT_AT", 2)  # a fold is due on every read
    exp = experiment(tmpfs, SWEEP)
    mark(exp, 0, 1, 3)
    Attempts(state_dirs(exp).attempts).record(record_key({"x": 4}, 0), FAILED, {}, "9_4")
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    with pytest.raises(OSError) as e:
        write_atomic(str(tmpfs / "probe"), "x")
    assert e.value.errno == errno.EROFS
    assert len(CompletionRecords(state_dirs(exp).done).completed()) == 3
    assert listMissingResults(exp) == [2, 4, 5]
    monkeypatch.setenv("PYEXP_CONFIG", str(tmpfs / "config.json"))
    assert status_main([exp.path, "--no-slurm"]) == 0
    assert "3" in capsys.readouterr().out


def test_failed_fold_never_fails_a_read(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "COMPACT_AT", 2)
    recs = CompletionRecords(str(tmp_path))
    for run in range(3):
        recs.mark_complete({"x": 1}, run)

    def no_space(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(records, "write_atomic", no_space)
    assert len(recs.completed()) == 3
    assert len(os.listdir(tmp_path)) == 3  # nothing folded, nothing lost


# ---------------------------------------------------------------- full filesystem


def test_full_filesystem_errors_name_the_record_file(tmpfs):
    recs = CompletionRecords(str(tmpfs / "done"))
    attempts = Attempts(str(tmpfs / "attempts"))
    big = {"pad": "x" * 8192}
    with pytest.raises(OSError) as e:
        for run in range(100):
            recs.mark_complete({"x": 1}, run, info=big)
    assert e.value.errno == errno.ENOSPC
    assert e.value.filename == str(tmpfs / "done" / record_key({"x": 1}, run))
    with pytest.raises(OSError) as e:
        attempts.record("k", FAILED, big)
    assert e.value.filename.startswith(str(tmpfs / "attempts" / "k.failed."))
    assert [n for n in os.listdir(tmpfs / "done") if n.startswith(".tmp-")] == []
    assert recs.completed(compact=False) == {record_key({"x": 1}, r) for r in range(run)}


# ---------------------------------------------------------------- damaged segments


def folded(tmp_path, monkeypatch, n: int = 50) -> tuple[str, str]:
    """A done folder whose n records sit in one segment; (folder, segment path)."""
    monkeypatch.setattr(records, "COMPACT_AT", 1)
    folder = str(tmp_path / "done")
    recs = CompletionRecords(folder)
    for run in range(n):
        recs.mark_complete({"x": 1}, run)
    recs.completed()
    (name,) = os.listdir(os.path.join(folder, SEGMENTS))
    return folder, os.path.join(folder, SEGMENTS, name)


def test_truncated_segment_is_reported_in_one_line_and_not_read_as_missing(tmp_path, monkeypatch):
    folder, seg = folded(tmp_path, monkeypatch)
    os.truncate(seg, os.path.getsize(seg) // 2)
    for read in (CompletionRecords(folder).completed, CompletionRecords(folder).is_complete):
        with pytest.raises(StateCorrupt) as e:
            read() if read.__name__ == "completed" else read({"x": 1}, 49)
        message = str(e.value)
        assert seg in message and "pyexp-repair" in message and "\n" not in message


def test_binary_junk_segment_is_state_corrupt_not_unicode_error(tmp_path, monkeypatch):
    folder, seg = folded(tmp_path, monkeypatch)
    with open(seg, "wb") as f:
        f.write(b"\xff\xfe\x00\x81junk\n\xc3")
    with pytest.raises(StateCorrupt, match="damaged completion segment"):
        CompletionRecords(folder).completed()


def test_repair_sets_a_damaged_segment_aside_keeping_its_readable_records(
    tmp_path, monkeypatch, capsys
):
    exp = experiment(tmp_path, {"metaParameters": {"x": list(range(40))}})
    monkeypatch.setattr(records, "COMPACT_AT", 1)
    mark(exp, *range(30))
    CompletionRecords(state_dirs(exp).done).completed()
    seg_dir = os.path.join(state_dirs(exp).done, SEGMENTS)
    (name,) = os.listdir(seg_dir)
    with open(os.path.join(seg_dir, name), "r+b") as f:
        f.truncate(os.path.getsize(f.name) - 30)  # the last records are cut off
    stale_tmp = os.path.join(seg_dir, ".tmp-killed-fold")
    open(stale_tmp, "w").close()
    monkeypatch.setenv("PYEXP_CONFIG", str(tmp_path / "config.json"))
    assert repair_main([exp.path]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "moved 1 damaged segments" in out
    assert "records could not be read and will run again" in out
    missing = listMissingResults(exp)
    assert missing[-10:] == list(range(30, 40)) and 0 < len(missing) - 10 <= 2
    assert not os.path.exists(stale_tmp)
    assert os.listdir(os.path.join(state_dirs(exp).done, "damaged"))
    assert repair_main([exp.path]) == 0
    assert "none damaged" in capsys.readouterr().out


def test_segments_vanishing_on_every_listing_stop_after_bounded_relists(tmp_path, monkeypatch):
    folder, _ = folded(tmp_path, monkeypatch)
    reads = []

    def vanished(path):
        reads.append(path)
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)

    monkeypatch.setattr(records, "read_segment", vanished)
    start = time.monotonic()
    with pytest.raises(StateCorrupt, match="kept vanishing"):
        CompletionRecords(folder).completed()
    assert len(reads) <= 8 and time.monotonic() - start < 3


def test_fold_removes_temp_files_of_killed_folds_after_an_hour(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "COMPACT_AT", 2)
    folder = tmp_path / "done"
    (folder / SEGMENTS).mkdir(parents=True)
    old, new = folder / SEGMENTS / ".tmp-old", folder / ".tmp-new"
    for path in (old, new):
        path.write_text("half a segment")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    recs = CompletionRecords(str(folder))
    for run in range(3):
        recs.mark_complete({"x": 1}, run)
    assert len(recs.completed()) == 3
    assert not old.exists() and new.exists()


# ---------------------------------------------------------------- submit lock fencing


def _submitted_indices(project) -> list[int]:
    """Every index in an array the fake sbatch accepted."""
    entries = {
        e.script: e for e in Ledger(state_dirs(loadExperiment(project["exp"])).ledger).entries()
    }
    jobs = (project["fake"] / "jobs.txt").read_text().splitlines()
    return [i for line in jobs for i in entries[line.split("|", 1)[1]].indices()]


def test_paused_submitter_that_lost_its_lock_submits_nothing_more(project, monkeypatch):
    monkeypatch.setenv("PYEXP_SUBMIT_LOCK_SECONDS", "1")
    argv = [
        sys.executable,
        "-m",
        "pyexp.cli.submit",
        project["exp"],
        "--runs",
        "1",
        "--cluster",
        project["cluster"],
        "--indices-per-task",
        "1",
    ]
    slow = {**os.environ, "FAKE_SBATCH_DELAY": "0.4"}
    first = subprocess.Popen(argv, env=slow, stderr=subprocess.PIPE, text=True)
    jobs = project["fake"] / "jobs.txt"
    deadline = time.monotonic() + 30
    while not (jobs.exists() and jobs.read_text()):
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGSTOP)  # Ctrl-Z, a hung NFS: its heartbeat stops too
    try:
        second = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 0, second.stderr
    err = first.communicate(timeout=30)[1]
    assert first.returncode != 0 and "lost the submit lock" in err and err.count("\n") == 1
    assert len(jobs.read_text().splitlines()) >= 3
    # Paused before its fencing check, the first drops the array it had recorded (the second saw
    # it in flight and left it alone): the next round submits it. Paused after, it is sent once.
    third = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert third.returncode == 0, third.stderr
    indices = _submitted_indices(project)
    assert len(indices) == len(set(indices)) == 30  # none twice, none left out


def test_status_on_a_damaged_segment_is_one_line_naming_the_repair(tmp_path, monkeypatch, capsys):
    exp = experiment(tmp_path, SWEEP)
    monkeypatch.setattr(records, "COMPACT_AT", 1)
    mark(exp, 0, 1)
    CompletionRecords(state_dirs(exp).done).completed()
    seg_dir = os.path.join(state_dirs(exp).done, SEGMENTS)
    with open(os.path.join(seg_dir, os.listdir(seg_dir)[0]), "wb") as f:
        f.write(b"\x00\xff")
    monkeypatch.setenv("PYEXP_CONFIG", str(tmp_path / "config.json"))
    assert status_main([exp.path, "--no-slurm"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pyexp-repair" in err and seg_dir in err
