"""Per-index leases: exclusion, takeover of dead holders, liveness of markers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pyexp.environment import lease_seconds
from pyexp.state.leases import (
    CLOCK_SKEW,
    DONE,
    TOMBSTONE,
    IndexLeases,
    held_keys,
    is_tombstone,
    live_keys,
    read_holder,
    sweep_tombstones,
)

HOLD = textwrap.dedent(
    """
    import os, sys, time
    from pyexp.state.leases import IndexLeases
    lease = IndexLeases(sys.argv[1], float(sys.argv[2]), job="77_3").try_take("k")
    while len(sys.argv) > 3 and lease and not os.path.exists(lease.path + ".info"):
        time.sleep(0.01)  # until its first beat wrote the info
    print("held" if lease else "refused", flush=True)
    time.sleep(60)
    """
)


def hold_in_child(folder: str, duration: float, beaten: bool = False) -> subprocess.Popen:
    """A live process on this host holding lease 'k' (heartbeat running); beaten: once its
    first beat wrote the info."""
    argv = [sys.executable, "-c", HOLD, folder, str(duration), *(["beaten"] if beaten else [])]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
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


def first_beat(lease) -> None:
    """Wait until the holder's first beat (D/3 after the take) wrote its info."""
    start = time.monotonic()
    while not os.path.exists(lease.path + ".info") and time.monotonic() - start < 5.0:
        time.sleep(0.01)


def poll_take(leases: IndexLeases, key: str, limit: float, every: float = 0.05):
    """(lease, seconds) polling try_take until it succeeds or limit passes."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if (lease := leases.try_take(key)) is not None:
            return lease, time.monotonic() - start
        time.sleep(every)
    return None, limit


def test_one_holder_at_a_time_and_release(tmp_path):
    a, b = IndexLeases(str(tmp_path), 1.5, job="12_0"), IndexLeases(str(tmp_path), 1.5)
    lease = a.try_take("k")
    assert lease is not None
    assert b.try_take("k") is None
    first_beat(lease)
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
    lease, seconds = poll_take(leases, "k", 30.0)  # a loaded machine may be slow to take it
    assert lease is not None
    assert seconds >= 1.0  # never before the holder's lease ran out
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


def test_dead_foreign_holder_with_another_duration_is_taken_after_its_duration(tmp_path):
    foreign_marker(str(tmp_path), "k", 1.0)
    leases = IndexLeases(str(tmp_path), 5.0)
    lease, seconds = poll_take(leases, "k", 4.5)  # taken before our own 5 s would allow it
    assert lease is not None and seconds >= 1.0
    assert leases.duration_for("k") == 1.0
    leases.release()


def test_live_foreign_holder_with_a_longer_duration_is_not_taken(tmp_path):
    path = foreign_marker(str(tmp_path), "k", 0.9)
    leases = IndexLeases(str(tmp_path), 0.3)
    start = time.monotonic()
    while time.monotonic() - start < 1.5:
        os.utime(path)
        assert leases.try_take("k") is None
        time.sleep(0.2)


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


def test_killed_holder_on_this_host_is_not_live_at_once_as_the_next_try_takes_it(tmp_path):
    proc = hold_in_child(str(tmp_path), 30.0)
    assert live_keys(str(tmp_path), 30.0) == {"k"}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (holder,) = held_keys(str(tmp_path), 30.0).values()
    assert holder.age < 30.0 and holder.pid == proc.pid and not holder.live
    lease, seconds = poll_take(IndexLeases(str(tmp_path), 30.0), "k", 2.0)
    assert lease is not None and seconds < 0.5
    lease.release()


def test_a_holder_whose_pid_was_reused_is_not_live(tmp_path):
    proc = hold_in_child(str(tmp_path), 1.5, beaten=True)
    path = os.path.join(tmp_path, "k.lease")
    marker = Path(path).read_text()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # The same marker naming a live process (this one) that started at another time.
    start = next(line for line in marker.splitlines() if line.startswith("start="))
    with open(path, "w") as f:
        f.write(marker.replace(f"pid={proc.pid}", f"pid={os.getpid()}").replace(start, "start=1"))
    assert live_keys(str(tmp_path), 30.0) == set()


FLAKY_DISK = textwrap.dedent(
    """
    import errno, os, sys, time
    from pyexp.state.leases import IndexLeases
    folder, duration, fail_at, fail_for, hold = sys.argv[1], *map(float, sys.argv[2:])
    real_utime = os.utime

    def utime(*args, **kwargs):  # the heartbeat's renewal; EIO during [fail_at, fail_at+fail_for)
        if fail_at <= time.monotonic() - taken < fail_at + fail_for:
            raise OSError(errno.EIO, "Input/output error")
        return real_utime(*args, **kwargs)

    def lost(key):
        print(f"lost {key} {time.time()}", flush=True)

    leases = IndexLeases(folder, duration, on_lost=lost)
    lease = leases.try_take("k")
    taken = time.monotonic()
    os.utime = utime
    print("held", flush=True)
    time.sleep(hold)
    print(f"end lost={lease.lost}", flush=True)
    leases.release()  # as the runner does after stopping the lost index's command
    print("released", flush=True)
    """
)


def flaky_holder(folder: str, duration: float, fail_at: float, fail_for: float, hold: float):
    args = [folder, duration, fail_at, fail_for, hold]
    proc = subprocess.Popen(
        [sys.executable, "-c", FLAKY_DISK, *map(str, args)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_heartbeat_recovers_after_a_short_eio_on_renewal(tmp_path):
    proc = flaky_holder(str(tmp_path), 3.0, 0.5, 1.2, 3.5)
    contender = IndexLeases(str(tmp_path), 3.0)
    while proc.poll() is None:
        assert contender.try_take("k") is None
        time.sleep(0.2)
    out = proc.stdout.read().splitlines()
    assert out == ["end lost=False", "released"]


def test_lost_lease_is_reported_before_a_contender_can_take_it_on_lasting_eio(tmp_path):
    proc = flaky_holder(str(tmp_path), 1.5, 0.2, 60.0, 2.5)
    contender = IndexLeases(str(tmp_path), 1.5)
    lease, _ = poll_take(contender, "k", 4.0)
    taken_at = time.time()
    assert lease is not None
    lost = proc.stdout.readline().split()
    assert lost[:2] == ["lost", "k"] and float(lost[2]) < taken_at  # never two holders
    assert proc.stdout.read().splitlines() == ["end lost=True", "released"]
    proc.wait()
    assert not lease.lost and os.path.exists(lease.path)  # the loser's release left ours
    assert read_holder(lease.path)["pid"] == str(os.getpid())
    contender.release()


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, bytes.fromhex(sys.argv[2]))
    os.kill(os.getpid(), signal.SIGKILL)  # between creating the marker and finishing its record
    """
)


@pytest.mark.parametrize("body", [b"", b"\xff\xfe\x00junk", b"filelock/2\npid=12"])
def test_unreadable_marker_is_taken_over_once_stale_when_its_writer_was_killed(tmp_path, body):
    path = os.path.join(tmp_path, "k.lease")
    subprocess.run([sys.executable, "-c", KILLED_WRITER, path, body.hex()], check=False)
    assert os.path.exists(path)
    leases = IndexLeases(str(tmp_path), 1.0)
    if not body:  # fresh: its writer might still be about to write
        assert leases.try_take("k") is None
    lease, seconds = poll_take(leases, "k", 3.0)
    assert lease is not None and seconds < 2.5
    assert read_holder(lease.path)["pid"] == str(os.getpid())
    assert [n for n in os.listdir(tmp_path) if "stale" in n] == []
    leases.release()


def test_held_keys_name_the_holder_and_whether_it_is_stale(tmp_path):
    leases = IndexLeases(str(tmp_path), 1.5, job="5_2")
    first_beat(leases.try_take("mine"))
    foreign_marker(str(tmp_path), "old", 10.0)
    os.utime(os.path.join(tmp_path, "old.lease"), (time.time() - 20, time.time() - 20))
    (tmp_path / "empty.lease").write_text("")
    held = held_keys(str(tmp_path), 30.0)
    assert set(held) == {"mine", "old", "empty"}
    mine, old, empty = held["mine"], held["old"], held["empty"]
    assert (mine.pid, mine.job, mine.duration, mine.live) == (os.getpid(), "5_2", 1.5, True)
    assert (old.host, old.pid, old.duration, old.live) == ("node-elsewhere", 4242, 10.0, False)
    assert old.age >= 20
    assert (empty.pid, empty.duration, empty.live) == (None, None, True)
    assert live_keys(str(tmp_path), 30.0) == {"mine", "empty"}
    leases.release()
    assert not os.path.exists(os.path.join(tmp_path, "mine.lease.info"))


# ---------------------------------------------------------------- caching shared filesystems


def test_completed_key_leaves_a_tombstone_that_answers_done_and_is_never_taken(tmp_path):
    holder, other = IndexLeases(str(tmp_path), 0.5), IndexLeases(str(tmp_path), 0.5)
    assert holder.try_take("k") is not None
    holder.end("k", completed=True)
    path = os.path.join(tmp_path, "k.lease")
    assert is_tombstone(path) and not os.path.exists(path + ".info")
    start = time.monotonic()
    while time.monotonic() - start < 1.5:  # 3 durations: neither filelock nor we take it
        assert other.try_take("k") == DONE
        time.sleep(0.05)
    assert held_keys(str(tmp_path), 0.5) == {}  # a tombstone has no holder
    assert read_holder(path) == {}
    holder.release()  # its tombstone is older than RETAIN_LEASES durations: folded
    assert not os.path.exists(path)
    assert other.try_take("k") is not None
    other.release()


def test_tombstones_of_others_are_swept_by_the_time_they_carry(tmp_path):
    leases = IndexLeases(str(tmp_path), 30.0)
    assert leases.try_take("k") is not None
    leases.end("k", completed=True)
    path = os.path.join(tmp_path, "k.lease")
    old = time.time() - 2 * 30 - CLOCK_SKEW - 10
    os.utime(path, (old, old))  # an old mtime alone (a cached one) does not make it old
    assert sweep_tombstones(str(tmp_path)) == 0 and os.path.exists(path)
    with open(path, "wb") as f:
        f.write(TOMBSTONE + f"{old:.3f} node-elsewhere 30\n".encode())
    os.utime(path, (old, old))
    assert sweep_tombstones(str(tmp_path)) == 1 and os.listdir(tmp_path) == []


def test_tombstones_are_judged_by_the_lease_duration_written_in_them(tmp_path, monkeypatch):
    """A sweeper with a short PYEXP_LEASE_SECONDS keeps a long-lease writer's tombstone for the
    writer's 2 durations plus the skew, and one that carries no duration (older pyexp) a day."""
    monkeypatch.setenv("PYEXP_LEASE_SECONDS", "1")
    writer = IndexLeases(str(tmp_path), 600.0)
    for key in ("long", "short"):
        assert writer.try_take(key) is not None
        writer.end(key, completed=True)
    assert Path(tmp_path, "long.lease").read_bytes().endswith(b" 600\n")
    ago = time.time() - 2 * 60 - CLOCK_SKEW - 5  # due for a 60 s lease, not for a 600 s one
    stones = {"long": 600, "short": 60, "legacy": None, "legacy-old": None}
    for key, duration in stones.items():
        written = ago - 86400 if key == "legacy-old" else ago
        tail = f" {duration}" if duration else ""
        path = os.path.join(tmp_path, f"{key}.lease")
        with open(path, "wb") as f:
            f.write(TOMBSTONE + f"{written:.3f} node-elsewhere{tail}\n".encode())
        os.utime(path, (written, written))
    sweeper = IndexLeases(str(tmp_path), 1.0)  # a task's end sweeps the due ones of anyone
    assert sweeper.try_take("other") is not None
    sweeper.end("other", completed=False)
    sweeper.release()
    assert sorted(os.listdir(tmp_path)) == ["legacy.lease", "long.lease"]


def test_foreign_holder_whose_info_beats_is_not_taken_though_its_mtime_looks_old(tmp_path):
    # Through an attribute cache the marker's renewals may not show; its info's content does.
    path = foreign_marker(str(tmp_path), "k", 0.5)
    leases = IndexLeases(str(tmp_path), 0.5)
    start, beat = time.monotonic(), 0
    while time.monotonic() - start < 2.0:
        beat += 1
        with open(path + ".info", "w") as f:
            f.write(f'{{"token": "{"ab" * 16}", "beat": {beat}}}')
        os.utime(path, (1e9, 1e9))
        assert leases.try_take("k") is None
        time.sleep(0.1)
    lease, seconds = poll_take(leases, "k", 2.0)  # the beats stop: taken a duration after the
    assert lease is not None and 0.35 <= seconds < 1.5  # last one seen (0.1 s before the poll)
    leases.release()


def test_holder_rewrites_its_info_every_third_of_the_lease(tmp_path):
    leases = IndexLeases(str(tmp_path), 0.6)
    lease = leases.try_take("k")
    first_beat(lease)
    seen = set()
    for _ in range(10):
        with open(lease.path + ".info") as f:
            seen.add(f.read())
        time.sleep(0.1)
    assert len(seen) >= 3
    leases.release()


def test_holder_whose_info_cannot_be_rewritten_loses_the_lease_before_a_taker(
    tmp_path, monkeypatch
):
    from pyexp.state import leases as module

    lost = []
    leases = IndexLeases(str(tmp_path), 1.5, on_lost=lost.append)
    lease = leases.try_take("k")

    def full(path, data, sync=True):  # a full filesystem: no room for the info's temp file
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(module, "write_atomic", full)
    start = time.monotonic()
    while not lost and time.monotonic() - start < 3.0:
        time.sleep(0.02)
    assert lost == ["k"] and lease.lost
    assert time.monotonic() - start < 1.45  # at 2/3 D: before a contender's watch of D ends
    monkeypatch.undo()
    leases.release()


# ---------------------------------------------------------------- round trips per index


def test_a_lease_shorter_than_a_third_of_its_duration_writes_no_info_file(tmp_path, monkeypatch):
    from pyexp.state import leases as module

    written = []
    real = module.write_atomic
    monkeypatch.setattr(
        module, "write_atomic", lambda p, *a, **k: (written.append(p), real(p, *a, **k))
    )
    leases = IndexLeases(str(tmp_path), 30.0)
    for key in ("a", "b"):
        assert leases.try_take(key) is not None
    leases.end("a", completed=False)
    leases.end("b", completed=True)
    assert [os.path.basename(p) for p in written] == ["b.lease"]  # the tombstone only
    assert sorted(os.listdir(tmp_path)) == ["b.lease"]
    leases.release()


def test_lost_reads_no_marker_within_half_the_lease_and_fences_after(tmp_path, monkeypatch):
    from pyexp.state import leases as module

    reads = []
    real = module.still_holds
    monkeypatch.setattr(module, "still_holds", lambda lock: (reads.append(1), real(lock))[1])
    lease = IndexLeases(str(tmp_path), 1.0).try_take("k")
    assert not lease.lost and reads == []  # nobody can have watched it unchanged for D yet
    time.sleep(0.55)
    assert not lease.lost and len(reads) == 1
    marker = Path(lease.path).read_text()  # a taker's claim now sits in the marker
    token = next(x for x in marker.splitlines() if x.startswith("token="))
    Path(lease.path).write_text(marker.replace(token, "token=" + "cd" * 16))
    assert lease.lost
    lease.release()
