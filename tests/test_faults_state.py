"""Faults the state layer survives: damaged segments, read-only and full filesystems, changed
save-path fields, and a submitter paused past its lock. Real processes and signals; real tmpfs
mounts where the machine allows them (skipped otherwise)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import write_project
from runner_helpers import Project as RunProject
from runner_helpers import in_process_runner, write_entry
from runner_helpers import sh as run_sh

from pyexp import listMissingResults, loadExperiment
from pyexp.cli.repair import main as repair_main
from pyexp.cli.status import main as status_main
from pyexp.config import getConfig, load_config
from pyexp.state import leases, records
from pyexp.state.atomic import write_atomic
from pyexp.state.attempts import FAILED, Attempts
from pyexp.state.layout import state_dirs
from pyexp.state.leases import DONE, IndexLeases, sweep_tombstones
from pyexp.state.ledger import FARM, Ledger
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


# ---------------------------------------------------------------- a worker that cannot record


def runners_on(tmp_path, state) -> RunProject:
    """A pyexp-run project whose state_path is state (logs stay on tmp_path)."""
    proj = RunProject(tmp_path)
    proj.config.write_text(json.dumps({"state_path": str(state), "log_path": "logs"}))
    return proj


FILL_AT = 3  # the index whose command fills the state filesystem
# The filler ends at once; the others take 0.3 s, so it fails while they still run.
FILLER = (
    'echo "$PYEXP_INDEX" >> "$1"; '
    'if [ "$PYEXP_INDEX" = {fill} ]; then cat /dev/zero > "$2/fill"; else sleep 0.3; fi; :'
)


@pytest.mark.parametrize("farm", [False, True], ids=["static", "farm"])
def test_runner_on_a_full_state_filesystem_starts_no_new_index(tmp_path, tmpfs, farm):
    proj = runners_on(tmp_path, tmpfs)
    path = proj.experiment("full", {"a": list(range(40))})
    ran = tmp_path / "ran"
    command = run_sh(FILLER.format(fill=FILL_AT), ran, tmpfs, "{index}")
    if farm:  # one worker running 2 at once
        ledger = write_entry(proj, path, [], mode=FARM, pool="0-39", workers=1, cores=2)
        args = ["--ledger", ledger, "--task", "0"]
    else:
        args = [path, "--indices", "0-39", "--parallel", "2"]
    out = proj.run(*args, "--command", command)
    started = [int(x) for x in ran.read_text().split()]
    assert out.returncode == 1, out.stderr
    # What ran alongside the filler finished; nothing started after its record failed.
    assert max(started) <= FILL_AT + 1 and len(started) <= FILL_AT + 2, started
    said = [line for line in out.stderr.splitlines() if "starting no new index" in line]
    assert len(said) == 1 and "No space left on device" in said[0], out.stderr
    assert "Traceback" not in out.stderr
    done = CompletionRecords(state_dirs(proj.load(path)).done).completed(compact=False)
    # The index that ran beside the filler may find no room for its tombstone or record either.
    assert FILL_AT - 1 <= len(done) <= len(started), out.stderr


def test_in_process_worker_on_a_full_state_filesystem_claims_no_new_index(tmp_path, tmpfs):
    proj = runners_on(tmp_path, tmpfs)
    path = proj.experiment("full", {"a": list(range(40))})
    ran = tmp_path / "ran"
    code = (
        "import pathlib, sys, pyexp\n"
        "for job in pyexp.claim(sys.argv[1], runs=1):\n"
        "    with job:\n"
        "        open(sys.argv[2], 'a').write(f'{job.index}\\n')\n"
        f"        if job.index == {FILL_AT}:\n"
        "            try:\n"
        "                pathlib.Path(sys.argv[3], 'fill').write_bytes(bytes(1 << 20))\n"
        "            except OSError:\n"
        "                pass\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, path, ran, tmpfs],
        env=proj.env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    started = [int(x) for x in ran.read_text().split()]
    assert started == list(range(FILL_AT + 1)), (started, out.stderr)
    said = [line for line in out.stderr.splitlines() if "claiming no new index" in line]
    assert len(said) == 1 and "No space left on device" in said[0], out.stderr
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------- stale handles, vanishing files
# A stale NFS file handle cannot be made on demand here: ESTALE is raised at the state layer's
# I/O boundary (its atomic writes, the lease marker reads) instead.


def stale(path):
    return OSError(errno.ESTALE, os.strerror(errno.ESTALE), path)


def test_estale_writing_a_completion_record_stops_new_work_and_loses_nothing(tmp_path, monkeypatch):
    proj = runners_on(tmp_path, tmp_path / "state")
    path = proj.experiment("estale", {"a": list(range(4))})
    ran = tmp_path / "ran"
    command = run_sh('echo "$PYEXP_INDEX" >> "$1"', ran)
    real, failed = records._open_append, []

    def open_append(target):  # the runner's completion journal
        if not failed:
            failed.append(target)
            raise stale(target)
        return real(target)

    monkeypatch.setattr(records, "_open_append", open_append)
    runner, out = in_process_runner(proj, path, command, parallel=1)
    assert runner.run(range(4)) == 1
    said = [line for line in out.getvalue().splitlines() if "starting no new index" in line]
    assert len(said) == 1 and "Stale file handle" in said[0], out.getvalue()
    # 0 ran, unrecorded: still missing, not done; 1 had started before 0's record was written
    assert ran.read_text().split() == ["0", "1"]
    monkeypatch.setattr(records, "_open_append", real)
    again, _ = in_process_runner(proj, path, command, parallel=1)
    assert again.run(range(4)) == 0
    assert all(proj.complete(path, i) for i in range(4))
    assert ran.read_text().split() == ["0", "1", "0", "2", "3"]


def test_estale_reading_a_lease_marker_neither_takes_nor_fails(tmp_path, monkeypatch):
    holder, contender = IndexLeases(str(tmp_path), 0.3), IndexLeases(str(tmp_path), 0.3)
    assert holder.try_take("k") is not None
    real_open = open

    def stale_open(file, *args, **kwargs):
        if str(file).startswith(str(tmp_path)):
            raise stale(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(leases, "open", stale_open, raising=False)
    start = time.monotonic()
    while time.monotonic() - start < 1.0:  # three durations of unreadable markers
        assert contender.try_take("k") is None
        time.sleep(0.05)
    monkeypatch.undo()
    holder.end("k", completed=True)
    assert contender.try_take("k") == DONE


def test_lease_markers_vanishing_between_listing_and_opening(tmp_path, monkeypatch):
    holder = IndexLeases(str(tmp_path), 30.0)
    for key in ("a", "b", "c"):
        assert holder.try_take(key) is not None
    holder.end("c", completed=True)
    real = leases.scan_names

    def listed_then_released(folder):
        names = real(folder)
        holder.forget("a")  # released by its runner just after the listing
        os.unlink(os.path.join(folder, "c.lease"))  # a tombstone swept meanwhile
        return names

    monkeypatch.setattr(leases, "scan_names", listed_then_released)
    assert set(leases.held_keys(str(tmp_path))) == {"b"}
    assert sweep_tombstones(str(tmp_path)) == 0
    holder.release()


def test_loose_records_vanishing_into_a_fold_between_listing_and_opening(tmp_path, monkeypatch):
    exp = experiment(tmp_path, SWEEP)
    folder = state_dirs(exp).done
    reader, folder_writer = CompletionRecords(folder), CompletionRecords(folder)
    for i in range(6):
        folder_writer.mark_complete(exp.getPermutation(i), exp.getRun(i), {"duration": 1.0})
    real, folded = records.scan_names, []

    def listed_then_folded(path):
        names = real(path)
        if path == folder and not folded:  # another writer folds them just after our listing
            folded.append(True)
            monkeypatch.setattr(records, "COMPACT_AT", 1)
            folder_writer.completed()
            monkeypatch.setattr(records, "COMPACT_AT", 2000)
        return names

    monkeypatch.setattr(records, "scan_names", listed_then_folded)
    keys = {record_key(exp.getPermutation(i), exp.getRun(i)) for i in range(6)}
    assert reader.completed(compact=False) == keys
    assert reader.durations() == [1.0] * 6 and folded
    assert [n for n in os.listdir(folder) if n not in (SEGMENTS, "durations")] == []
