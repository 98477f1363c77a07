"""pyexp's own files at rest: nothing per index once a sweep is done and the next pyexp-submit
has folded what its tasks left (state/footprint.py, state/task_logs.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_project
from runner_helpers import age_tombstones

from pyexp.cli.logs import _lines
from pyexp.config import load_config
from pyexp.experiment import loadExperiment
from pyexp.state.layout import log_dir, state_dirs
from pyexp.state.task_logs import MAX_ARCHIVES

INDICES = 40
COMMAND = "sh -c 'echo output of $0; test $0 != 7' {index}"  # index 7 fails


def _project(root: Path) -> Path:
    config = {"state_path": "state", "log_path": "logs", "command": COMMAND}
    return write_project(root, {"metaParameters": {"i": list(range(INDICES))}}, config)


def _submit(path: Path, *flags: str) -> None:
    argv = [sys.executable, "-m", "pyexp.cli.submit", str(path), "--runs", "1", "--local"]
    env = {**os.environ, "PYEXP_LEASE_SECONDS": "2"}
    subprocess.run([*argv, *flags], env=env, cwd=path.parent, capture_output=True, check=False)


def _files(root: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for top in ("state", "logs"):
        for p in (root / top).rglob("*"):
            if p.is_file() and "/store" not in str(p):
                kind = p.parent.name
                out[kind] = out.get(kind, 0) + 1
    return out


@pytest.mark.parametrize("flags", [["--indices-per-task", "1"], ["--workers", "3"]])
def test_a_finished_sweep_leaves_no_file_per_index_once_folded(tmp_path, flags):
    path = _project(tmp_path)
    _submit(path, *flags)
    exp = loadExperiment(str(path), config=load_config(str(tmp_path / "config.json")))
    leases = Path(state_dirs(exp).leases)
    assert age_tombstones(leases) == INDICES - 1  # one per completed index, until swept
    _submit(path, *flags)  # the writer at rest (index 7 is retried: it fails again)
    age_tombstones(leases)
    _submit(path, *flags)
    files = _files(tmp_path)
    per_index = {k: v for k, v in files.items() if v >= INDICES // 4}
    assert per_index == {}, files  # no folder holds a file per index
    # What is left grows with rounds (a ledger entry, script, archive pair, failed attempt of
    # index 7 per submit), not with indices.
    assert sum(files.values()) <= 8 * 3, files
    # Every index's output is still found, by its parameters and run, through the archives.
    for i in (0, 7, INDICES - 1):
        text = "\n".join(_lines(exp, i, 5))
        assert f"output of {i}" in text, text


def _status(path: Path) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "pyexp.cli.status", str(path), "--no-slurm"]
    return subprocess.run(argv, cwd=path.parent, capture_output=True, text=True, check=False)


def test_status_folds_a_finished_sweep_at_rest_without_another_submit(tmp_path):
    path = _project(tmp_path)
    _submit(path, "--indices-per-task", "10")
    exp = loadExperiment(str(path), config=load_config(str(tmp_path / "config.json")))
    assert _files(tmp_path)["leases"] == INDICES - 1  # tombstones: not due yet
    assert _status(path).returncode == 0  # index 7 failed once: retried
    assert _files(tmp_path)["leases"] == INDICES - 1  # still not due: kept
    age_tombstones(Path(state_dirs(exp).leases))
    before = _status(path).stdout
    files = _files(tmp_path)
    assert {k: v for k, v in files.items() if v >= INDICES // 4} == {}, files
    assert sum(files.values()) <= 10 + 2 * 4, files  # a segment and durations per task
    assert _status(path).stdout == before  # what it shows did not change
    assert "output of 3" in "\n".join(_lines(exp, 3, 5))


def test_status_on_a_read_only_state_folder_folds_nothing_and_says_nothing(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        path = _project(mnt)
        _submit(path, "--indices-per-task", "10")
        exp = loadExperiment(str(path), config=load_config(str(mnt / "config.json")))
        age_tombstones(Path(state_dirs(exp).leases))
        files = _files(mnt)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        shown = _status(path)
        assert shown.returncode == 0 and shown.stderr == "", shown.stderr
        assert _files(mnt) == files
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_status_leaves_the_files_alone_while_a_submit_holds_the_lock(tmp_path):
    from pyexp.scheduler.submit import submit_lock

    path = _project(tmp_path)
    _submit(path, "--indices-per-task", "4")
    exp = loadExperiment(str(path), config=load_config(str(tmp_path / "config.json")))
    age_tombstones(Path(state_dirs(exp).leases))
    files = _files(tmp_path)
    with submit_lock(state_dirs(exp).submit_lock, 5):
        assert _status(path).returncode == 0
        assert _files(tmp_path)["leases"] == files["leases"] == INDICES - 1
        assert _files(tmp_path)["tasks"] == files["tasks"]
    _status(path)
    assert _files(tmp_path).get("leases", 0) == 0


def test_logs_of_a_local_runner_killed_with_sigkill_are_folded(tmp_path):
    """No `end` line: its .idx names its process, which is gone."""
    pids = tmp_path / "pids"
    config = {"state_path": "state", "log_path": "logs"}
    path = write_project(tmp_path, {"metaParameters": {"i": [0, 1]}}, config)
    command = f"sh -c 'echo output of $0; echo $$ >> {pids}; exec sleep 60' {{index}}"
    argv = [sys.executable, "-m", "pyexp.cli.submit", str(path), "--runs", "1", "--local"]
    argv += ["--command", command, "--indices-per-task", "2", "--parallel", "1"]
    submit = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (pids.exists() and pids.read_text().strip()):
            assert time.monotonic() < deadline and submit.poll() is None
            time.sleep(0.1)
        (idx,) = (tmp_path / "logs").rglob("tasks/*.idx")
        runner = int(idx.read_bytes().split(b"\n")[0].split()[-1].split(b":")[0])
        os.kill(runner, signal.SIGKILL)
        submit.wait(timeout=60)
    finally:
        for pid in pids.read_text().split() if pids.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        if submit.poll() is None:
            submit.kill()
    assert not idx.read_bytes().endswith(b"end\n")
    _status(path)
    tasks = sorted(p.name for p in idx.parent.iterdir())
    assert len(tasks) == 2 and all(n.startswith("archive-") for n in tasks), tasks
    exp = loadExperiment(str(path), config=load_config(str(tmp_path / "config.json")))
    assert "output of 0" in "\n".join(_lines(exp, 0, 5))


def test_archives_are_merged_so_they_stay_few_and_every_attempt_is_found(tmp_path):
    path = _project(tmp_path)
    exp = loadExperiment(str(path), config=load_config(str(tmp_path / "config.json")))
    for _ in range(8):  # each submit retries index 7 and folds what the one before left
        _submit(path, "--indices-per-task", "4", "--retry-failed")
    tasks = Path(log_dir(exp), "tasks")
    archives = sorted(p.name for p in tasks.glob("archive-*.idx"))
    assert 1 < len(archives) <= MAX_ARCHIVES, archives
    assert len(list(tasks.glob("archive-*.log"))) == len(archives)
    text = "\n".join(_lines(exp, 7, 5))
    assert text.count("output of 7") == 8 and "8 attempts" in text, text
    assert "output of 3" in "\n".join(_lines(exp, 3, 5))


@pytest.mark.slurm
def test_status_settles_and_folds_a_finished_slurm_sweep_at_rest(tmp_path):
    """One index per task: each task's .out and .err would be 2 files per index until settled."""
    from slurm_helpers import Sweep, wait_gone

    sweep = Sweep(tmp_path / "s", 6)
    assert sweep.submit().returncode == 0
    wait_gone(sweep.state, time.monotonic() + 120)
    exp = loadExperiment(str(sweep.experiment), config=load_config(str(sweep.config)))
    logs, leases = Path(log_dir(exp)), Path(state_dirs(exp).leases)
    assert len(list(logs.glob("*.out"))) == 6
    assert sweep.status()["done"] == 6  # settles the array, folds its files
    assert not list(logs.glob("*.out")) and not list(logs.glob("*.err"))
    assert age_tombstones(leases) == 6  # the sweep's PYEXP_LEASE_SECONDS is 2
    assert sweep.status()["done"] == 6
    mine = [p for top in (logs, Path(sweep.state)) for p in top.rglob("*") if p.is_file()]
    assert not list(leases.glob("*.lease")), sorted(map(str, mine))
    assert all(p.name.startswith("archive-") for p in logs.glob("tasks/*"))
    # what stays: a ledger entry, script, snapshot, archive pair, settings; and each task's
    # segment and durations until MERGE_AT (records.py) merges them
    assert len(mine) <= 7 + 2 * 6, sorted(map(str, mine))
    assert "index=3 " in "\n".join(_lines(exp, 3, 5))
