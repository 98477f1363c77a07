"""An outside tester's attacks without Slurm: bad input to every console script, damaged state
files, a read-only state folder. Each ends in one line, a non-zero exit where it is an error,
and nothing finished run again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pyexp.config import getConfig
from pyexp.experiment import loadExperiment
from pyexp.runner import write_snapshot
from pyexp.state.layout import state_dirs

SCRIPTS = ("submit", "run", "status", "cancel", "logs", "adopt", "repair")


def pyexp(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pyexp", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def one_line(result: subprocess.CompletedProcess, script: str) -> str:
    assert result.returncode != 0, result
    assert result.stderr.startswith(f"pyexp-{script}: ") and result.stderr.count("\n") == 1, (
        result.stderr
    )
    return result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_refuses_a_non_utf8_experiment_in_one_line(tmp_path, script):
    (tmp_path / "bad.json").write_bytes(b'\xff\xfe{"a": 1}')
    extra = {"logs": ["0"], "adopt": ["--result-file", "r.npy"], "run": ["--indices", "0"]}
    result = pyexp(tmp_path, script, "bad.json", *extra.get(script, []))
    assert "not UTF-8" in one_line(result, script)


def test_python_m_pyexp_runs_repair(tmp_path):
    (tmp_path / "e.json").write_text(json.dumps({"metaParameters": {"a": [1]}}))
    result = pyexp(tmp_path, "repair", "e.json")
    assert result.returncode == 0 and "none damaged" in result.stdout, result


def test_cluster_config_that_is_not_utf8_is_one_line(project):
    bad = project["root"] / "bad-cluster.json"
    bad.write_bytes(b"\xff{}")
    result = pyexp(project["root"], "submit", project["exp"], "--runs", "1", "--cluster", str(bad))
    assert "not UTF-8" in one_line(result, "submit")


def test_template_that_is_not_utf8_is_one_line(project):
    bad = project["root"] / "bad.j2"
    bad.write_bytes(b"\xff")
    argv = ["submit", project["exp"], "--runs", "1", "--cluster", "local", "--dry-run"]
    result = pyexp(project["root"], *argv, "--template", str(bad))
    assert "not UTF-8" in one_line(result, "submit")


def test_damaged_settings_are_named_not_called_never_submitted(project):
    assert (
        pyexp(project["root"], "submit", project["exp"], "--runs", "2", "--local").returncode == 0
    )
    settings = state_dirs(loadExperiment(project["exp"])).settings
    with open(settings, "wb") as f:
        f.write(b"\xff junk")
    for script in ("submit", "adopt"):
        extra = ["--result-file", "r.npy"] if script == "adopt" else ["--dry-run"]
        line = one_line(pyexp(project["root"], script, project["exp"], *extra), script)
        assert f"{settings} cannot be read; pass --runs N" in line


def test_damaged_snapshot_is_rewritten_before_a_command_reads_it(project):
    exp = loadExperiment(project["exp"])
    path = write_snapshot(exp, exp.fingerprint())
    for damage in (b"", b'{"name": "swe', b"\xff\x00"):
        with open(path, "wb") as f:
            f.write(damage)
        assert write_snapshot(exp, exp.fingerprint()) == path
        with open(path, encoding="utf-8") as f:
            assert json.load(f) == exp.description


def test_dry_run_on_a_read_only_state_folder_writes_scripts_to_a_temp_folder(
    tmpfs,
    project,
):
    config = json.dumps({"command": "true {index}", "state_path": str(tmpfs)})
    (project["root"] / "config.json").write_text(config)
    getConfig.cache_clear()
    argv = ["submit", project["exp"], "--runs", "1", "--cluster", "local", "--dry-run"]
    assert pyexp(project["root"], *argv).returncode == 0  # leaves dry-run scripts to replace
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    result = pyexp(project["root"], *argv)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("\n") == 1 and "cannot write there" in result.stderr
    folder = result.stderr.rsplit(" ", 1)[1].strip()
    assert f"scripts: {folder} (1 written)" in result.stdout
    assert os.listdir(folder) and not folder.startswith(str(tmpfs))
    status = pyexp(project["root"], "status", project["exp"], "--no-slurm")
    assert status.returncode == 0 and status.stderr == "", status.stderr


def test_unreadable_ledger_warning_is_kept_when_there_is_work_to_submit(project):
    argv = ["submit", project["exp"], "--runs", "1", "--cluster", project["cluster"]]
    assert pyexp(project["root"], *argv).returncode == 0
    (project["fake"] / "jobs.txt").unlink()  # the array has left the queue
    ledger = state_dirs(loadExperiment(project["exp"])).ledger
    entry = os.path.join(ledger, os.listdir(ledger)[0])
    with open(entry, "wb") as f:
        f.write(b"\xff")
    result = pyexp(project["root"], *argv, "--runs", "2", "--dry-run")
    assert "would submit 60 indices" in result.stdout, result.stdout + result.stderr
    assert "unreadable ledger entry" in result.stderr, result.stderr


def test_full_state_filesystem_names_the_file_submit_and_run_stopped_at(
    tmpfs,
    project,
):
    config = json.dumps({"command": "true {index}", "state_path": str(tmpfs)})
    (project["root"] / "config.json").write_text(config)
    with open(tmpfs / "filler", "wb", buffering=0) as f, pytest.raises(OSError):
        while True:
            f.write(b"\0" * 4096)
    argv = ["submit", project["exp"], "--runs", "1", "--cluster", project["cluster"]]
    line = one_line(pyexp(project["root"], *argv), "submit")
    assert "settings.json: No space left on device" in line  # the runs, remembered first
    line = one_line(pyexp(project["root"], "run", project["exp"], "--indices", "0"), "run")
    assert ".lease: No space left on device" in line
    assert not (project["fake"] / "jobs.txt").exists()  # nothing submitted
    (tmpfs / "filler").unlink()
    assert pyexp(project["root"], "run", project["exp"], "--indices", "0-2").returncode == 0
