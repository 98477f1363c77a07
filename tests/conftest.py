"""The one gate for tests that use a real Slurm (marked `slurm`), and the fence around the rest.

They run only when asked in the environment: PYEXP_TEST_SLURM=1 (.ci/run sets it) or CI=true;
never because `sinfo` answers (on a cluster's login node it does) nor because a file exists in
a machine-wide place. Asked for, they fail when Slurm does not answer. Every other test gets
every Slurm command pyexp runs (PYEXP_SBATCH, PYEXP_SQUEUE, ...) pointed at a path that does not
exist, and a PATH whose first folder holds tripwires named like the Slurm commands: a test (or a
process it starts) that runs one by name fails, so no test reaches a real cluster by accident.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from pyexp.scheduler.slurm import COMMANDS

NO_SLURM = "/nonexistent/pyexp-tests-never-submit"
TRIPWIRES = (*COMMANDS, "sinfo")
_TRIPWIRE = '#!/bin/sh\necho "$(basename "$0") $*" >> "$(dirname "$0")/calls"\nexit 1\n'


def slurm_requested(env=os.environ) -> bool:
    """Whether the Slurm tests were asked for (in the environment, nowhere else)."""
    return env.get("PYEXP_TEST_SLURM") == "1" or env.get("CI") == "true"


def no_slurm_env() -> dict[str, str]:
    """The PYEXP_<COMMAND> overrides that send every Slurm command pyexp runs nowhere."""
    return {f"PYEXP_{name.upper()}": NO_SLURM for name in COMMANDS}


def slurm_problem() -> str | None:
    """Why the local Slurm cannot take jobs, or None when a node is up."""
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=15
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"sinfo: {e}"
    if out.returncode != 0 or not any(
        s.rstrip("*~#") in ("idle", "mix", "alloc", "comp") for s in out.stdout.split()
    ):
        return f"sinfo exit {out.returncode}: {(out.stderr or out.stdout).strip() or 'no node up'}"
    return None


def pytest_collection_modifyitems(config, items):
    if slurm_requested():
        return
    skip = pytest.mark.skip(reason="real Slurm tests run only with PYEXP_TEST_SLURM=1 (or CI=true)")
    for item in items:
        if "slurm" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def slurm_up():
    """Asked for, Slurm must answer: fail once with the reason."""
    problem = slurm_problem()
    if problem is not None:
        pytest.fail(f"local Slurm not reachable ({problem}); run scripts/slurm-local.sh start")


@pytest.fixture(scope="session")
def tripwires(tmp_path_factory):
    """A folder of scripts named like the Slurm commands that log each call to `calls`."""
    folder = tmp_path_factory.mktemp("slurm-tripwires")
    for name in TRIPWIRES:
        (folder / name).write_text(_TRIPWIRE)
        (folder / name).chmod(0o755)
    return folder


def tripwire_calls(folder) -> list[str]:
    """The Slurm commands run by name since the folder's log was last cleared."""
    calls = folder / "calls"
    return calls.read_text().splitlines() if calls.exists() else []


@pytest.fixture(autouse=True)
def _slurm_only_when_asked(request, monkeypatch):
    if "slurm" in request.keywords:
        request.getfixturevalue("slurm_up")
        yield
        return
    folder = request.getfixturevalue("tripwires")
    (folder / "calls").unlink(missing_ok=True)
    for name, value in no_slurm_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    yield
    called = tripwire_calls(folder)
    assert not called, f"a non-Slurm test ran Slurm commands by name: {called}"
