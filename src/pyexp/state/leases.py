"""Per-index leases: at most one runner works on an index at a time, across nodes.

A lease is a filelock 4.x `SoftFileLease` marker at `<state>/leases/<record_key>.lease`, created
with O_EXCL on the shared filesystem (not flock, which does not exclude across NFS/Lustre
clients). The marker holds filelock's owner record (`pid=`, `host=`, `start=`, `token=`,
`duration=`) and one line of ours, `slurm_job=<array job>_<task>` (or the plain job id). A holder's
heartbeat thread touches the marker (utime on its descriptor, so st_mtime advances) every
lease_duration/3; release unlinks it.

Takeover, measured with filelock 4.3.1 (tests/test_leases.py), D = lease duration:
- holder on this host whose pid is dead (kill -9): taken over at the next try (about 5 ms);
- holder on another host (node failure): taken over once one contender has watched the marker
  unchanged for D on its own monotonic clock (D=1: 1.02 s, D=3: 3.01 s). Watching is per
  IndexLeases object and key, so only a contender that keeps retrying takes it: the runner
  retries every D/6 for 1.5 D, so it takes a dead foreign lease within 7/6 D of its first try.
  A dead holder's marker stops being live for live_keys() D after its last renewal, so the
  scheduler resubmits the index then, and the new runner takes it within 7/6 D of starting;
- a live holder (heartbeat running) is never taken over. A holder whose heartbeat stops for
  longer than D (SIGSTOP, a suspended job, a hung filesystem) can be overtaken while it still
  runs: D must exceed such pauses.

Every contender of a path must use the same D: 60 s, or $PYEXP_LEASE_SECONDS (a contender with
another D never takes the lease over). Liveness for status is the marker's st_mtime, written by
the file server on NFS: live_keys() compares it with this host's clock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from filelock import LeaseSettingsMismatch, SoftFileLease, Timeout

from pyexp.errors import ConfigError
from pyexp.job_environment import JobEnvironment
from pyexp.state.atomic import scan_names

DEFAULT_LEASE_SECONDS = 60.0
SUFFIX = ".lease"
_JOB_FIELD = "slurm_job"


def lease_seconds() -> float:
    """The lease duration: $PYEXP_LEASE_SECONDS, else 60 s."""
    value = os.environ.get("PYEXP_LEASE_SECONDS")
    if not value:
        return DEFAULT_LEASE_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ConfigError(f"PYEXP_LEASE_SECONDS={value!r}: must be a positive number of seconds")
    return seconds


def slurm_attempt() -> str | None:
    """This array task's try as `<array job>_<task>[-<requeue count>]`, None outside an array."""
    return JobEnvironment.read().attempt


def slurm_job() -> str | None:
    """This process's Slurm job as `<array job>_<task>` or `<job>`, None outside Slurm."""
    return JobEnvironment.read().job


class _JobLease(SoftFileLease):
    """A SoftFileLease whose marker also names the Slurm job holding it."""

    job: str | None = None

    # filelock 4.x writes the marker body (first claim and takeover alike) through this hook.
    def _write_lock_info(self, fd: int) -> None:
        super()._write_lock_info(fd)
        if self.job:
            data = f"{_JOB_FIELD}={self.job}\n".encode()
            while data:
                data = data[os.write(fd, data) :]


@dataclass
class Lease:
    """A held lease on one record key."""

    key: str
    path: str
    _lock: SoftFileLease

    @property
    def lost(self) -> bool:
        """Whether the heartbeat found the marker gone or taken by someone else."""
        return self._lock.compromise is not None

    def release(self) -> None:
        """Give the lease up (idempotent)."""
        if self._lock.is_locked:
            self._lock.release(force=True)


class IndexLeases:
    """The leases of one experiment's folder, as one contender sees them."""

    def __init__(
        self,
        folder: str,
        duration: float | None = None,
        job: str | None = None,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.folder = folder
        self.on_lost = on_lost  # called with the key, from the heartbeat thread, on loss
        self.duration = lease_seconds() if duration is None else duration
        self.job = job
        # One lock object per key, kept across tries: takeover of a foreign lease needs the same
        # object to have watched the marker unchanged for the whole duration.
        self._locks: dict[str, _JobLease] = {}
        self._made_folder = False

    def path(self, key: str) -> str:
        """The marker path of key."""
        return os.path.join(self.folder, key + SUFFIX)

    def try_take(self, key: str) -> Lease | None:
        """Take key's lease if it is free or stale, without waiting; None if anyone holds it,
        this contender included (two indices with equal parameters share one key)."""
        lock = self._lock(key)
        if lock.is_locked:
            return None
        if not self._made_folder:
            os.makedirs(self.folder, exist_ok=True)
            self._made_folder = True
        try:
            lock.acquire(timeout=0)
        except (Timeout, LeaseSettingsMismatch):
            return None
        return Lease(key, lock.lock_file, lock)

    def forget(self, key: str) -> None:
        """Drop the watch state of key (after it is done), releasing it if held."""
        lock = self._locks.pop(key, None)
        if lock is not None and lock.is_locked:
            lock.release(force=True)

    def release(self) -> None:
        """Release every lease this contender holds."""
        for key in list(self._locks):
            self.forget(key)

    def _lock(self, key: str) -> _JobLease:
        lock = self._locks.get(key)
        if lock is None:
            lock = _JobLease(
                self.path(key),
                lease_duration=self.duration,
                thread_local=False,
                on_compromise=self._reporter(key),
            )
            lock.job = self.job
            self._locks[key] = lock
        return lock

    def _reporter(self, key: str) -> Callable[[object], None] | None:
        on_lost = self.on_lost
        return None if on_lost is None else lambda _compromise: on_lost(key)


def live_keys(folder: str, duration: float | None = None, now: float | None = None) -> set[str]:
    """Record keys whose lease marker was renewed within the lease duration (may be running)."""
    duration = lease_seconds() if duration is None else duration
    now = time.time() if now is None else now
    live = set()
    for name in scan_names(folder):
        if not name.endswith(SUFFIX):
            continue
        try:
            mtime = os.lstat(os.path.join(folder, name)).st_mtime
        except FileNotFoundError:  # released meanwhile
            continue
        if now - mtime < duration:
            live.add(name[: -len(SUFFIX)])
    return live


def read_holder(path: str) -> dict[str, str]:
    """The fields of a lease marker (pid, host, slurm_job, ...); {} if it is gone or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    return dict(line.split("=", 1) for line in lines[1:] if "=" in line)
