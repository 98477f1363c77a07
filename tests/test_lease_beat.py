"""Lease refreshes on reused threads (state/lease_beat.py): a lease per index starts no thread
per index, a held marker is still renewed and a lost one still reported, and a released lease
is never refreshed again."""

from __future__ import annotations

import os
import threading
import time

from pyexp.state.leases import IndexLeases


def test_a_lease_per_index_starts_no_thread_per_index(tmp_path, monkeypatch):
    started: list[str] = []
    start = threading.Thread.start

    def counted(thread: threading.Thread) -> None:
        started.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", counted)
    leases = IndexLeases(str(tmp_path), 3.0)
    for i in range(20):
        assert leases.try_take(f"k{i}") is not None
        leases.end(f"k{i}", completed=True)
    leases.release()
    assert len(started) <= 3, started  # the info beat, and a refresh thread or two, reused


def test_a_held_marker_is_renewed_and_a_removed_one_reported_lost(tmp_path):
    lost: list[str] = []
    leases = IndexLeases(str(tmp_path), 0.6, on_lost=lost.append)
    lease = leases.try_take("k")
    first = os.stat(lease.path).st_mtime
    time.sleep(0.5)
    assert os.stat(lease.path).st_mtime > first  # renewed every D/3
    os.remove(lease.path)
    deadline = time.monotonic() + 3
    while not lost and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lost == ["k"]
    leases.release()


def test_a_released_lease_is_never_refreshed_again(tmp_path):
    lost: list[str] = []
    leases = IndexLeases(str(tmp_path), 0.3, on_lost=lost.append)
    lease = leases.try_take("k")
    leases.forget("k")
    with open(lease.path, "w") as f:  # someone else's file at the same path now
        f.write("theirs\n")
    os.utime(lease.path, (1.0, 1.0))
    time.sleep(0.5)  # five refresh intervals
    assert os.stat(lease.path).st_mtime == 1.0 and not lost
