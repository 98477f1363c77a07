"""The one gate for tests that use a real Slurm (marked `slurm`), and the fence around the rest.

They run only when asked in the environment: PYEXP_TEST_SLURM=1 (.ci/run sets it) or CI=true;
never because `sinfo` answers (on a cluster's login node it does) nor because a file exists in
a machine-wide place. Asked for, they fail when Slurm does not answer. Every other test gets
every Slurm command pyexp runs (PYEXP_SBATCH, PYEXP_SQUEUE, ...) pointed at a path that does not
exist, and a PATH whose first folder holds tripwires named like the Slurm commands: a test (or a
process it starts) that runs one by name fails, so no test reaches a real cluster by accident.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyexp.config import getConfig
from pyexp.scheduler.quota import QUOTA_COMMANDS
from pyexp.scheduler.slurm import COMMANDS
from pyexp.state.layout import state_dirs

NO_SLURM = "/nonexistent/pyexp-tests-never-submit"
TRIPWIRES = (*COMMANDS, *QUOTA_COMMANDS, "sinfo")
_TRIPWIRE = '#!/bin/sh\necho "$(basename "$0") $*" >> "$(dirname "$0")/calls"\nexit 1\n'


def slurm_requested(env=os.environ) -> bool:
    """Whether the Slurm tests were asked for (in the environment, nowhere else)."""
    return env.get("PYEXP_TEST_SLURM") == "1" or env.get("CI") == "true"


def no_slurm_env() -> dict[str, str]:
    """The PYEXP_<COMMAND> overrides that send every Slurm command pyexp runs nowhere."""
    return {f"PYEXP_{name.upper()}": NO_SLURM for name in (*COMMANDS, *QUOTA_COMMANDS)}


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


def write_project(
    root: Path, description: dict, config: dict | None = None, path: str = "experiments/sweep.json"
) -> Path:
    """The one way tests lay a project out on disk: root/config.json (config, default
    {"command": "true"}) and the experiment file root/path; the experiment file's path."""
    write_config(root, {"command": "true"} if config is None else config)
    return write_experiment(root, description, path)


def write_config(root: Path, config: dict) -> Path:
    """root/config.json holding config; its path."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config))
    return root / "config.json"


def write_experiment(root: Path, description: dict, path: str = "experiments/sweep.json") -> Path:
    """The experiment file root/path holding description; its path."""
    out = root / path
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(description))
    return out


@pytest.fixture
def tmpfs(tmp_path):
    """A fresh tmpfs of 256 KiB (root only); yields its path, unmounted afterwards."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


# One script plays sbatch, squeue and scontrol (by its name); FAKE_* variables steer it.
FAKE_SLURM = r"""
import fcntl, os, re, sys, time
state = os.environ["FAKE_SLURM_DIR"]
jobs = os.path.join(state, "jobs.txt")
name = os.path.basename(sys.argv[0])

def sbatch():
    mode = os.environ.get("FAKE_SBATCH_MODE", "accept")
    with open(os.path.join(state, "sbatch.pid"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(float(os.environ.get("FAKE_SBATCH_DELAY", "0")))
    with open(os.path.join(state, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        accepted = open(jobs).read().splitlines() if os.path.exists(jobs) else []
        if mode == "hang":
            time.sleep(60)
        if mode == "socket":
            print("sbatch: error: Socket timed out on send/recv operation", file=sys.stderr)
            sys.exit(1)
        if mode.startswith("refuse_after:") and len(accepted) >= int(mode.split(":")[1]):
            print("sbatch: error: Batch job submission failed: Invalid account", file=sys.stderr)
            sys.exit(1)
        job = 1000 + len(accepted)
        with open(jobs, "a") as f:
            f.write(f"{job}|{sys.argv[-1]}\n")
    print("Submitted batch job 1234" if mode == "garbage" else f"{job};fakecluster")

def squeue():
    with open(os.path.join(state, "squeue-calls.txt"), "a") as f:
        f.write(" ".join(sys.argv[1:]) + "\n")
    if os.environ.get("FAKE_SQUEUE_MODE") == "hang":  # a controller that does not answer
        time.sleep(60)
    if os.environ.get("FAKE_SQUEUE_MODE") == "fail":
        print("slurm_load_jobs error: Unable to contact slurm controller", file=sys.stderr)
        sys.exit(1)
    ids_only = sys.argv[sys.argv.index("-o") + 1] == "%i"
    def show(line):
        print(line.split("|")[0] if ids_only else line)
    show("77|interactive|RUNNING")
    show("78_3|someone-else|PENDING")
    for line in open(jobs).read().splitlines() if os.path.exists(jobs) else []:
        job, script = line.split("|", 1)
        text = open(script).read()
        jobname = re.search(r"--job-name=(\S+)", text).group(1)
        spec = re.search(r"--array=0-(\d+)(%\d+)?", text)
        last, throttle = int(spec.group(1)), spec.group(2) or ""
        show(f"{job}_0|{jobname}|RUNNING")  # one task running, the rest folded
        if last >= 1:
            show(f"{job}_[1-{last}{throttle}]|{jobname}|PENDING")

def scontrol():
    print("Configuration data as of now")
    print(f"MaxArraySize            = {os.environ.get('FAKE_MAX_ARRAY', '11')}")
    print("KillWait                = 30 sec")

{"sbatch": sbatch, "squeue": squeue, "scontrol": scontrol}[name]()
"""

FAKE_PERMUTATIONS = 30  # of the fake-Slurm project


@pytest.fixture
def project(tmp_path, monkeypatch):
    """The fake-Slurm project: an experiment of 30 indices, its config, a cluster config
    (tiny.json) and a fake sbatch/squeue/scontrol (PYEXP_SBATCH, ...); the working directory.
    A module whose tests need another project overrides this fixture with its own."""
    sweep = {"name": "sweep", "metaParameters": {"x": list(range(FAKE_PERMUTATIONS))}}
    exp_path = write_project(tmp_path, sweep, config={"command": "true {index}"})
    config = tmp_path / "config.json"
    cluster = tmp_path / "tiny.json"
    cluster.write_text(json.dumps({"time_hours": 1, "indices_per_task": 1, "array_throttle": 3}))
    fake = tmp_path / "fake"
    fake.mkdir()
    for cmd in ("sbatch", "squeue", "scontrol"):
        path = fake / cmd
        path.write_text(f"#!{sys.executable}\n{FAKE_SLURM}")
        path.chmod(0o755)
        monkeypatch.setenv(f"PYEXP_{cmd.upper()}", str(path))
    monkeypatch.setenv("FAKE_SLURM_DIR", str(fake))
    monkeypatch.setenv("PYEXP_CONFIG", str(config))
    monkeypatch.delenv("SBATCH_ACCOUNT", raising=False)
    monkeypatch.delenv("CC_CLUSTER", raising=False)
    monkeypatch.chdir(tmp_path)
    getConfig.cache_clear()
    yield {"exp": str(exp_path), "cluster": str(cluster), "fake": fake, "root": tmp_path}
    getConfig.cache_clear()


def write_garbage_ledger_entry(exp, entry_id="0badc0ffee00") -> str:
    """A ledger entry file of exp cut short mid-write; its path."""
    folder = state_dirs(exp).ledger
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{entry_id}.json")
    with open(path, "wb") as f:
        f.write(b'{"id": "0badc0ffee00", "tasks": [[0, 1], [2')  # truncated mid-write
    return path
