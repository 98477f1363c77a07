"""Per-index leases: exclusion, takeover of dead holders, liveness of markers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pyexp.state.leases import IndexLeases, lease_seconds, live_keys, read_holder

HOLD = textwrap.dedent(
    """
    import sys, time
    from pyexp.state.leases import IndexLeases
    lease = IndexLeases(sys.argv[1], float(sys.argv[2]), job="77_3").try_take("k")
    print("held" if lease else "refused", flush=True)
    time.sleep(60)
    """
)


def hold_in_child(folder: str, duration: float) -> subprocess.Popen:
    """A live process on this host holding lease 'k' (heartbeat running)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, folder, str(duration)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def foreign_marker(folder: str, key: str, duration: float) -> str:
    """A lease marker as a holder on another host writes it."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, key + ".lease")
    with open(path, "w") as f:
        f.write(
            f"filelock/2\npid=4242\nhost=node-elsewhere\nmode=lease\ntoken={'ab' * 16}\n"
            f"duration={duration!r}\nslurm_job=9_1\n"
        )
    return path


def poll_take(leases: IndexLeases, key: str, limit: float, every: float = 0.05):
    """(lease, seconds) polling try_take until it succeeds or limit passes."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if (lease := leases.try_take(key)) is not None:
            return lease, time.monotonic() - start
        time.sleep(every)
    return None, limit


def test_one_holder_at_a_time_and_release(tmp_path):
    a, b = IndexLeases(str(tmp_path), 5.0, job="12_0"), IndexLeases(str(tmp_path), 5.0)
    lease = a.try_take("k")
    assert lease is not None
    assert b.try_take("k") is None
    holder = read_holder(lease.path)
    assert holder["pid"] == str(os.getpid()) and holder["slurm_job"] == "12_0"
    assert holder["host"] and holder["mode"] == "lease"
    lease.release()
    assert not os.path.exists(lease.path)
    assert b.try_take("k") is not None
    b.release()


def test_dead_holder_on_this_host_is_taken_over_at_once(tmp_path):
    proc = hold_in_child(str(tmp_path), 2.0)
    ours = IndexLeases(str(tmp_path), 2.0)
    assert ours.try_take("k") is None
    proc.kill()
    proc.wait()
    lease, seconds = poll_take(ours, "k", 2.0)
    assert lease is not None and seconds < 0.5
    ours.release()


def test_live_holder_is_never_taken_over(tmp_path):
    proc = hold_in_child(str(tmp_path), 1.0)
    try:
        path = os.path.join(tmp_path, "k.lease")
        first = os.stat(path).st_mtime
        lease, _ = poll_take(IndexLeases(str(tmp_path), 1.0), "k", 2.5)
        assert lease is None
        assert os.stat(path).st_mtime > first  # the heartbeat renews the marker's mtime
        assert read_holder(path)["slurm_job"] == "77_3"
    finally:
        proc.kill()
        proc.wait()


def test_foreign_marker_is_taken_over_after_the_lease_duration(tmp_path):
    foreign_marker(str(tmp_path), "k", 1.0)
    leases = IndexLeases(str(tmp_path), 1.0)
    lease, seconds = poll_take(leases, "k", 3.0)
    assert lease is not None
    assert 1.0 <= seconds < 2.0
    assert read_holder(lease.path)["pid"] == str(os.getpid())
    leases.release()


def test_foreign_marker_that_keeps_changing_is_not_taken(tmp_path):
    path = foreign_marker(str(tmp_path), "k", 0.5)
    leases = IndexLeases(str(tmp_path), 0.5)
    start = time.monotonic()
    while time.monotonic() - start < 1.5:  # a live remote heartbeat touching the marker
        os.utime(path)
        assert leases.try_take("k") is None
        time.sleep(0.1)


def test_disagreeing_duration_never_takes_and_does_not_raise(tmp_path):
    foreign_marker(str(tmp_path), "k", 5.0)
    leases = IndexLeases(str(tmp_path), 0.3)
    lease, _ = poll_take(leases, "k", 1.0)
    assert lease is None


def test_live_keys_are_the_recently_renewed_markers(tmp_path):
    leases = IndexLeases(str(tmp_path), 30.0)
    assert leases.try_take("fresh") is not None
    stale = foreign_marker(str(tmp_path), "stale", 30.0)
    os.utime(stale, (time.time() - 60, time.time() - 60))
    (tmp_path / "fresh.lease.break.1.x").write_text("")
    assert live_keys(str(tmp_path), 30.0) == {"fresh"}
    assert live_keys(str(tmp_path / "missing"), 30.0) == set()
    leases.release()
    assert live_keys(str(tmp_path), 30.0) == set()


def test_lease_seconds_from_the_environment(monkeypatch):
    monkeypatch.delenv("PYEXP_LEASE_SECONDS", raising=False)
    assert lease_seconds() == 60.0
    monkeypatch.setenv("PYEXP_LEASE_SECONDS", "2.5")
    assert lease_seconds() == 2.5
    monkeypatch.setenv("PYEXP_LEASE_SECONDS", "0")
    with pytest.raises(ValueError, match="PYEXP_LEASE_SECONDS"):
        lease_seconds()


def test_killed_holder_process_leaves_a_marker_that_is_not_live_after_duration(tmp_path):
    proc = hold_in_child(str(tmp_path), 0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert live_keys(str(tmp_path), 0.5) == {"k"}
    time.sleep(0.6)
    assert live_keys(str(tmp_path), 0.5) == set()
