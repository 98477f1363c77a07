"""Per-index leases: at most one runner works on an index at a time, and none after it completed,
across nodes whose caches disagree.

What pyexp assumes of the shared filesystem (NFS; Lustre is stricter): close-to-open consistency
(content read after open() is the server's) and atomic exclusive create and rename on the server.
What it does not assume: coherent attribute, name or missing-name caches (a node may see an old
mtime, a file that is gone, or miss one that exists for as long as its cache lasts), and fcntl or
flock locks across nodes. Every decision below rests on create, rename or a read after open:

- take: a filelock `SoftFileLease` marker `<state>/leases/<record_key>.lease`, created with O_EXCL
  (filelock writes its owner record: pid, host, start, token, duration); beside it our own
  `<key>.lease.info` (JSON: token, job, host, pid, duration, start, beat), written atomically by
  a beat thread every D/3 (D = the lease duration), the first time at the lease's first beat,
  not at the take: an index shorter than D/3 never creates or removes one. filelock's heartbeat
  renews the marker's mtime every D/3 too. A fresh SoftFileLease object is used for each try,
  so filelock itself frees only a dead holder on this host (pid gone: at once); it never judges
  a marker by its age, which through a cache could look old while the holder lives.
- complete: end(key, completed=True) replaces the marker (rename) by a tombstone, `pyexp-done
  <time> <host> <D>`, and releases; the completion record is written right after it (undo() takes
  the tombstone back if the record cannot be written). A contender whose cache still hides the
  record cannot create the marker (the server refuses), reads the tombstone and gets DONE.
  Tombstones outlive the caches: they are removed RETAIN_LEASES (2) of their writer's D after
  they were written (by the writer at its release, or by anyone's sweep by the time and D they
  carry, allowing CLOCK_SKEW), so client caches must be shorter than D, and every runner of an
  experiment uses the same D (as filelock requires of peers). No one ever takes a tombstone over.
  Because the tombstone comes first, a completion record without one is at least 2 D old:
  whoever takes a key by exclusive create needs no fresh look for its record, only a view of
  the records read within D/2 (records.CompletionRecords.known_complete), which a record over
  1.5 D old reaches through any cache. A writer that dies between the tombstone and the record
  leaves the index missing once the tombstone is removed, never done twice.
- fail (a farm worker's array, IndexLeases.array; its attempt recorded first): end(key,
  completed=False, failed=True) replaces the marker (rename, still holding it) by a failure mark,
  `pyexp-failed <time> <host> <D> <array>...`, swept like a tombstone. A contender of a named
  array whose exclusive create is refused reads it and gets DONE (its array tried the key); any
  other takes it over at once (rename aside, check it is the one read, exclusive create: a mark
  has no live holder, so no watch), and whatever way it ends, unless completed, it leaves the
  mark back with its own array added if it failed: a key an array failed answers that array
  DONE until 2 D after its last failure, after which its attempt record is old enough for any
  cached listing (runner/pool.py). Costs nothing unless an index fails.
- take over (holder elsewhere, or a marker left empty or garbage): once this contender has seen
  the marker's content, its info's content (or its absence) and its mtime (each read after open)
  unchanged for the marker's D on its own monotonic clock; a live holder writes its info within
  D/3 of its take and changes it every D/3 after, which no attribute cache hides. The marker is
  then renamed aside (one contender wins), checked to be the one watched (else put back), and
  the key taken by exclusive create with the holder's D (duration_for(key) says how long to keep
  retrying). A tombstone is never watched: it answers DONE.

Contracts:
- timeout: try_take never waits; it returns None while anyone holds the key (this contender
  included), DONE for a tombstone, and the caller retries None.
- compromise: the heartbeat reports the loss when the marker vanished, changed owner, or could
  not be renewed for 2/3 D (shorter failures, e.g. an EIO blip, are retried and recover); so
  does the beat thread when the info could not be written at two beats in a row. It then calls
  on_lost(key) from the heartbeat thread, at least D/3 before any contender can take the lease;
  the holder must stop that key's work. Lease.lost says the same to a poller, and from
  FENCE_AFTER (D/2) after the take reads the marker's claim token too (fencing before a
  completion is recorded): before that no contender can have watched our marker, created at
  the take, unchanged for D, so the read is skipped (a holder paused past D/2 reads it).
- a live holder (heartbeat and beat running) is never taken over; one whose beats stop for longer
  than D (SIGSTOP, a hung filesystem) can be, and is told so by on_lost when it resumes.
- errors: a marker or tombstone that cannot be written raises OSError naming the file (the
  runner then starts no new index), an info that cannot be written stalls the lease (above);
  sshfs's EPERM for an exclusive create its negative cache hid is a refusal while the folder is
  writable.

held_keys()/live_keys() read the markers for status (tombstones and failure marks are not holders):
a marker is live while its mtime is within its own D of this host's clock, unless its holder ran on
this host and is dead (pid gone, or reused: the start token differs; before its first beat, the
marker's host and pid say so), which the next try takes over at once. A holder's job is known from
its first beat on. They are estimates for people; runners never decide from them.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from filelock import LeaseSettingsMismatch, SoftFileLease, Timeout

from pyexp.environment import lease_seconds
from pyexp.job_environment import JobEnvironment
from pyexp.state.atomic import entry_mtime, scan_names, write_atomic

SUFFIX = ".lease"
INFO = ".info"
_MARKER_LIMIT = 4096
TOMBSTONE = b"pyexp-done "  # a completed key's marker content, kept RETAIN_LEASES durations
FAILURE = b"pyexp-failed "  # a failed key's marker content naming the arrays that failed it
NO_ARRAY = "-"  # a failure mark's name for the array "" (farm workers outside a Slurm array)
RETAIN_LEASES = 2.0  # tombstones outlive every client cache the design assumes (<= 1 duration)
CLOCK_SKEW = 60.0  # seconds by which nodes' wall clocks may differ (tombstones carry their time)
LEGACY_RETAIN = 86400.0  # a tombstone that carries no lease duration (older pyexp) is kept a day
FENCE_AFTER = 0.5  # of D after the take: before it no one can have taken the lease over
DONE: Final = "done"  # try_take's answer for a key whose marker says it was completed


def slurm_job() -> str | None:
    """This process's Slurm job as `<array job>_<task>` or `<job>`, None outside Slurm."""
    return JobEnvironment.read().job


@dataclass
class Lease:
    """A held lease on one record key."""

    key: str
    path: str
    _lock: SoftFileLease
    _info: dict = field(default_factory=dict)  # what the beat thread writes, with its count
    _taken: float = field(default_factory=time.monotonic)  # when the marker was created
    _beaten: float = field(default_factory=time.monotonic)  # its last successful rewrite
    _stalled: bool = False  # the info could not be rewritten for 2/3 D: contenders may take it
    _written: bool = False  # the info file exists (written at the first beat, not at the take)

    @property
    def lost(self) -> bool:
        """Whether the lease is no longer ours: the heartbeat found the marker gone, taken, or
        not renewable, the beats stalled, or the marker carries another claim now (read now: a
        holder resumed after a pause longer than the lease learns it before its next beat).
        Within FENCE_AFTER of the take the marker is not read: no contender can have watched
        it unchanged for D yet."""
        if self._stalled or self._lock.compromise is not None or not self._lock.is_locked:
            return True
        if time.monotonic() - self._taken < FENCE_AFTER * self._lock.lease_duration:
            return False
        return not still_holds(self._lock)

    def release(self) -> None:
        """Give the lease up (idempotent)."""
        if self._lock.is_locked:
            if self._written:
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
        array: str | None = None,
    ) -> None:
        self.folder = folder
        self.duration = lease_seconds() if duration is None else duration
        self.job = job
        self.on_lost = on_lost
        self.array = array  # a farm worker's array: its failures are marked, and not retried
        self._failed_by: dict[str, list[str]] = {}  # held key -> arrays of the mark taken over
        self._locks: dict[str, SoftFileLease] = {}  # the leases this contender holds
        self._held: dict[str, Lease] = {}  # and their info, rewritten by the beat thread
        # What each foreign marker looked like (content, info, mtime) since when, with its
        # holder's duration: taken over once unchanged for that duration on our own clock.
        self._watch: dict[str, tuple[tuple, float, float]] = {}
        self._tombstones: dict[str, tuple[bytes, float]] = {}  # key -> (tombstone, written)
        self._made_folder = False
        self._guard = threading.Lock()  # the beat thread and the holder's release
        self._beat: threading.Event | None = None

    def path(self, key: str) -> str:
        """The marker path of key."""
        return os.path.join(self.folder, key + SUFFIX)

    def duration_for(self, key: str) -> float:
        """The lease duration this contender uses for key (a foreign holder's, once seen)."""
        lock = self._locks.get(key)
        if lock is not None:
            return lock.lease_duration
        watch = self._watch.get(key)
        return self.duration if watch is None else watch[2]

    def try_take(self, key: str) -> Lease | Literal["done"] | None:
        """Take key's lease if it is free or stale (or a failure mark not naming this contender's
        array), without waiting; DONE if its marker is a completion tombstone or a failure mark
        naming this contender's array (not to be tried by it); None if anyone holds it, this
        contender included (two indices with equal parameters share one key)."""
        lock = self._locks.get(key)
        if lock is not None and lock.is_locked:
            return None
        if not self._made_folder:
            os.makedirs(self.folder, exist_ok=True)
            self._made_folder = True
        path = self.path(key)
        lock = self._acquire(key, self.duration)
        if lock is None:
            seen = self._observe(key)
            if seen != "stale":
                return seen
            watch = self._watch.pop(key, None)
            lock = self._acquire(key, self.duration if watch is None else watch[2])
            if lock is None:
                self._failed_by.pop(key, None)
                return None
        self._watch.pop(key, None)
        # The info is written at the lease's first beat (within D/3), not here: an index shorter
        # than that never creates or removes one.
        lease = Lease(key, path, lock, self._info(lock))
        self._locks[key], self._held[key] = lock, lease
        self._start_beat()
        return lease

    def end(self, key: str, completed: bool, failed: bool = False) -> None:
        """Release key's lease; if completed, leave a tombstone in its marker first (atomically,
        in place of our lease), before its completion record is written: a contender whose
        cache still hides the record learns it from the marker it must open anyway, and every
        record younger than the tombstone's retention has one. If failed (its attempt already
        recorded) by a farm worker's array, or the lease was taken over from a failure mark,
        leave a failure mark naming those arrays instead. Raises OSError (the lease released)
        if the tombstone or mark cannot be written."""
        lock = self._locks.get(key)
        arrays = self._failed_by.pop(key, [])
        if failed and self.array is not None and self.array not in arrays:
            arrays.append(self.array)
        if not completed and arrays and lock is not None and still_holds(lock):
            self._mark(key, FAILURE, arrays)
            return
        if not completed or lock is None or not lock.is_locked:
            self.forget(key)
            return
        self._mark(key, TOMBSTONE, [])

    def _mark(self, key: str, kind: bytes, arrays: list[str]) -> None:
        """Replace key's marker by a mark of kind naming arrays (atomically); release the lease."""
        # A tombstone: checked against a loss by the caller just before (Lease.lost); the record
        # follows at once (undo() if it cannot be written). Not synced: after a server crash the
        # synced record is the fact, and a tombstone lost with it leaves the index missing, not
        # done (a failure mark lost so leaves the attempt record, which the view reaches).
        self._failed_by.pop(key, None)
        tags = [a or NO_ARRAY for a in arrays]
        fields = [f"{time.time():.3f}", socket.gethostname(), f"{self.duration:g}", *tags]
        body = kind + " ".join(fields).encode() + b"\n"
        try:
            write_atomic(self.path(key), body, sync=False)
            self._tombstones[key] = (body, time.monotonic())
        finally:
            self.forget(key)

    def undo(self, key: str) -> None:
        """Remove the tombstone end(key, completed=True) left, if it is still ours (its
        completion record could not be written: the index is missing, not done)."""
        body, _ = self._tombstones.pop(key, (None, 0.0))
        if body is not None:
            _move_aside(self.path(key), body)

    def forget(self, key: str) -> None:
        """Drop the watch state of key (after it is done), releasing it if held; a lease taken
        over from a failure mark leaves that mark back (best effort)."""
        self._watch.pop(key, None)
        arrays, lock = self._failed_by.pop(key, None), self._locks.get(key)
        if arrays and lock is not None and still_holds(lock):
            with contextlib.suppress(OSError):  # released all the same (_mark's finally)
                self._mark(key, FAILURE, arrays)
            return
        with self._guard:
            lock = self._locks.pop(key, None)
            lease = self._held.pop(key, None)
            if lock is not None and lock.is_locked:
                if lease is None or lease._written:
                    _remove_info(self.path(key), lock.token)
                lock.release(force=True)

    def release(self) -> None:
        """Release every lease this contender holds, and remove the tombstones that have
        outlived RETAIN_LEASES durations (ours by our clock, others' by the time they carry)."""
        for key in list(self._locks):
            self.forget(key)
        if self._beat is not None:
            self._beat.set()
            self._beat = None
        retain = RETAIN_LEASES * self.duration
        now = time.monotonic()
        for key, (body, written) in list(self._tombstones.items()):
            if now - written >= retain:
                _move_aside(self.path(key), body)
                del self._tombstones[key]
        if self._made_folder:
            with contextlib.suppress(OSError):
                sweep_tombstones(self.folder)

    def _acquire(self, key: str, duration: float) -> SoftFileLease | None:
        # A fresh lock object each try: filelock itself then frees only a dead holder on this
        # host (at once), never a marker by its age as seen through a cache (our _observe does).
        lock = self._new_lock(key, duration)
        try:
            lock.acquire(timeout=0)
        except (Timeout, LeaseSettingsMismatch):
            return None
        except PermissionError:
            # sshfs answers an exclusive create of an existing file (that its negative cache
            # hid) with EPERM: refused, while the folder is writable at all.
            if os.access(self.folder, os.W_OK):
                return None
            raise
        except OSError as e:  # filelock's marker write names no file
            raise OSError(e.errno, e.strerror, e.filename or self.path(key)) from None
        return lock

    def _observe(self, key: str) -> str | None:
        """After a refused take: DONE (a tombstone), "stale" (the marker, its info and its
        mtime were unchanged for its holder's duration on our clock, and we moved it aside),
        or None (held, or gone meanwhile: try again later)."""
        path = self.path(key)
        seen = _look(path)
        if seen is None:
            self._watch.pop(key, None)
            return None
        if seen[0].startswith(TOMBSTONE):
            self._watch.pop(key, None)
            return DONE
        if seen[0].startswith(FAILURE):  # no live holder: taken over at once, unless ours
            self._watch.pop(key, None)
            arrays = failed_arrays(seen[0])
            if self.array in arrays:
                return DONE
            if not _move_aside(path, seen[0]):
                return None
            self._failed_by[key] = arrays
            return "stale"
        now = time.monotonic()
        first = self._watch.get(key)
        if first is None or first[0] != seen:
            duration = _marker_duration(_parse_marker(seen[0])) or self.duration
            self._watch[key] = (seen, now, duration)
            return None
        if now - first[1] < first[2] or not _move_aside(path, seen[0]):
            return None
        return "stale"

    def _start_beat(self) -> None:
        if self._beat is None:
            self._beat = threading.Event()
            beat = threading.Thread(target=self._beats, args=(self._beat,), daemon=True)
            beat.start()

    def _beats(self, stop: threading.Event) -> None:
        """Rewrite each held lease's info every D/3: a change of content a contender reads
        after open (close-to-open), where a renewed mtime may hide behind its attribute cache.
        Info that cannot be rewritten at two beats in a row (2/3 D) loses the lease (on_lost),
        D/3 before a contender that watches it unchanged for D may take it."""
        count = 0
        while not stop.wait(min([self.duration, *self._durations()]) / 3):
            count += 1
            for lease in list(self._held.values()):
                if self._beat_once(lease, count):
                    lease._beaten = time.monotonic()
                elif not lease._stalled and (
                    time.monotonic() - lease._beaten > lease._lock.lease_duration / 2
                ):  # seen at the second failed beat, 2/3 D after the last good one
                    lease._stalled = True
                    if self.on_lost is not None:
                        self.on_lost(lease.key)

    def _beat_once(self, lease: Lease, count: int) -> bool:
        """Rewrite lease's info with beat count; False if it could not be written."""
        with self._guard:
            if self._held.get(lease.key) is not lease or not lease._lock.is_locked:
                return True
            lease._info["beat"] = count
            try:
                write_atomic(lease.path + INFO, json.dumps(lease._info), sync=False)
            except OSError:
                return False
            lease._written = True
            return True

    def _durations(self) -> list[float]:
        return [lock.lease_duration for lock in list(self._locks.values())]

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
            "beat": 0,
            "job": self.job,
            "host": socket.gethostname(),
            "host_id": own_identity()[0],
            "pid": os.getpid(),
            "pid_start": own_identity()[1],
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
                if (holder := _holder(path, fallback, now)) is not None:
                    held[name[: -len(SUFFIX)]] = holder
    return held


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


def _holder(path: str, fallback: float, now: float) -> Holder | None:
    """The holder of the marker at path; None for a tombstone or failure mark (no holder)."""
    age = now - os.lstat(path).st_mtime
    data = _read_bytes(path)
    if data is not None and data.startswith((TOMBSTONE, FAILURE)):
        return None
    fields = _parse_marker(data or b"") or {}
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
        live=age < (duration or fallback) and not dead_here(info, fields),
    )


def dead_here(info: dict, fields: dict[str, str]) -> bool:
    """Whether our info says its holder ran on this host (and pid namespace) and that process is
    gone, or its pid now names another process (a different start time); before the holder's
    first beat wrote its info, whether filelock's marker names this host and a pid that is gone."""
    if not own_identity()[1]:
        return False  # no /proc here to tell
    pid = info.get("pid")
    if not info:
        here = fields.get("host") == socket.gethostname() and fields.get("pid", "").isdigit()
        return here and pid_start(int(fields["pid"])) is None
    if not isinstance(pid, int) or info.get("host_id") != own_identity()[0]:
        return False  # elsewhere
    start = pid_start(pid)
    return start is None or start != info.get("pid_start")


_own: tuple[int, str, str | None] | None = None  # (pid, host_id, pid_start) of this process


def own_identity() -> tuple[str, str | None]:
    """This process's host_id() and pid_start(), read once per process (forks read again)."""
    global _own
    pid = os.getpid()
    if _own is None or _own[0] != pid:
        _own = (pid, host_id(), pid_start(pid))
    return _own[1], _own[2]


def host_id() -> str:
    """This host and pid namespace: pids are comparable only between equal ids."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}/{namespace}"


def pid_start(pid: int) -> str | None:
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
    data = _read_bytes(path)
    return None if data is None else _parse_marker(data)


def _read_bytes(path: str) -> bytes | None:
    """The start of the file at path, read after opening it; None if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(_MARKER_LIMIT)
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


def _look(path: str) -> tuple | None:
    """(marker content, info content, marker mtime) read after opening each (what a contender
    watches; None: no marker). The contents come from the file server (close-to-open); the
    mtime may be a cached one, so it only ever delays a takeover."""
    try:
        with open(path, "rb") as f:
            marker, mtime = f.read(_MARKER_LIMIT), os.fstat(f.fileno()).st_mtime
    except OSError:
        return None
    return marker, _read_bytes(path + INFO), mtime


def _move_aside(path: str, marker: bytes) -> bool:
    """Remove the stale marker at path (one rename, which the file server arbitrates); whether
    it was the one watched. Another contender's fresh marker moved by mistake is put back."""
    aside = f"{path}.stale-{uuid.uuid4().hex}"
    try:
        os.rename(path, aside)
    except OSError:
        return False
    try:
        if _read_bytes(aside) != marker:
            with contextlib.suppress(OSError):
                os.link(aside, path)
            return False
        _remove_info(path, (_parse_marker(marker) or {}).get("token"))
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(aside)


def is_tombstone(path: str) -> bool:
    """Whether the marker at path is a completion tombstone (read after open)."""
    return _tombstone_time(_read_bytes(path)) is not None


def _tombstone_time(body: bytes | None) -> float | None:
    """When a marker's content body was written as a tombstone (its writer's clock); None if it
    is not one."""
    if body is None or not body.startswith(TOMBSTONE):
        return None
    try:
        return float(body[len(TOMBSTONE) :].split()[0])
    except (ValueError, IndexError):
        return 0.0  # damaged: as old as can be


def failed_arrays(body: bytes) -> list[str]:
    """The arrays a failure mark's content names ([] if it is not one)."""
    if not body.startswith(FAILURE):
        return []
    tags = [a.decode("utf-8", "replace") for a in body[len(FAILURE) :].split()[3:]]
    return ["" if a == NO_ARRAY else a for a in tags]


def _tombstone_due(body: bytes | None) -> float | None:
    """When a tombstone or failure mark may go (writer's clock): RETAIN_LEASES of the duration
    it carries plus CLOCK_SKEW after its time; without a duration (older pyexp) LEGACY_RETAIN;
    None: not one."""
    if body is not None and body.startswith(FAILURE):  # read as a tombstone: same fields
        body = TOMBSTONE + body[len(FAILURE) :]
    written = _tombstone_time(body)
    if written is None or body is None:
        return None
    try:
        return written + RETAIN_LEASES * float(body[len(TOMBSTONE) :].split()[2]) + CLOCK_SKEW
    except (ValueError, IndexError):
        return written + LEGACY_RETAIN


def sweep_tombstones(folder: str) -> int:
    """Remove the tombstones and failure marks in folder that are due, each by the time and lease
    duration it carries (read after open; the listing's mtime only preselects); how many."""
    now = time.time()
    with os.scandir(folder) as it:
        old = [e.path for e in it if e.name.endswith(SUFFIX) and entry_mtime(e) < now - CLOCK_SKEW]
    removed = 0
    for path in old:
        with contextlib.suppress(OSError):
            body = _read_bytes(path)
            due = _tombstone_due(body)
            if due is not None and due < now:
                removed += _move_aside(path, body)
    return removed
