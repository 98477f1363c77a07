"""Fault injection against the real single-node Slurm: killed runners, cancels, a controller that
does not answer, a full state filesystem, two cron runs at once.

Every scenario runs a job that notes when each index starts and ends, holds an flock on the
index while it runs (a second holder notes an overlap), and then checks: no index ran twice at
the same time, nothing that finished was lost, nothing is done that did not finish, and every
error pyexp printed is one line. In CI (CI=true) these fail when Slurm is not reachable.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections import Counter
from itertools import pairwise

import pytest

pytestmark = pytest.mark.slurm

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
        (root / "experiments").mkdir(parents=True)
        self.experiment = root / "experiments" / "faults.json"
        self.experiment.write_text(
            json.dumps({"name": "faults", "metaParameters": {"x": list(range(n))}})
        )
        (root / "job.py").write_text(JOB)
        for i in slow:  # these run until the file is removed, so a fault finds them running
            (root / f"slow-{i}").touch()
        command = f"{shlex.quote(sys.executable)} {shlex.quote(str(root / 'job.py'))} {{index}}"
        self.config = root / "config.json"
        self.config.write_text(json.dumps({"command": command, "state_path": self.state}))
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


def _runner_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_runner_sigkilled_mid_index_reruns_it_once_its_lease_is_stale(tmp_path):
    sweep = Sweep(tmp_path / "p", 4, slow=(1,))
    assert sweep.submit().returncode == 0
    child = sweep.wait_for_start(1)
    (tmp_path / "p" / "slow-1").unlink()
    os.kill(_runner_of(child), 9)
    sweep.converge()
    sweep.check()
    assert sweep.starts()[1] == 2 and all(sweep.starts()[i] == 1 for i in (0, 2, 3))


def test_scancel_of_a_running_task_retries_its_index_uncharged(tmp_path):
    sweep = Sweep(tmp_path / "p", 4, slow=(2,))
    assert sweep.submit().returncode == 0
    child = sweep.wait_for_start(2)
    (tmp_path / "p" / "slow-2").unlink()
    subprocess.run(["scancel", _job_of(child)], check=True)
    sweep.converge()
    sweep.check()
    assert sweep.status()["failed"] == 0 and sweep.starts()[2] == 2


def _job_of(pid: int) -> str:
    """The array task `<job>_<task>` a process runs in, from its environment."""
    with open(f"/proc/{_runner_of(pid)}/environ", "rb") as f:
        env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
    return f"{env[b'SLURM_ARRAY_JOB_ID'].decode()}_{env[b'SLURM_ARRAY_TASK_ID'].decode()}"


def test_pending_array_cancelled_three_times_is_never_failed(tmp_path):
    sweep = Sweep(tmp_path / "p", 3, sbatch={"hold": None})  # held: it stays pending
    for _ in range(3):  # with --max-attempts 1, one charged cancel would give an index up
        result = sweep.submit("--max-attempts", "1")
        assert "submitted 3 indices" in result.stdout, result.stderr
        for job in {j.split("_")[0] for j in our_jobs(sweep.state)}:
            subprocess.run(["scancel", job], check=True)
        wait_gone(sweep.state, time.monotonic() + 30)
    result = sweep.submit("--dry-run")
    assert "would submit 3 indices" in result.stdout, result.stdout + result.stderr
    report = sweep.status()
    assert (report["failed"], report["missing"]) == (0, 3), report
    assert sweep.events() == []  # never ran
    sweep.cluster.write_text(json.dumps({**json.loads(sweep.cluster.read_text()), "sbatch": {}}))
    sweep.converge()
    sweep.check()
    assert sweep.starts() == Counter(range(3))


def test_sbatch_that_hangs_or_cannot_reach_slurmctld_submits_nothing_twice(tmp_path):
    sweep = Sweep(tmp_path / "p", 6, indices_per_task=3)
    down = tmp_path / "sbatch-down"
    down.write_text(
        "#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Unable to contact slurm "
        "controller (connect failure)' >&2\nexit 1\n"
    )
    hangs = tmp_path / "sbatch-hangs"  # queues the job (held, to look at it), never answers
    hangs.write_text('#!/bin/sh\nsbatch --hold "$@" > /dev/null\nexec sleep 60\n')
    for fake in (down, hangs):
        fake.chmod(0o755)
    result = sweep.submit(PYEXP_SBATCH=str(down))
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "Unable to contact" in result.stderr
    assert sweep.events() == [] and not our_jobs(sweep.state)

    result = sweep.submit(PYEXP_SBATCH=str(hangs), PYEXP_SLURM_TIMEOUT="3")
    assert result.returncode == 1 and "did not answer within 3 s" in result.stderr, result.stderr
    assert our_jobs(sweep.state)  # queued although sbatch never said so
    again = sweep.submit()  # the queued array's indices are found by its job name
    assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stdout
    for job in {j.split("_")[0] for j in our_jobs(sweep.state)}:
        subprocess.run(["scontrol", "release", job], check=True)
    sweep.converge()
    sweep.check()
    assert sweep.starts() == Counter(range(6))


@pytest.fixture
def tiny_state(tmp_path):
    """A 1 MiB tmpfs to hold state_path, filled up on demand."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "state"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder) -> None:
    with open(os.path.join(folder, "filler"), "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:  # full
            pass


def test_full_state_filesystem_during_record_writes_loses_nothing(tmp_path, tiny_state):
    sweep = Sweep(tmp_path / "p", 4, slow=(0, 1, 2, 3), state_path=str(tiny_state))
    assert sweep.submit().returncode == 0
    for i in range(4):
        sweep.wait_for_start(i)
    _fill(tiny_state)
    for i in range(4):
        (tmp_path / "p" / f"slow-{i}").unlink()
    deadline = time.monotonic() + 60
    wait_gone(sweep.state, deadline)  # each finished, unable to write its record
    said = "".join(err.read_text() for err in (tmp_path / "p" / "logs").rglob("*.err"))
    assert "not recorded" in said and all(x.startswith("pyexp-run: ") for x in said.splitlines())
    # Each released lease frees a page that the next record fits in: some are recorded.
    report = sweep.status()
    assert report["done"] < 4 and report["done"] + report["missing"] == 4, report
    full = sweep.submit()
    assert full.returncode in (0, 1) and full.stderr.count("\n") <= 1, full.stderr
    os.unlink(tiny_state / "filler")
    sweep.converge()
    sweep.check()


def test_two_cron_submits_at_the_same_instant_run_each_index_once(tmp_path):
    sweep = Sweep(tmp_path / "p", 12, indices_per_task=2)
    argv = [sys.executable, "-m", "pyexp", "submit", str(sweep.experiment), "--runs", "1"]
    argv += ["--cluster", str(sweep.cluster), "--indices-per-task", sweep.per_task]
    procs = [
        subprocess.Popen(argv, cwd=sweep.root, env=sweep.env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert sorted("nothing to submit" in out for out in outs) == [False, True], outs
    sweep.converge()
    sweep.check()
    assert sweep.starts() == Counter(range(12))
