"""Commands die with their runner: the watcher process (pidfds) and its restart."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
from runner_helpers import wait_for

from pyexp.runner import processes

pytestmark = pytest.mark.skipif(not processes._has_pidfd(), reason="needs Linux 5.3+ pidfds")

# A runner stand-in: starts `sh` commands through Spawner (each with a background sleep in its
# group), prints their pids and its watcher's, and on "kill-watcher" kills the watcher (and
# reaps it) before starting the next one.
RUNNER = """
import os, signal, sys
from pyexp.runner.processes import Spawner
def watchers(parent):
    found = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat, cmd = open(f"/proc/{p}/stat").read(), open(f"/proc/{p}/cmdline").read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and "recv_fds" in cmd:
            found.append(int(p))
    return found
for line in sys.stdin:
    if line.strip() == "kill-watcher":
        [watcher] = watchers(os.getpid())
        os.kill(watcher, signal.SIGKILL)
        os.waitpid(watcher, 0)
        continue
    proc = Spawner().start(["sh", "-c", "sleep 60 & echo $! > " + line.strip() + "; wait"], None,
                           {"PATH": os.environ["PATH"]})
    print(proc.pid, *watchers(os.getpid()), flush=True)
"""


def alive(pid: int) -> bool:
    """Running, not a zombie (a container's pid 1 may never reap orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start(runner: subprocess.Popen, tmp_path, name: str) -> tuple[int, int]:
    """Have runner start a command; (its pid, the pid of the sleep in its group)."""
    runner.stdin.write(f"{tmp_path / name}\n")
    runner.stdin.flush()
    pid, *watchers = map(int, runner.stdout.readline().split())
    assert len(watchers) == 1  # one per runner, however many commands and spawners
    wait_for(lambda: (tmp_path / name).exists() and (tmp_path / name).read_text().endswith("\n"))
    return pid, int((tmp_path / name).read_text())


def runner_process() -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def test_a_runner_killed_with_sigkill_takes_its_commands_whole_groups_with_it(tmp_path):
    runner = runner_process()
    pids = [*start(runner, tmp_path, "a"), *start(runner, tmp_path, "b")]
    assert all(alive(p) for p in pids)
    runner.kill()
    runner.wait()
    wait_for(lambda: not any(alive(p) for p in pids), 5)


def test_a_killed_watcher_is_replaced_and_handed_the_commands_still_running(tmp_path):
    runner = runner_process()
    first = start(runner, tmp_path, "a")
    runner.stdin.write("kill-watcher\n")
    second = start(runner, tmp_path, "b")
    assert all(alive(p) for p in (*first, *second))
    runner.kill()
    runner.wait()
    wait_for(lambda: not any(alive(p) for p in (*first, *second)), 5)


def test_a_runner_that_exits_takes_its_watcher_and_commands_with_it(tmp_path):
    runner = runner_process()
    pids = start(runner, tmp_path, "a")
    [watcher] = [int(p) for p in os.listdir("/proc") if p.isdigit() and _watcher_of(p, runner.pid)]
    runner.stdin.close()  # ends its loop: a normal exit, its commands still running
    assert runner.wait(10) == 0
    wait_for(lambda: not any(alive(p) for p in (*pids, watcher)), 5)


def _watcher_of(pid: str, parent: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f, open(f"/proc/{pid}/cmdline") as g:
            return int(f.read().rsplit(")", 1)[1].split()[1]) == parent and "recv_fds" in g.read()
    except OSError:
        return False


def test_a_command_that_cannot_be_handed_to_the_watcher_is_killed_and_reported_unstarted(
    monkeypatch,
):
    spawner, started, real = processes.Spawner(), [], subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real(*args, **kwargs))
        return started[-1]

    def no_pidfd(pid):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    with pytest.raises(OSError, match="Too many open files"):
        spawner.start(["sleep", "60"], None, {"PATH": os.environ["PATH"]})
    assert started[0].returncode == -9  # killed and reaped: it must not run unwatched
