"""Exactly-once through caching shared filesystems: two real "nodes" (own hostname, pids and
mounts) see one state folder through sshfs mounts whose attribute, entry and negative-entry caches
last as long as the lease (tests/nfs_share.py). No mocks: runners race on the real mounts."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

import pytest
from nfs_share import NO_MOUNT, Share, unavailable
from test_runner import sh

LEASE = 5.0  # seconds; the caches are as long (the issue: caches as long as the lease)
RUN = [sys.executable, "-m", "pyexp.cli.run"]
STATUS = [sys.executable, "-m", "pyexp.cli.status"]


@pytest.fixture
def share(tmp_path):
    """A folder two or more nodes mount with caches of LEASE seconds; skipped without FUSE."""
    why = unavailable()
    if why:
        pytest.skip(why)
    s = Share(tmp_path, LEASE)
    yield s
    s.close()


class Sweep:
    """An experiment whose state_path is on the share (logs and the command's trace are local)."""

    def __init__(self, share: Share, root: Path, n: int) -> None:
        self.share, self.n = share, n
        self.config = root / "config.json"
        self.config.write_text(
            json.dumps({"state_path": str(share.mount / "state"), "log_path": str(root / "logs")})
        )
        self.path = root / "experiments" / "sweep.json"
        self.path.parent.mkdir()
        self.path.write_text(json.dumps({"metaParameters": {"x": list(range(n))}}))
        self.trace = root / "trace"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PYEXP_"))}
        self.env = {**env, "PYEXP_CONFIG": str(self.config), "PYEXP_LEASE_SECONDS": str(LEASE)}

    def command(self, seconds: float) -> str:
        """A command that notes its start and end (host, index) and takes seconds."""
        return sh(
            'echo "start $PYEXP_INDEX $(hostname)" >> "$1"; sleep "$2"; '
            'echo "end $PYEXP_INDEX $(hostname)" >> "$1"',
            self.trace,
            seconds,
        )

    def runner(self, host: str, *args: object, delay: float = 0.0):
        """pyexp-run on a new node."""
        return self.share.node(host, [*RUN, *args], self.env, delay)

    def on_node(self, host: str, code: str):
        """Python code run on a new node (PYEXP_EXP is the experiment file)."""
        env = {**self.env, "PYEXP_EXP": str(self.path)}
        return self.share.node(host, [sys.executable, "-c", code], env)

    def starts(self) -> Counter:
        """How many times each index started."""
        lines = self.trace.read_text().split("\n") if self.trace.exists() else []
        return Counter(int(line.split()[1]) for line in lines if line.startswith("start"))

    def overlapped(self) -> set[int]:
        """Indices that started while another run of them had not ended."""
        running, out = Counter(), set()
        for line in self.trace.read_text().splitlines():
            what, index, _ = line.split()
            running[int(index)] += 1 if what == "start" else -1
            if running[int(index)] > 1:
                out.add(int(index))
        return out

    def state(self) -> dict:
        """Completion records and status, read on a fresh node (after every cache expired)."""
        code = (
            "import json, os, sys\n"
            "from pyexp import loadExperiment\n"
            "from pyexp.config import load_config\n"
            "from pyexp.state.layout import state_dirs\n"
            "from pyexp.state.records import CompletionRecords\n"
            "from pyexp.missing import listMissingResults\n"
            "exp = loadExperiment(os.environ['PYEXP_EXP'],"
            " config=load_config(os.environ['PYEXP_CONFIG']))\n"
            "recs = CompletionRecords(state_dirs(exp).done)\n"
            "names = [n for n in os.listdir(recs.folder) if not n.startswith('.')]\n"
            "print(json.dumps({'records': names, 'done': sorted(recs.completed(compact=False)),"
            " 'missing': list(listMissingResults(exp, 1))}))\n"
        )
        node = self.on_node("reader", code)
        rc, out, err = node.wait()
        assert rc == 0, err
        return json.loads(out)


def check(rc: int, err: str) -> None:
    if rc == NO_MOUNT:
        pytest.skip(f"the caching mount could not be made here: {err.strip()}")
    assert rc == 0, err


def assert_exactly_once(sweep: Sweep) -> None:
    """No index ran twice (at once or after it completed), nothing lost, one record each."""
    starts = sweep.starts()
    assert not sweep.overlapped(), sweep.trace.read_text()
    assert sorted(starts) == list(range(sweep.n)), starts
    twice = sorted(i for i, c in starts.items() if c > 1)
    assert twice == [], f"ran twice: {twice}"
    state = sweep.state()
    assert len(state["records"]) == len(set(state["records"])) == sweep.n, state
    assert len(state["done"]) == sweep.n and state["missing"] == [], state


def test_two_nodes_racing_on_the_same_indices_run_each_once(share, tmp_path):
    sweep = Sweep(share, tmp_path, 24)
    command = sweep.command(2)
    nodes = [
        sweep.runner(h, sweep.path, "--indices", "0-23", "--parallel", 6, "--command", command)
        for h in ("node-a", "node-b")
    ]
    for node in nodes:
        check(*[node.wait()[i] for i in (0, 2)])
    assert_exactly_once(sweep)
