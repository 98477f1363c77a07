"""The runner waits on nothing per index but its commands: no thread per command's output, and
output still copied while it comes, also from a daemon that outlives its command."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import write_config
from runner_helpers import Project, in_process_runner, sh

from pyexp.runner import capped


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def test_output_of_each_index_is_copied_without_starting_a_thread_for_it(project, monkeypatch):
    path = project.experiment("threads", {"a": list(range(12))})
    started: list[str] = []
    start = threading.Thread.start

    def counted(thread: threading.Thread) -> None:
        target = getattr(thread, "_target", None)
        started.append(getattr(target, "__module__", "") or "")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", counted)
    runner, out = in_process_runner(project, path, sh('echo "index $1"', "{index}"), parallel=2)
    assert runner.run(range(12)) == 0, out.getvalue()
    ours = [m for m in started if m.startswith("pyexp")]
    assert len(ours) <= 1, ours  # the lease heartbeat, once per runner
    logs = "".join(p.read_text() for p in (project.root / "logs").rglob("tasks/*.log"))
    assert all(f"index {i}\n" in logs for i in range(12))


def test_uncapped_output_larger_than_a_pipe_is_copied_whole(project):
    write_config(project.root, {"state_path": "state", "log_path": "logs", "max_log_bytes": 0})
    path = project.experiment("loud", {"a": [1]})
    runner, out = in_process_runner(project, path, sh("head -c 3000000 /dev/zero; echo end"))
    assert runner.run([0]) == 0, out.getvalue()
    [log] = (project.root / "logs").rglob("tasks/*.log")
    assert log.stat().st_size > 3_000_000 and "end\n" in log.read_text()


def test_a_daemon_holding_an_indexs_output_delays_the_next_index_a_bounded_time(
    project, monkeypatch
):
    monkeypatch.setattr(capped, "END_SECONDS", 0.5)
    path = project.experiment("daemon", {"a": [0, 1]})
    # Index 0 leaves a daemon holding its output; index 1 runs while that daemon still writes.
    script = 'if [ "$1" = 0 ]; then (sleep 1.5; echo late) & echo early; else sleep 3; fi'
    command = sh(script, "{index}")
    runner, out = in_process_runner(project, path, command, parallel=1)
    assert runner.run([0, 1]) == 0, out.getvalue()
    assert "index 0: done" in out.getvalue() and "index 1: done" in out.getvalue()
    logs = "".join(p.read_text() for p in (project.root / "logs").rglob("tasks/*.log"))
    assert "early\n" in logs and "late\n" in logs  # copied after its command ended
