"""Lease heartbeats on reused threads.

filelock's SoftFileLease refreshes each hold on a thread of its own, started when the lease is
taken (Thread.start waits until that thread runs) and joined when it is released: a runner takes
and releases a lease per index, so each index waited twice for another thread to be scheduled,
milliseconds each on a busy node, between one index and the next. ReusedBeatLease runs filelock's
own refresh loop (same interval, same loss reports) on a thread of a per-process pool that
outlives the hold: a take hands the loop to an idle thread (a thread is started only when none is
idle), a release asks the loop to stop and waits only for a refresh under way, so nothing touches
the marker's descriptor after the lease is let go. The pool's threads are daemons, as filelock's
are, and a forked child starts with an empty pool. Relies on filelock 4.3's private refresh loop
(pinned in pyproject.toml).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from weakref import WeakMethod

from filelock import SoftFileLease
from filelock._soft._lease import LeaseClaim, _RefreshLoop


@dataclass(frozen=True, slots=True, kw_only=True)
class _GuardedLoop(_RefreshLoop):
    """filelock's refresh loop, each refresh under busy and skipped once stop is set."""

    busy: threading.RLock

    def _refresh(self) -> tuple[str, OSError | None]:
        with self.busy:
            if self.stop.is_set():  # released meanwhile: its descriptor may be closed
                return "ok", None
            return _RefreshLoop._refresh(self)


@dataclass(frozen=True)
class _Beat:
    """A hold's refresh loop as its lease sees it: how to stop it, and its refresh lock."""

    stop: threading.Event
    busy: threading.RLock


class _Pool:
    """Daemon threads that run queued loops, reused once a loop returns."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def run(self, job: Callable[[], None]) -> None:
        """Run job on an idle thread, else on a new one."""
        with self._lock:
            grow = self._idle == 0
            if not grow:
                self._idle -= 1  # that idle thread takes this job
        self._jobs.put(job)
        if grow:
            threading.Thread(target=self._work, daemon=True, name="pyexp-lease-beat").start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            finally:
                with self._lock:
                    self._idle += 1


_pool = _Pool()


def _new_pool() -> None:
    global _pool
    _pool = _Pool()


os.register_at_fork(after_in_child=_new_pool)


class ReusedBeatLease(SoftFileLease):
    """A SoftFileLease whose refresh loop runs on a reused thread; see the module docstring."""

    def _start_heartbeat(
        self, claim: LeaseClaim, fd: int, identity: tuple[int, int], token: str
    ) -> None:
        beat = _Beat(threading.Event(), threading.RLock())
        loop = _GuardedLoop(
            report=WeakMethod(self._report_compromise, lambda _: setattr(claim, "token", None)),
            lock_file=self._lock_path,
            claim=claim,
            fd=fd,
            identity=identity,
            token=token,
            stop=beat.stop,
            interval=self._heartbeat_interval,
            duration=self._lease_duration,
            busy=beat.busy,
        )
        claim.heartbeat = beat
        _pool.run(loop.run)

    def _stop_heartbeat(self) -> None:
        claim = self._claim
        beat, claim.heartbeat = claim.heartbeat, None
        if beat is not None:
            beat.stop.set()
            with beat.busy:  # a refresh under way ends first
                pass
