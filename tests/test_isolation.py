"""No ordinary test reaches a real Slurm: the gate asks the environment only, and every Slurm
command pyexp runs goes nowhere (the tripwires on PATH would catch a call by name)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import no_slurm_env, slurm_requested, tripwire_calls, write_project

from pyexp.environment import slurm_command
from pyexp.scheduler import slurm
from pyexp.scheduler.quota import QUOTA_COMMANDS

FOUR = {"metaParameters": {"x": [0, 1, 2, 3]}}


def test_slurm_tests_run_only_when_the_environment_asks(tmp_path, monkeypatch):
    # What scripts/slurm-local.sh start leaves behind asks for nothing.
    (tmp_path / "local-slurm-up").touch()
    monkeypatch.setenv("PYEXP_SLURM_DIR", str(tmp_path))
    assert not slurm_requested({"PYEXP_SLURM_DIR": str(tmp_path)})
    assert slurm_requested({"PYEXP_TEST_SLURM": "1"}) and slurm_requested({"CI": "true"})


def test_every_slurm_command_is_overridden_to_nowhere():
    commands = (*slurm.COMMANDS, *QUOTA_COMMANDS)  # the quota check's cluster commands too
    assert {slurm_command(name) for name in commands} == {"/nonexistent/pyexp-tests-never-submit"}
    assert set(no_slurm_env()) == {f"PYEXP_{name.upper()}" for name in commands}


def _cli(root, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "pyexp", *args]
    return subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)


def test_status_submit_and_cancel_call_no_slurm_command_by_name(tmp_path, tripwires):
    exp = str(write_project(tmp_path, FOUR, config={"command": "true {index}"}))
    status = _cli(tmp_path, "status", exp, "--runs", "1", env=dict(os.environ))
    submit = _cli(
        tmp_path, "submit", exp, "--runs", "1", "--cluster", "local", env=dict(os.environ)
    )
    cancel = _cli(tmp_path, "cancel", exp, env=dict(os.environ))
    assert tripwire_calls(tripwires) == []
    # Nothing of the experiment's is on Slurm: squeue is not asked, and no line is about it.
    assert "squeue" not in status.stdout and status.returncode == 0
    assert submit.returncode != 0 and len(submit.stderr.strip().splitlines()) == 1
    assert "no Slurm here? try --local" in submit.stderr
    assert cancel.returncode == 1 and "squeue: command not found" in cancel.stderr


def test_the_tripwires_catch_a_slurm_command_run_by_name(tmp_path, tripwires):
    exp = str(write_project(tmp_path, FOUR))
    bare = {k: v for k, v in os.environ.items() if k not in no_slurm_env()}
    _cli(tmp_path, "cancel", exp, env=bare)
    caught = tripwire_calls(tripwires)
    (tripwires / "calls").unlink()  # caught on purpose: the fixture must not fail this test
    assert any(call.startswith("squeue ") for call in caught)
