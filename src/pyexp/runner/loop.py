"""The Runner: per index, lease, run the user's command, record, release.

Per index: skip it if complete; take its lease without waiting (held elsewhere: retry it after
the rest); run the command in its own process group, its stdout and stderr copied by the runner,
capped at config.json's max_log_bytes (head and tail kept), into the runner's slot log
(state/task_logs.py: one file per parallel slot, a line per attempt in the task's .idx); on exit
0 write the completion record, then leave a
completion tombstone in its lease marker (state/leases.py); otherwise record a failed attempt,
then release. An index whose log cannot be written fails alone; the others go on. Once a record,
attempt or tombstone cannot be written (full or failing state filesystem), the running indices
finish but no new index starts, and the runner says why in one line. A lease lost while its
command runs (the heartbeat found the marker gone or taken) kills that command's process group
and records a `lease_lost` attempt, never a completion. SIGUSR1 (Slurm's pre-timeout signal)
and SIGTERM/SIGINT (preemption, scancel) stop it: children get SIGTERM, then SIGKILL after the
grace period, their attempts are recorded as timeout/preempted (continuing, or stalled, when the
command saved a checkpoint during the attempt: state/checkpoints.py), leases released, no new
index starts. An index that exited 0 is recorded right after the next index started (its log
closed first, so the slot's log stays in order); a failure is recorded before anything new starts,
so the broken-command guard counts it first. Each command gets its index's checkpoint folder
(PYEXP_CHECKPOINT_DIR), created on first use (state/checkpoints.py; before the command starts only
for work with an earlier attempt on record, and an index whose folder cannot be created then fails
alone) and removed once the index is done (done indices' folders when the run ends, in one
listing).

Per index on the state folder (scripts/bench_runner.py counts them): the lease's exclusive create
(with filelock's folder check and lookup), the tombstone (temp file and rename) and one append +
fsync to the runner's completion journal; no completion check (a view read at most D/2 ago),
no info file, fencing read or checkpoint folder for an index shorter than D/3 (state/leases.py,
state/records.py, state/checkpoints.py).

Waits that remain, each on purpose: the loop sleeps only in one poll() on the signal pipe and the
commands' output pipes (copied by the loop itself, no thread per command) until a child exits
(SIGCHLD), a stop signal or a lost lease wakes it, output arrives, or a deferred lease's next
retry is due (D/6); a command killed by a stop signal waits up to STOP_SIGNAL_WAIT for the
runner's own copy of it (_stopped_with); the journal's fsync waits for the disk (a completion
must survive a crash); filelock's release joins its heartbeat thread, which its stop event ends
at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

from pyexp.command import CommandTemplate
from pyexp.environment import grace_seconds, lease_seconds
from pyexp.errors import PyExpError, describe
from pyexp.experiment import ExperimentDescription
from pyexp.job_environment import JobEnvironment
from pyexp.runner.capped import CappedCopy, start_copy
from pyexp.runner.command import command_environ
from pyexp.runner.guard import FailFast, failed_before, report_broken
from pyexp.runner.item import InOrder, Item, Source
from pyexp.runner.outcome import DONE, record_outcome
from pyexp.runner.processes import (
    STOP_SIGNALS,
    SignalWatch,
    Spawner,
    oom_kills,
    signal_group,
    write_all,
)
from pyexp.runner.save import STAGING, Staging, store_staged
from pyexp.state import checkpoints
from pyexp.state.atomic import write_atomic
from pyexp.state.attempts import (
    CONTINUING,
    FAILED,
    LEASE_LOST,
    OOM,
    PREEMPTED,
    STALLED,
    TIMEOUT,
    Attempts,
)
from pyexp.state.layout import log_dir, state_dirs
from pyexp.state.leases import IndexLeases, Lease
from pyexp.state.records import CompletionRecords
from pyexp.state.store import ShardWriter
from pyexp.state.task_logs import TaskLog
from pyexp.timefmt import amount

# Below Slurm's default KillWait (30 s), so a stop ends before Slurm SIGKILLs the runner.
STOP_SIGNAL_WAIT = 1.0  # seconds a command's death by a stop signal waits for the runner's own
# Exit statuses of a command killed by a stop signal (Popen's -N, or a shell's 128+N).
_STOP_EXITS = frozenset(code for s in STOP_SIGNALS for code in (-s, 128 + s))


@dataclass
class _Running:
    """A started command (or one that could not start)."""

    item: Item
    lease: Lease
    proc: subprocess.Popen | None  # None: the program could not be started
    log: int | None  # descriptor of the slot's log file, appended to; None: it cannot be
    log_path: str
    started: float
    checkpoint: tuple = ()  # the checkpoint folder's stamp when the command started
    slot: int = 0
    offset: int = 0  # where the attempt's header starts in log_path
    copy: CappedCopy | None = None
    duration: float | None = None  # set once the attempt's log is closed


class Runner:
    """Runs indices of one experiment under leases; stops cleanly on SIGUSR1/SIGTERM/SIGINT."""

    def __init__(
        self,
        exp: ExperimentDescription,
        command: CommandTemplate,
        *,
        experiment_path: str | None = None,
        snapshot_path: str | None = None,
        parallel: int = 1,
        lease_duration: float | None = None,
        grace: float | None = None,
        job: JobEnvironment | None = None,
        out: TextIO | None = None,
        guard: FailFast | None = None,
    ) -> None:
        self.exp = exp
        self.guard = guard
        self.command = command
        self.experiment_path = experiment_path or exp.path or ""
        self.snapshot_path = snapshot_path
        self.parallel = max(1, parallel)
        if grace is None:
            grace = grace_seconds()
        self.grace = grace
        self.out = out or sys.stderr
        job = job or JobEnvironment.read()
        self.host, self.job, self.attempt = socket.gethostname(), job.job, job.attempt
        dirs = state_dirs(exp)
        self.started_marker = os.path.join(dirs.started, self.attempt) if self.attempt else None
        tag = (self.attempt or f"{self.host}-{os.getpid()}").replace("/", "_")
        self.records = CompletionRecords(dirs.done, journal=tag)
        self.attempts = Attempts(dirs.attempts)
        self.checkpoints = dirs.checkpoints
        self.keep_checkpoints = exp.config.keep_checkpoints
        self.broken_path = dirs.broken
        self.store = ShardWriter(dirs.store)
        self._stagings: dict[str, Staging] = {}  # per running key: its pyexp.save() calls
        self._stage_dir: str | None = None  # node-local, made on first use
        if lease_duration is None:
            lease_duration = lease_seconds()
        self.leases = IndexLeases(dirs.leases, lease_duration, job=self.job, on_lost=self._on_lost)
        self.log_dir = log_dir(exp)
        self.task_log = TaskLog(self.log_dir, tag)
        self.max_log_bytes = exp.config.max_log_bytes
        self.tally: Counter[str] = Counter()
        self.running: dict[int, _Running] = {}
        self.unrecordable: str | None = None  # why state cannot be written: start nothing new
        self._lost: deque[str] = deque()  # keys whose lease the heartbeat found lost
        self._retries: set[str] = set()  # keys that had failed before this run (the guard's)
        self._completed: dict[str, float] = {}  # keys this runner recorded complete: durations
        self._attempted: set[str] = set()  # keys with an attempt on record when the run began
        self._watch: SignalWatch | None = None
        self._lingering: list[CappedCopy] = []  # output of ended commands still held open
        self._ended: list[tuple[_Running, int]] = []  # exited 0, recorded once the next started
        self._spawner = Spawner()
        self._environ = command_environ(os.environ, job.python_on_path)
        self._oom_seen = oom_kills()

    def run(self, indices: Iterable[int]) -> int:
        """Run every index not yet complete; returns the exit status (128+signal when stopped)."""
        return self.run_from(InOrder(deque(Item.of(self.exp, i) for i in indices)))

    def run_from(self, source: Source) -> int:
        """Run the indices source gives; returns the exit status (128+signal when stopped)."""
        if self.started_marker:  # tells reconcile this array task got as far as pyexp-run
            write_atomic(self.started_marker, f"{self.host} {os.getpid()} {_now()}\n")
        done = self.records.completed(compact=False)
        self.leases.array = source.array  # a farm worker's failures are marked in their leases
        names = self.attempts.names()  # one listing
        self._attempted = {key for key, _, _ in names}
        self._retries = failed_before(names) if self.guard else set()
        with contextlib.suppress(OSError):  # if it cannot be made, each index says so
            os.makedirs(self.log_dir, exist_ok=True)
        with SignalWatch() as self._watch:
            # Read now, with the watch on: a signal that came before is noted in the environment.
            early = JobEnvironment.read().early_signum
            if early is not None and self._watch.signum is None:
                self.say("Slurm's stop signal came before pyexp-run was up: starting no index")
                self._watch.signum = early
            try:
                self._loop(source, done)
            finally:
                self._abandon()
                for copy in self._lingering:
                    copy.close()
                self.store.seal()
                self.task_log.close()
                self.records.fold(self._completed)  # this task's records, one segment
                if not self.keep_checkpoints:  # their folders, one listing
                    checkpoints.sweep_done(self.checkpoints, self._completed)
                if self._stage_dir is not None:
                    shutil.rmtree(self._stage_dir, ignore_errors=True)
        return self._summary(source)

    def _on_lost(self, key: str) -> None:
        # Called from a heartbeat thread: hand the key over and wake the loop.
        self._lost.append(key)
        if self._watch is not None:
            self._watch.wake()

    def _loop(self, source: Source, done: set[str]) -> None:
        deferred: list[Item] = []
        window_end = next_poll = poll = 0.0
        while True:
            # Signal first: a child reaped after a stop signal may have exited 0 because of it.
            if self._watch.signum is not None:
                self._stop(self._watch.signum)
                return
            self._kill_lost()
            self._ended = self._reap(defer=True)
            try:
                while self._free() and self._watch.signum is None and not self._halted():
                    if (item := source.pop(len(self.running))) is None:
                        break
                    self._first_try(item, done, source, deferred)
            finally:  # recorded while the next indices run: no state write between two indices
                ended, self._ended = self._ended, []
                for r, rc in ended:
                    self._finish(r, rc)
            now = time.monotonic()
            queue = source.more()
            if self._halted():  # start nothing more; deferred indices are left to their holders
                queue = False
                self._drop(deferred)
            if not queue and deferred and self._free():
                if not window_end:
                    # A holder's own duration rules its takeover (one it wrote in its marker).
                    longest = max(self.leases.duration_for(i.key) for i in deferred)
                    # Slow enough for a shared filesystem; fine enough that a dead foreign lease
                    # is taken within duration * 7/6 of the first try, inside the window.
                    window_end, poll = now + 1.5 * longest, longest / 6
                if now >= window_end:
                    self._give_up(deferred)
                elif now >= next_poll:
                    self._retry(deferred)
                    next_poll = now + poll
            if not (queue or deferred or self.running):
                return
            waiting_on_leases = not queue and deferred and self._free()
            self._wait(max(0.0, next_poll - now) if waiting_on_leases else None)

    def _wait(self, timeout: float | None) -> None:
        """Sleep until a signal, a child's end, a wake() or a command's output comes (or timeout
        seconds pass), then copy the output that came to its log."""
        copies = [r.copy for r in self.running.values() if r.copy is not None]
        copies += self._lingering
        self._watch.wait(timeout, [c.source for c in copies if not c.ended])
        for copy in copies:
            copy.pump()
        self._lingering = [c for c in self._lingering if not c.ended]

    def _free(self) -> bool:
        return len(self.running) < self.parallel

    def _halted(self) -> bool:
        """Whether no new index may start: the broken-command guard tripped, or state cannot
        be written."""
        return (self.guard is not None and self.guard.tripped) or self.unrecordable is not None

    def _first_try(self, item: Item, done: set[str], source: Source, deferred: list[Item]) -> None:
        if item.key in done:
            self.tally["skipped"] += 1
            return
        lease = self._take(item)
        if lease == DONE:
            self.tally["skipped"] += 1
            return
        if lease is None:
            source.held(item)
            if source.defers:
                deferred.append(item)
            return
        source.taken(item)
        if source.wanted(item):
            self._launch(item, lease)
        else:
            self.leases.forget(item.key)
            self.tally["skipped"] += 1

    def _take(self, item: Item) -> Lease | str | None:
        """try_take, where a marker that cannot be written stops new work (None: not taken);
        before any index started, the run fails as a whole (one line, naming the file)."""
        try:
            return self.leases.try_take(item.key)
        except OSError as e:
            if not (self.running or self.tally or self._ended):
                raise
            self._cannot_record(e)
            return None

    def _retry(self, deferred: list[Item]) -> None:
        for item in list(deferred):
            if not self._free():
                return
            lease = None
            if (
                self.records.known_complete(item.key, self.leases.duration / 2)
                or (lease := self._take(item)) == DONE
            ):
                deferred.remove(item)
                self.leases.forget(item.key)
                self.tally["skipped"] += 1
            elif lease is not None:
                deferred.remove(item)
                self._launch(item, lease)

    def _give_up(self, deferred: list[Item]) -> None:
        for item in deferred:
            self.say(f"index {item.index}: still leased by a live runner elsewhere; left to it")
        self._drop(deferred)

    def _drop(self, deferred: list[Item]) -> None:
        for item in deferred:
            self.leases.forget(item.key)
        self.tally["elsewhere"] += len(deferred)
        deferred.clear()

    def _slot(self) -> int:
        busy = {r.slot for r in self.running.values()}
        return next(s for s in range(len(busy) + 1) if s not in busy)

    def _launch(self, item: Item, lease: Lease) -> None:
        slot, log_path = self._slot(), self.task_log.folder
        started = time.monotonic()
        # Checked under the lease: another runner may have finished it since our first listing
        # (a view read at most D/2 ago suffices: CompletionRecords.known_complete).
        try:
            complete = self.records.known_complete(item.key, self.leases.duration / 2)
        except OSError as e:  # cannot tell: running it might run it twice
            unstarted = _Running(item, lease, None, None, log_path, started)
            self._finish(unstarted, None, error=f"not started, its record cannot be checked: {e}")
            return
        if complete:
            self.leases.forget(item.key)
            self.tally["skipped"] += 1
            return
        log, offset = None, 0
        try:
            log, log_path, offset = self.task_log.open_slot(slot)
            write_all(log, self._header(item))
            self.task_log.note(item.key, item.index, log_path, offset)
        except OSError as e:
            unstarted = _Running(item, lease, None, log, log_path, started, (), slot, offset)
            self._finish(unstarted, None, error=f"not started, its log cannot be written: {e}")
            return
        try:
            before = self._prepare(item.key)
        except OSError as e:  # quota, read-only: this index fails, the others go on
            unstarted = _Running(item, lease, None, log, log_path, started, (), slot, offset)
            self._finish(unstarted, None, error=f"its checkpoint folder {describe(e)}")
            return
        argv = self.command.argv(self.snapshot_path or self.experiment_path, item.index, item.run)
        env = self._env(item, log)
        try:
            pipe, copy = start_copy(log, self.max_log_bytes)
        except OSError as e:
            unstarted = _Running(item, lease, None, log, log_path, started, (), slot, offset)
            self._finish(unstarted, None, error=f"not started, no pipe for its output: {e}")
            return
        try:
            proc = self._spawner.start(argv, pipe, env)
        except OSError as e:
            os.close(pipe)
            copy.close()
            with contextlib.suppress(OSError):
                write_all(log, f"pyexp-run: cannot start {argv[0]!r}: {e.strerror}\n")
            self._finish(_Running(item, lease, None, log, log_path, started, (), slot, offset), 127)
            return
        os.close(pipe)  # the command holds it: the copy ends when the command's output closes
        running = _Running(item, lease, proc, log, log_path, started, before, slot, offset, copy)
        self.running[proc.pid] = running

    def _prepare(self, key: str) -> tuple:
        """The stamp of key's checkpoint folder, prepared only if an earlier attempt is on
        record (else the command creates it on first use: no call per index)."""
        if key not in self._attempted:
            return ()
        return checkpoints.prepare(checkpoints.folder_of(self.checkpoints, key))

    def _header(self, item: Item) -> str:
        return (
            f"=== {_now()} pyexp-run index={item.index} run={item.run} key={item.key} "
            f"host={self.host} job={self.job or 'local'} pid={os.getpid()} "
            f"python={sys.executable}\n"
        )

    def _env(self, item: Item, log: int) -> dict[str, str]:
        env = dict(self._environ)
        env.update(
            PYEXP_INDEX=str(item.index),
            PYEXP_RUN=str(item.run),
            PYEXP_EXPERIMENT=self.experiment_path,
            PYEXP_CHECKPOINT_DIR=checkpoints.folder_of(self.checkpoints, item.key),
        )
        if self.snapshot_path:
            env["PYEXP_SNAPSHOT"] = self.snapshot_path
        env.pop(STAGING, None)  # never a parent's: unset, pyexp.save() in the command says so
        with contextlib.suppress(OSError):
            env[STAGING] = self._staging(item).path
        try:
            env["PYEXP_SAVE_PATH"] = self.exp.interpolateSavePath(item.index)
        except PyExpError as e:
            env.pop("PYEXP_SAVE_PATH", None)
            with contextlib.suppress(OSError):
                write_all(log, f"pyexp-run: PYEXP_SAVE_PATH not set: {e}\n")
        return env

    def _staging(self, item: Item) -> Staging:
        if self._stage_dir is None:
            self._stage_dir = tempfile.mkdtemp(prefix="pyexp-staging-")
        path = os.path.join(self._stage_dir, f"{item.index}-{os.getpid()}")
        staging = self._stagings[item.key] = Staging(path)
        return staging

    def _kill_lost(self) -> None:
        if self._watch.resumed:  # paused past a lease, the heartbeat may not have beaten yet
            self._watch.resumed = False
            self._lost.extend(r.item.key for r in self.running.values() if r.lease.lost)
        while self._lost:
            key = self._lost.popleft()
            for r in self.running.values():
                if r.item.key == key:  # another runner may hold it now: stop at once
                    signal_group(r.proc, signal.SIGKILL)

    def _reap(self, outcome: str | None = None, defer: bool = False) -> list[tuple[_Running, int]]:
        """Finish the commands that ended. With defer, when all of them exited 0 and no stop
        came, only end their logs (freeing their slots) and return them, to be recorded by the
        caller once the next indices started; failures are recorded at once (the guard counts
        them before anything new starts)."""
        ended = [
            (pid, r, rc) for pid, r in self.running.items() if (rc := r.proc.poll()) is not None
        ]
        later = defer and self._watch.signum is None and all(rc == 0 for _, _, rc in ended)
        for pid, r, rc in ended:
            del self.running[pid]
            if later:
                self._end_log(r, rc)
            else:
                self._finish(r, rc, outcome or self._stopped_with(rc))
        return [(r, rc) for _, r, rc in ended] if later else []

    def _end_log(self, r: _Running, rc: int | None) -> None:
        """Copy the rest of r's output and close its attempt in the log (once); its duration."""
        if r.duration is not None:
            return
        if r.copy is not None and not r.copy.finish():
            self._lingering.append(r.copy)  # a daemon holds its output: copied as it comes
        r.duration = time.monotonic() - r.started
        if r.log is not None:
            with contextlib.suppress(OSError):
                write_all(r.log, f"=== {_now()} exit {rc} after {r.duration:.1f}s\n")

    def _stopped_with(self, rc: int) -> str | None:
        """The stop outcome when a command died of a stop signal that the runner gets too.

        scancel, preemption and the time limit signal every process of the job at once: the
        command may die before the runner's own signal is handled. Wait a moment for it, so the
        index is recorded as stopped, not as the user's failure."""
        if rc not in _STOP_EXITS:
            return None
        deadline = time.monotonic() + STOP_SIGNAL_WAIT
        while self._watch.signum is None and (left := deadline - time.monotonic()) > 0:
            self._wait(left)
        signum = self._watch.signum
        if signum is None:
            return None
        self.tally["stopped_by"] = signum
        return TIMEOUT if signum == signal.SIGUSR1 else PREEMPTED

    def _finish(
        self, r: _Running, rc: int | None, outcome: str | None = None, error: str | None = None
    ) -> None:
        self._end_log(r, rc)
        duration = r.duration
        info = {
            "index": r.item.index,
            "host": self.host,
            "job": self.job,
            "duration": round(duration, 3),
            "log": r.log_path,
            "log_offset": r.offset,
        }
        if r.lease.lost:  # someone else may be running it: its exit status proves nothing
            outcome = LEASE_LOST
        elif error is not None:
            outcome = FAILED
        elif rc == 0 and outcome is None:
            outcome = DONE
        else:
            outcome = outcome or (OOM if self._oom(rc) else FAILED)
        failure = {"exit_code": rc, **({"error": error} if error else {})}
        folder = checkpoints.folder_of(self.checkpoints, r.item.key)
        if outcome in (TIMEOUT, PREEMPTED) and r.proc is not None:
            last = self.attempts.latest({r.item.key}).get(r.item.key)
            outcome, saved = checkpoints.stop_outcome(
                folder, r.checkpoint, outcome, last and last.info
            )
            info.update(saved)
        staging = self._stagings.pop(r.item.key, None)
        store = (lambda: store_staged(self.store, staging, r.item)) if staging else None
        # quota, stale NFS handle: said, and the other indices keep going
        state = self.records, self.attempts, self.leases
        outcome, why = record_outcome(
            *state,
            *(r.item, outcome, info, self.attempt),
            failure,
            checkpoint=None if self.keep_checkpoints else self._checkpoint(r.item.key, outcome),
            store=store,
            cannot_write=self._cannot_record,
        )
        if staging is not None:
            staging.discard()
        if outcome == DONE:
            self._completed[r.item.key] = round(duration, 3)
        if why:
            error = f"{error}; {why}" if error else why
        self.tally[outcome] += 1
        why = f"; {error}" if error else ""
        self.say(
            f"index {r.item.index}: {outcome} (exit {rc}, {duration:.1f}s{why}) log: {r.log_path}"
        )
        retry = r.item.key in self._retries
        if self.guard is not None and self.guard.saw(
            outcome, duration, r.log_path, retry, r.offset
        ):
            report_broken(self.guard, self.broken_path, self.job, self.say)

    def _checkpoint(self, key: str, outcome: str) -> str | None:
        """The folder record_outcome tidies: none for a done index whose folder was not
        prepared (sweep_done removes it when the run ends, if the command made one)."""
        if outcome == DONE and key not in self._attempted:
            return None
        return checkpoints.folder_of(self.checkpoints, key)

    def _cannot_record(self, error: OSError) -> None:
        """State cannot be written: finish what runs, start no new index (said once)."""
        if self.unrecordable is None:
            self.unrecordable = str(error)
            self.say(f"cannot write state ({describe(error)}); starting no new index")

    def _oom(self, rc: int) -> bool:
        if rc not in (-signal.SIGKILL, 128 + signal.SIGKILL):
            return False
        seen, self._oom_seen = self._oom_seen, oom_kills()
        return seen is not None and self._oom_seen is not None and self._oom_seen > seen

    def _stop(self, signum: int) -> None:
        outcome = TIMEOUT if signum == signal.SIGUSR1 else PREEMPTED
        name = signal.Signals(signum).name
        running = amount(len(self.running), "running index", "running indices")
        self.say(f"{name}: stopping {running}, starting no more")
        self.tally["stopped_by"] = signum
        for r in self.running.values():
            signal_group(r.proc, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while True:
            # Reap before waiting: an exit's SIGCHLD wake-up may have been consumed already.
            self._reap(outcome)
            left = deadline - time.monotonic()
            if not self.running or left <= 0:
                break
            self._wait(left)
        for pid, r in list(self.running.items()):
            signal_group(r.proc, signal.SIGKILL)
            del self.running[pid]
            self._finish(r, r.proc.wait(), outcome)

    def _abandon(self) -> None:
        # Only reached with children left when something raised: kill them, record nothing.
        for r in self.running.values():
            signal_group(r.proc, signal.SIGKILL)
            r.proc.wait()
            if r.copy is not None:
                r.copy.close()
        self.running.clear()
        self.leases.release()

    def _summary(self, source: Source) -> int:
        t = self.tally
        self.say(
            f"{t['done']} done, {t['skipped']} already complete, {t[FAILED] + t[OOM]} failed, "
            f"{t[TIMEOUT] + t[PREEMPTED]} stopped, {t['elsewhere']} left to other runners"
            + (f", {t[CONTINUING]} continuing" if t[CONTINUING] else "")
            + (f", {t[STALLED]} stalled" if t[STALLED] else "")
            + (f", {t[LEASE_LOST]} lease lost" if t[LEASE_LOST] else "")
            + (f", {t['unrecorded']} not recorded" if t["unrecorded"] else "")
            + source.summary()
            + ("; stopped early, the state folder refused a write" if self.unrecordable else "")
        )
        if t["stopped_by"]:
            return 128 + t["stopped_by"]
        failed = t[FAILED] or t[OOM] or t[LEASE_LOST] or t["unrecorded"] or self.unrecordable
        return 1 if failed else 0

    def say(self, message: str) -> None:
        """One line of the runner's report."""
        print(f"pyexp-run: {message}", file=self.out, flush=True)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
