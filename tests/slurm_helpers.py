"""What the real-Slurm tests share: a sweep whose job notes each index's start and end (and any
overlap), submitted to the local Slurm; a project whose command counts each index's runs
(Project); waits on squeue."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
from conftest import write_project

from pyexp.config import load_config
from pyexp.experiment import loadExperiment
from pyexp.state.layout import state_dirs
from pyexp.state.ledger import Ledger, LedgerEntry

JOB = """
import fcntl, os, sys, time
index, root = sys.argv[1], os.path.dirname(os.path.abspath(__file__))
def note(what):
    with open(os.path.join(root, "events.txt"), "a") as f:
        f.write(f"{what} {index} {os.getpid()} {time.time():.6f}\\n")
os.makedirs(os.path.join(root, "running"), exist_ok=True)
fd = os.open(os.path.join(root, "running", index), os.O_CREAT | os.O_RDWR)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    note("overlap")
note("start")
slow, until = os.path.join(root, f"slow-{index}"), time.time() + 30
time.sleep(0.5)
while os.path.exists(slow) and time.time() < until:  # held here until the test lets it go
    time.sleep(0.1)
note("end")
"""


class Sweep:
    """An experiment of n indices whose job notes its starts and ends, submitted to Slurm."""

    def __init__(
        self, root, n: int, slow: tuple[int, ...] = (), state_path: str | None = None, **cluster
    ) -> None:
        self.root, self.n = root, n
        self.state = state_path or str(root / ".pyexp")
        root.mkdir(parents=True)
        (root / "job.py").write_text(JOB)
        for i in slow:  # these run until the file is removed, so a fault finds them running
            (root / f"slow-{i}").touch()
        command = f"{shlex.quote(sys.executable)} {shlex.quote(str(root / 'job.py'))} {{index}}"
        meta = {"name": "faults", "metaParameters": {"x": list(range(n))}}
        config = {"command": command, "state_path": self.state}
        self.experiment = write_project(root, meta, config, "experiments/faults.json")
        self.config = root / "config.json"
        self.cluster = root / "cluster.json"
        settings = {
            "time_hours": 0.1,
            "mem_per_core_gb": 0.1,
            "indices_per_task": 1,
            "signal_lead_seconds": 0,
            "account_required": False,
        }
        self.cluster.write_text(json.dumps({**settings, **cluster}))
        self.per_task = str({**settings, **cluster}["indices_per_task"])  # static bundles
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")}
        # Short leases and grace: a dead holder's index is free again within seconds.
        self.env.update(
            PYEXP_CONFIG=str(self.config), PYEXP_LEASE_SECONDS="2", PYEXP_GRACE_SECONDS="2"
        )

    def pyexp(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        """Run `python -m pyexp ...` here; its stderr must be one line per message."""
        result = subprocess.run(
            [sys.executable, "-m", "pyexp", *args],
            cwd=self.root,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        for line in result.stderr.splitlines():
            assert line.startswith("pyexp-"), f"not a one-line error: {result.stderr!r}"
        return result

    def submit(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        """One cron round."""
        where = ("--runs", "1", "--cluster", str(self.cluster), "--indices-per-task", self.per_task)
        return self.pyexp("submit", str(self.experiment), *where, *args, **env)

    def status(self) -> dict:
        """pyexp-status --json of the sweep."""
        result = self.pyexp("status", str(self.experiment), "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)[0]

    def events(self) -> list[tuple[str, int, int, float]]:
        path = self.root / "events.txt"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(w, int(i), int(p), float(t)) for w, i, p, t in (line.split() for line in lines)]

    def starts(self) -> Counter:
        return Counter(i for w, i, _, _ in self.events() if w == "start")

    def wait_for_start(self, index: int, timeout: float = 60) -> int:
        """The pid of the job process running index, once it has started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = [p for w, i, p, _ in self.events() if w == "start" and i == index]
            if pids:
                return pids[-1]
            time.sleep(0.2)
        pytest.fail(f"index {index} did not start within {timeout} s")

    def converge(self, rounds: int = 8, timeout: float = 90) -> None:
        """Cron: submit once the queue is empty, until every index is done."""
        deadline = time.monotonic() + timeout
        for _ in range(rounds):
            wait_gone(self.state, deadline)
            result = self.submit()
            assert result.returncode == 0, result.stderr
            if self.status()["done"] == self.n:
                return
            time.sleep(1)
        pytest.fail(f"not converged: {self.status()}")

    def check(self) -> None:
        """No overlap, nothing done that did not finish, every index done."""
        events = self.events()
        # A run killed mid-way has no end; the flock each run holds catches its overlaps.
        assert not [e for e in events if e[0] == "overlap"], events
        runs: dict[tuple[int, int], list[float]] = {}
        for what, index, pid, t in events:
            if what in ("start", "end"):
                runs.setdefault((index, pid), []).append(t)
        finished = sorted((i, ts[0], ts[-1]) for (i, _), ts in runs.items() if len(ts) == 2)
        for (i, _, end), (j, start, _) in pairwise(finished):
            assert i != j or end <= start, f"index {i} ran twice at once: {finished}"
        ended = {i for w, i, _, _ in events if w == "end"}
        report = self.status()
        assert report["done"] == self.n and ended == set(range(self.n)), report


def our_jobs(state: str) -> list[str]:
    """Array tasks of ours still pending or running: their scripts are under state_path."""
    out = subprocess.run(
        ["squeue", "-h", "-r", "-o", "%i|%o"], capture_output=True, text=True, check=True
    )
    return [line.split("|")[0] for line in out.stdout.splitlines() if state in line]


def wait_gone(state: str, deadline: float) -> None:
    while our_jobs(state):
        if time.monotonic() > deadline:
            pytest.fail(f"our arrays still in squeue: {our_jobs(state)}")
        time.sleep(0.5)


def runner_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


class Project:
    """An experiment of `permutations` indices per run in a folder with a space and a quote."""

    def __init__(self, root, permutations: int) -> None:
        self.root = root / "my project's dir"
        self.count = self.root / "count.txt"
        # Each run of an index appends its number: the lines count the executions.
        command = f"sh -c 'echo {{index}} >> \"$0\"' {shlex.quote(str(self.count))}"
        meta = {"name": "e2e", "metaParameters": {"x": list(range(permutations))}}
        self.experiment = write_project(
            self.root, meta, {"command": command}, "experiments/e2e.json"
        )
        self.config = self.root / "config.json"

    def submit(self, *args: str, cluster: str = "local") -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYEXP_")}
        env["PYEXP_CONFIG"] = str(self.config)
        argv = [sys.executable, "-m", "pyexp.cli.submit", str(self.experiment), *args]
        argv += ["--cluster", cluster]
        return subprocess.run(argv, cwd=self.root, env=env, capture_output=True, text=True)

    def entries(self) -> list[LedgerEntry]:
        exp = loadExperiment(str(self.experiment), config=load_config(str(self.config)))
        return Ledger(state_dirs(exp).ledger).entries()

    def counts(self) -> Counter:
        return (
            Counter(int(x) for x in self.count.read_text().split())
            if self.count.exists()
            else Counter()
        )


def squeue_words(*args: str) -> list[str]:
    """The words squeue -h prints with args."""
    out = subprocess.run(["squeue", "-h", *args], capture_output=True, text=True, check=True)
    return out.stdout.split()


def wait_jobs_gone(job_ids: list[str], timeout: float) -> None:
    """Wait until squeue no longer lists any of job_ids."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not squeue_words("-j", ",".join(job_ids), "-o", "%i"):
            return
        time.sleep(0.5)
    pytest.fail(f"jobs {job_ids} still in squeue after {timeout} s")


def err_texts(logs: Path) -> list[str]:
    """Every array task's .err under logs: the files, and those a pyexp-submit folded into the
    task-log archives once their array was settled (state/task_logs.py)."""
    from pyexp.state.task_logs import ARCHIVED

    out = [p.read_text() for p in sorted(logs.rglob("*.err"))]
    for archive in sorted(logs.rglob("archive-*.log")):
        sections = archive.read_text(errors="replace").split(ARCHIVED)[1:]
        out += [s.split("\n", 1)[1] for s in sections if s.split("\n", 1)[0].endswith(".err")]
    return out
