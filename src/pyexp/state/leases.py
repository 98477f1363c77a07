"""Per-index leases: at most one runner works on an index at a time, across nodes.

A lease is a filelock `SoftFileLease` (pinned to 4.3.x, whose takeover rules are checked in
tests/test_leases.py) marker at `<state>/leases/<record_key>.lease`, created with O_EXCL on the
shared filesystem (not flock, which does not exclude across NFS/Lustre clients). filelock writes
its owner record into it (pid, host, start, token, lease duration); beside it we write our own
`<key>.lease.info` (JSON: token, job, host, pid, duration, start) atomically after acquiring, and
remove it before releasing. A holder's heartbeat thread touches the marker every D/3 (D = the
lease duration); release unlinks it.

Contracts, D = the duration written in the holder's marker:
- timeout: try_take never waits; it returns None while anyone holds the key (this contender
  included) and the caller retries.
- stale holder on this host (pid dead): taken over at the next try (about 5 ms).
- stale holder elsewhere (node failure): taken over once this contender has watched the marker
  unchanged for D on its own monotonic clock (no wall clocks compared). The taker uses the
  marker's D, not its own configured one: duration_for(key) says how long to keep retrying.
- empty or garbage marker (a holder killed between creating and writing it): taken over once its
  mtime is older than the taker's D (filelock itself also takes garbage after 2 s unchanged).
- compromise: the heartbeat reports the loss when the marker vanished, changed owner, or could
  not be renewed for 2/3 D (shorter failures, e.g. an EIO blip, are retried and recover). It then
  calls on_lost(key) from the heartbeat thread, at least D/3 before any contender can take the
  lease; the holder must stop that key's work. Lease.lost says the same to a poller, and reads
  the marker's claim token too (fencing before a completion is recorded).
- a live holder (heartbeat running) is never taken over; one whose heartbeat stops for longer
  than D (SIGSTOP, a hung filesystem) can be, and is told so by on_lost when it resumes.

held_keys()/live_keys() read the markers for status: a marker is live while its mtime (set by the
file server on NFS) is within its own D of this host's clock, unless its holder ran on this host
and is dead (pid gone, or reused: the start token differs), which the next try takes over at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from filelock import LeaseSettingsMismatch, SoftFileLease, Timeout

from pyexp.environment import lease_seconds
from pyexp.job_environment import JobEnvironment
from pyexp.state.atomic import scan_names, write_atomic

SUFFIX = ".lease"
INFO = ".info"
_MARKER_LIMIT = 4096


def slurm_job() -> str | None:
    """This process's Slurm job as `<array job>_<task>` or `<job>`, None outside Slurm."""
    return JobEnvironment.read().job


@dataclass
class Lease:
    """A held lease on one record key."""

    key: str
    path: str
    _lock: SoftFileLease

    @property
    def lost(self) -> bool:
        """Whether the lease is no longer ours: the heartbeat found the marker gone, taken, or
        not renewable, or the marker carries another claim now (read now: a holder resumed
        after a pause longer than the lease learns it before its heartbeat's next beat)."""
        return not still_holds(self._lock)

    def release(self) -> None:
        """Give the lease up (idempotent)."""
        if self._lock.is_locked:
            _remove_info(self.path, self._lock.token)
            self._lock.release(force=True)


@dataclass(frozen=True)
class Holder:
    """Who holds a lease marker, as far as its files say (None: not recorded or unreadable)."""

    key: str
    host: str | None
    pid: int | None
    job: str | None
    age: float  # seconds since the marker was last renewed
    duration: float | None  # the holder's lease duration
    live: bool  # renewed within its duration by a holder not known dead; False: may be taken


class IndexLeases:
    """The leases of one experiment's folder, as one contender sees them."""

    def __init__(
        self,
        folder: str,
        duration: float | None = None,
        job: str | None = None,
        *,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.folder = folder
        self.duration = lease_seconds() if duration is None else duration
        self.job = job
        self.on_lost = on_lost
        # One lock object per key, kept across tries: takeover of a foreign lease needs the same
        # object to have watched the marker unchanged for the whole duration.
        self._locks: dict[str, SoftFileLease] = {}
        self._made_folder = False

    def path(self, key: str) -> str:
        """The marker path of key."""
        return os.path.join(self.folder, key + SUFFIX)

    def duration_for(self, key: str) -> float:
        """The lease duration this contender uses for key (a foreign holder's, once seen)."""
        lock = self._locks.get(key)
        return self.duration if lock is None else lock.lease_duration

    def try_take(self, key: str) -> Lease | None:
        """Take key's lease if it is free or stale, without waiting; None if anyone holds it,
        this contender included (two indices with equal parameters share one key)."""
        if self._lock(key).is_locked:
            return None
        if not self._made_folder:
            os.makedirs(self.folder, exist_ok=True)
            self._made_folder = True
        try:
            lock = self._acquire(key)
        except OSError as e:  # filelock's marker write names no file
            raise OSError(e.errno, e.strerror, e.filename or self.path(key)) from None
        if lock is None:
            return None
        path = self.path(key)
        try:
            write_atomic(path + INFO, json.dumps(self._info(lock)))
        except OSError:
            lock.release(force=True)
            raise
        return Lease(key, path, lock)

    def forget(self, key: str) -> None:
        """Drop the watch state of key (after it is done), releasing it if held."""
        lock = self._locks.pop(key, None)
        if lock is not None and lock.is_locked:
            _remove_info(self.path(key), lock.token)
            lock.release(force=True)

    def release(self) -> None:
        """Release every lease this contender holds."""
        for key in list(self._locks):
            self.forget(key)

    def _acquire(self, key: str) -> SoftFileLease | None:
        for _ in range(2):  # a second try after adopting a foreign duration or breaking a marker
            lock = self._lock(key)
            try:
                lock.acquire(timeout=0)
                return lock
            except LeaseSettingsMismatch:
                if not self._adopt_duration(key):
                    return None
            except Timeout:
                if not _break_if_unreadable(self.path(key), self.duration):
                    return None
        return None

    def _adopt_duration(self, key: str) -> bool:
        duration = _marker_duration(_read_marker(self.path(key)))
        if duration is None or duration == self._locks[key].lease_duration:
            return False
        self._locks[key] = self._new_lock(key, duration)
        return True

    def _lock(self, key: str) -> SoftFileLease:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = self._new_lock(key, self.duration)
        return lock

    def _new_lock(self, key: str, duration: float) -> SoftFileLease:
        def lost(_compromise: object) -> None:
            if self.on_lost is not None:
                self.on_lost(key)

        return SoftFileLease(
            self.path(key), lease_duration=duration, thread_local=False, on_compromise=lost
        )

    def _info(self, lock: SoftFileLease) -> dict:
        return {
            "token": lock.token,
            "job": self.job,
            "host": socket.gethostname(),
            "host_id": _host_id(),
            "pid": os.getpid(),
            "pid_start": _pid_start(os.getpid()),
            "duration": lock.lease_duration,
            "start": time.time(),
        }


def still_holds(lock: SoftFileLease) -> bool:
    """Whether lock is held, no loss was seen, and its marker still carries its claim's token."""
    token = lock.token
    if not lock.is_locked or lock.compromise is not None or token is None:
        return False
    return (_read_marker(lock.lock_file) or {}).get("token") == token


def held_keys(
    folder: str, duration: float | None = None, now: float | None = None
) -> dict[str, Holder]:
    """Every lease marker in folder as {record key: Holder}; duration is assumed for markers
    that record none (empty, garbage), $PYEXP_LEASE_SECONDS by default."""
    fallback = lease_seconds() if duration is None else duration
    now = time.time() if now is None else now
    held: dict[str, Holder] = {}
    for name in scan_names(folder):
        if name.endswith(SUFFIX):
            path = os.path.join(folder, name)
            with contextlib.suppress(FileNotFoundError):  # released meanwhile
                held[name[: -len(SUFFIX)]] = _holder(path, fallback, now)
    return held


def holder_of(folder: str, key: str, duration: float | None = None) -> Holder | None:
    """Who holds key's lease marker in folder, None if there is none (see held_keys)."""
    fallback = lease_seconds() if duration is None else duration
    try:
        return _holder(os.path.join(folder, key + SUFFIX), fallback, time.time())
    except FileNotFoundError:
        return None


def live_keys(folder: str, duration: float | None = None, now: float | None = None) -> set[str]:
    """Record keys whose lease marker was renewed within its duration (may be running)."""
    return {k for k, h in held_keys(folder, duration, now).items() if h.live}


def read_holder(path: str) -> dict[str, str]:
    """The fields of a lease marker (pid, host, slurm_job, ...); {} if it is gone or unreadable."""
    fields = _read_marker(path) or {}
    info = _read_info(path, fields.get("token"))
    if fields and info.get("job"):
        fields["slurm_job"] = str(info["job"])
    return fields


def _holder(path: str, fallback: float, now: float) -> Holder:
    age = now - os.lstat(path).st_mtime
    fields = _read_marker(path) or {}
    info = _read_info(path, fields.get("token"))
    duration = _marker_duration(fields)
    pid = fields.get("pid", "")
    return Holder(
        key=os.path.basename(path)[: -len(SUFFIX)],
        host=fields.get("host"),
        pid=int(pid) if pid.isdigit() else None,
        job=info.get("job"),
        age=age,
        duration=duration,
        live=age < (duration or fallback) and not _dead_here(info),
    )


def _dead_here(info: dict) -> bool:
    """Whether our info says its holder ran on this host (and pid namespace) and that process is
    gone, or its pid now names another process (a different start time)."""
    pid = info.get("pid")
    if not isinstance(pid, int) or info.get("host_id") != _host_id() or not _pid_start(os.getpid()):
        return False  # elsewhere, or no /proc here to tell
    start = _pid_start(pid)
    return start is None or start != info.get("pid_start")


def _host_id() -> str:
    """This host and pid namespace: pids are comparable only between equal ids."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}/{namespace}"


def _pid_start(pid: int) -> str | None:
    """When process pid started (clock ticks since boot), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def _read_marker(path: str) -> dict[str, str] | None:
    """filelock's owner record as fields; None if empty, partial, garbage or gone."""
    try:
        with open(path, "rb") as f:
            return _parse_marker(f.read(_MARKER_LIMIT))
    except OSError:
        return None


def _parse_marker(data: bytes) -> dict[str, str] | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.splitlines()
    if not text.endswith("\n") or not lines or not lines[0].startswith("filelock/"):
        return None
    fields = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
    return fields if fields.get("pid") and fields.get("host") else None


def _marker_duration(fields: dict[str, str] | None) -> float | None:
    try:
        duration = float((fields or {}).get("duration", ""))
    except ValueError:
        return None
    return duration if 0 < duration < float("inf") else None


def _read_info(marker: str, token: str | None) -> dict:
    """Our info beside the marker, if it belongs to the marker's current claim."""
    try:
        with open(marker + INFO, "rb") as f:
            info = json.loads(f.read(_MARKER_LIMIT))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) and token and info.get("token") == token else {}


def _remove_info(marker: str, token: str | None) -> None:
    # Only our own: after a takeover the info file is the new holder's.
    if token and _read_info(marker, token):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker + INFO)


def _break_if_unreadable(path: str, duration: float) -> bool:
    """Remove path if it holds no owner record and is older than duration by mtime; whether it
    was removed. Only that inode is removed: a marker recreated meanwhile is put back."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if time.time() - st.st_mtime < duration or _parse_marker(os.read(fd, _MARKER_LIMIT)):
            return False
        aside = f"{path}.stale-{uuid.uuid4().hex}"
        try:
            os.rename(path, aside)
        except OSError:
            return False
        if not os.path.samestat(os.lstat(aside), st):  # replaced between our checks: undo
            with contextlib.suppress(OSError):
                os.link(aside, path)
            os.unlink(aside)
            return False
        os.unlink(aside)
        return True
    finally:
        os.close(fd)
