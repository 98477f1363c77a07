"""The runner waits on nothing per index but its commands: no thread per command's output,
output still copied while it comes (also from a daemon that outlives its command), and a success
recorded while the next index runs."""

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


def _running_when_recorded(runner, method: str) -> list[list[int]]:
    """Wrap runner.<method> (records.mark_complete or attempts.record) to note which indices
    run each time it is called."""
    owner = runner.records if method == "mark_complete" else runner.attempts
    seen: list[list[int]] = []
    real = getattr(owner, method)

    def noting(*args, **kwargs):
        seen.append(sorted(r.item.index for r in runner.running.values()))
        return real(*args, **kwargs)

    setattr(owner, method, noting)
    return seen


def test_the_next_index_starts_before_the_last_one_is_recorded(project):
    path = project.experiment("overlap", {"a": list(range(4))})
    runner, out = in_process_runner(project, path, sh("sleep 0.2"), parallel=1)
    seen = _running_when_recorded(runner, "mark_complete")
    assert runner.run(range(4)) == 0, out.getvalue()
    assert seen == [[1], [2], [3], []]  # each record written while the next index runs
    assert all(project.complete(path, i) for i in range(4))


def test_a_failed_index_is_recorded_before_anything_new_starts(project):
    path = project.experiment("failing", {"a": list(range(3))})
    runner, out = in_process_runner(project, path, sh("exit 3"), parallel=1)
    seen = _running_when_recorded(runner, "record")
    assert runner.run(range(3)) == 1, out.getvalue()
    assert seen == [[], [], []]  # the guard hears of each failure before the next starts


def test_a_lease_that_cannot_be_written_after_a_success_stops_new_work_not_the_run(project):
    path = project.experiment("unwritable", {"a": list(range(3))})
    runner, out = in_process_runner(project, path, sh("true"), parallel=1)
    real, calls = runner.leases.try_take, []

    def try_take(key):
        calls.append(key)
        if len(calls) == 2:  # index 0 has exited 0 and waits for its record
            raise OSError(28, "No space left on device", "leases/x.lease")
        return real(key)

    runner.leases.try_take = try_take
    assert runner.run(range(3)) == 1
    assert "starting no new index" in out.getvalue()
    assert project.complete(path, 0) and not project.complete(path, 1)
