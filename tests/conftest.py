"""The one gate for tests that use a real Slurm (marked `slurm`).

They run only when asked: PYEXP_TEST_SLURM=1 (.ci/run sets it), CI=true, or the marker that
`scripts/slurm-local.sh start` writes; never because `sinfo` answers, which on a cluster's login
node it does. Asked for, they fail when Slurm does not answer. Every other test gets an sbatch
and scancel that do not exist, so no test submits or cancels real jobs by accident.
"""

from __future__ import annotations

import os
import subprocess

import pytest

MARKER = os.path.join(os.environ.get("PYEXP_SLURM_DIR", "/tmp/pyexp-slurm"), "local-slurm-up")
NO_SLURM = "/nonexistent/pyexp-tests-never-submit"


def slurm_requested() -> bool:
    """Whether the Slurm tests were asked for."""
    env = os.environ
    return env.get("PYEXP_TEST_SLURM") == "1" or env.get("CI") == "true" or os.path.exists(MARKER)


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
    skip = pytest.mark.skip(
        reason="real Slurm tests run only with PYEXP_TEST_SLURM=1 (or CI=true, or after "
        "scripts/slurm-local.sh start)"
    )
    for item in items:
        if "slurm" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def slurm_up():
    """Asked for, Slurm must answer: fail once with the reason."""
    problem = slurm_problem()
    if problem is not None:
        pytest.fail(f"local Slurm not reachable ({problem}); run scripts/slurm-local.sh start")


@pytest.fixture(autouse=True)
def _slurm_only_when_asked(request, monkeypatch):
    if "slurm" in request.keywords:
        request.getfixturevalue("slurm_up")
    else:
        for name in ("PYEXP_SBATCH", "PYEXP_SCANCEL"):
            monkeypatch.setenv(name, NO_SLURM)
