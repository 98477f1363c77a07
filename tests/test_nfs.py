"""Exactly-once through caching shared filesystems: two real "nodes" (own hostname, pids and
mounts) see one state folder through sshfs mounts whose attribute, entry and negative-entry caches
last as long as the lease (tests/nfs_share.py). No mocks: runners race on the real mounts."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from nfs_share import NO_MOUNT, Share, unavailable
from test_runner import sh

from pyexp.config import load_config
from pyexp.experiment import loadExperiment
from pyexp.state.layout import state_dirs
from pyexp.state.ledger import FARM, Ledger, LedgerEntry, new_entry_id

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
            "{index}",  # farm workers run the command once per index
        )

    def runner(self, host: str, *args: object, delay: float = 0.0):
        """pyexp-run on a new node."""
        return self.share.node(host, [*RUN, *args], self.env, delay)

    def on_node(self, host: str, code: str):
        """Python code run on a new node (PYEXP_EXP is the experiment file)."""
        env = {**self.env, "PYEXP_EXP": str(self.path)}
        return self.share.node(host, [sys.executable, "-c", code], env)

    def on_server(self):
        """The experiment with its state_path on the share's server side (not through a mount)."""
        config = json.loads(self.config.read_text())
        config["state_path"] = str(self.share.server / "state")
        server_config = self.config.with_name("server-config.json")
        server_config.write_text(json.dumps(config))
        return loadExperiment(str(self.path), config=load_config(str(server_config)))

    def farm(self, workers: int) -> str:
        """A farm entry over every index, written through the share's server side; its path
        as nodes see it."""
        exp = self.on_server()
        entry = LedgerEntry(
            id=new_entry_id(),
            experiment=str(self.path),
            fingerprint=exp.fingerprint(),
            snapshot=json.loads(json.dumps(exp.description)),
            runs=1,
            tasks=[],
            mode=FARM,
            pool=f"0-{self.n - 1}",
            workers=workers,
        )
        ledger = Ledger(state_dirs(exp).ledger)
        ledger.write(entry)
        server_path = ledger.path(entry.id)
        return server_path.replace(str(self.share.server), str(self.share.mount), 1)

    def wait_trace(self, line: str, timeout: float = 60) -> None:
        """Wait until the command's trace has line."""
        end = time.monotonic() + timeout
        while not (self.trace.exists() and line in self.trace.read_text().splitlines()):
            assert time.monotonic() < end, f"no {line!r} in the trace"
            time.sleep(0.05)

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
            "from pyexp.state.records import CompletionRecords, read_segment\n"
            "from pyexp.standing.missing import listMissingResults\n"
            "exp = loadExperiment(os.environ['PYEXP_EXP'],"
            " config=load_config(os.environ['PYEXP_CONFIG']))\n"
            "recs = CompletionRecords(state_dirs(exp).done)\n"
            "skip = ('segments', 'durations', 'damaged')\n"
            "names = [n for n in os.listdir(recs.folder) if n[0] != '.' and n not in skip]\n"
            "seg = os.path.join(recs.folder, 'segments')\n"
            "for n in os.listdir(seg) if os.path.isdir(seg) else []:\n"
            "    names += sorted(read_segment(os.path.join(seg, n)))  # folded when a task ended\n"
            "print(json.dumps({'records': names, 'done': sorted(recs.completed(compact=False)),"
            " 'missing': list(listMissingResults(exp, 1))}))\n"
        )
        rc, out, err = self.on_node("reader", code).wait()
        assert rc == 0, err
        state = json.loads(out)
        status = [*STATUS, self.path, "--no-slurm", "--json", "--runs", "1"]
        rc, out, err = self.share.node("status", status, self.env).wait()
        assert rc == 0, err
        state["status"] = json.loads(out)[0]
        return state


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
    status = state["status"]
    assert (status["done"], status["running"], status["held"]) == (sweep.n, 0, 0), status


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


def test_farm_workers_on_two_nodes_run_each_index_once(share, tmp_path):
    sweep = Sweep(share, tmp_path, 16)
    ledger = sweep.farm(workers=4)
    command = sweep.command(1)
    nodes = [
        sweep.runner(f"node-{w}", "--ledger", ledger, "--task", w, "--command", command)
        for w in range(4)
    ]
    for node in nodes:
        check(*[node.wait()[i] for i in (0, 2)])
    assert_exactly_once(sweep)


def test_killed_node_is_taken_over_after_the_lease_and_never_while_alive(share, tmp_path):
    sweep = Sweep(share, tmp_path, 2)
    once = sh(
        '[ -e "$1.$PYEXP_INDEX" ] && exec sh -c "$2"; touch "$1.$PYEXP_INDEX";'
        ' echo "start $PYEXP_INDEX $(hostname)" >> "$1"; exec sleep 600',
        sweep.trace,
        sweep.command(0.5),
    )
    holder = sweep.runner(
        "node-a", sweep.path, "--indices", "0-1", "--parallel", 2, "--command", once
    )
    sweep.wait_trace("start 1 node-a")
    sweep.wait_trace("start 0 node-a")
    # While node-a lives (its heartbeat renewing, its caches as long as the lease), node-b
    # watches the leases for 1.5 leases, then leaves them to it.
    start = time.monotonic()
    rc, _, err = sweep.runner("node-b", sweep.path, "--indices", "0-1", "--command", once).wait()
    check(rc, err)
    assert time.monotonic() - start >= LEASE and "2 left to other runners" in err, err
    assert holder.proc.poll() is None and sweep.starts() == Counter({0: 1, 1: 1})
    holder.kill()  # the node fails: no release, its markers stay
    killed = time.monotonic()
    rc, _, err = sweep.runner("node-b", sweep.path, "--indices", "0-1", "--command", once).wait()
    check(rc, err)
    took = time.monotonic() - killed
    assert LEASE <= took < 3 * LEASE + 10, (took, err)
    assert "2 done" in err, err
    # Each started once on node-a (killed, never completed) and once on node-b, after the kill.
    assert sweep.starts() == Counter({0: 2, 1: 2})
    state = sweep.state()
    assert len(state["records"]) == 2 and state["missing"] == [], state
    assert state["status"]["done"] == 2, state


def test_finished_index_whose_record_the_other_node_cannot_see_yet_is_not_run_again(
    share, tmp_path
):
    sweep = Sweep(share, tmp_path, 3)
    args = (sweep.path, "--indices", "0-2", "--parallel", 3, "--command", sweep.command(2))
    first = sweep.runner("node-a", *args)
    for i in range(3):
        sweep.wait_trace(f"start {i} node-a")
    # node-b finds them leased and looks for their records (caching "no such file" for a
    # lease); node-a then completes them and releases: node-b's next tries find the leases
    # free while its cache still hides the records.
    late = sweep.runner("node-b", *args)
    check(*[first.wait()[i] for i in (0, 2)])
    rc, _, err = late.wait()
    check(rc, err)
    assert "3 already complete" in err, err
    assert_exactly_once(sweep)


def test_slow_shared_filesystem_runs_each_index_once_without_traceback(share, tmp_path):
    # node-slow's SFTP requests wait 0.15 s each, one after the other (a busy server: seconds
    # per call once its heartbeats queue up too); node-fast races it on the same indices.
    sweep = Sweep(share, tmp_path, 4)
    args = (sweep.path, "--indices", "0-3", "--parallel", 2, "--command", sweep.command(0.5))
    slow = sweep.runner("node-slow", *args, delay=0.15)
    sweep.wait_trace("start 0 node-slow", timeout=120)
    fast = sweep.runner("node-fast", *args)
    outputs = [node.wait(timeout=300) for node in (slow, fast)]
    for rc, _, err in outputs:
        check(rc, err)
        assert "Traceback" not in err
    assert_exactly_once(sweep)
