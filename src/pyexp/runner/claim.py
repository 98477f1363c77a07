"""pyexp.claim(): a farm worker inside the user's own script, for indices too short for a
process each (the script's imports are paid once per worker, not once per index).

    for job in pyexp.claim():
        with job:
            train(job.index, job.params)

Each job is claimed the way pyexp-run's pool worker claims (same order, leases, time budget);
leaving `with job` normally records it done; an exception records it failed (traceback in the
index's log), is suppressed, and the loop goes on. Without `with`, a job is done when the loop
asks for the next one. SIGTERM/SIGINT abandon the current index (recorded preempted); SIGUSR1
lets it run for half the grace period, then abandons it (recorded timeout); either way no new
index starts. A job whose lease was lost while it ran is recorded lease_lost, never done.
A job's checkpoint folder is `job.checkpoint_dir` (and pyexp.checkpoint_dir() inside `with job`):
a stop after the job saved there is recorded continuing (state/checkpoints.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator

from pyexp.config import load_config
from pyexp.environment import CHECKPOINT_DIR, config_file, grace_seconds
from pyexp.errors import RunnerError, describe
from pyexp.experiment import ExperimentDescription, loadExperiment
from pyexp.indexset import IndexSet
from pyexp.job_environment import JobEnvironment
from pyexp.runner.guard import FailFast, failed_before, report_broken
from pyexp.runner.item import Item
from pyexp.runner.outcome import DONE, record_outcome
from pyexp.runner.pool import PoolClaims, TimeBudget
from pyexp.runner.processes import write_all
from pyexp.runner.save import Staging, begin, store_staged
from pyexp.runner.task import load_task, pool_tag, worker_job
from pyexp.runner.worker_script import CLAIM_MARK, WORKER_START
from pyexp.state import checkpoints
from pyexp.state.attempts import CONTINUING, FAILED, LEASE_LOST, PREEMPTED, TIMEOUT, Attempts
from pyexp.state.layout import log_dir, state_dirs
from pyexp.state.leases import IndexLeases, Lease
from pyexp.state.ledger import local_job_id
from pyexp.state.records import CompletionRecords
from pyexp.state.store import ShardWriter
from pyexp.state.task_logs import TaskLog


class Stopped(BaseException):
    """A stop signal ended the current index (a BaseException: `except Exception` lets it by)."""


class Job:
    """One claimed index: use as `with job:` around its work."""

    def __init__(self, worker: ClaimWorker, item: Item, lease: Lease) -> None:
        self.index, self.params, self.run, self.key = item.index, item.params, item.run, item.key
        self.exp = worker.exp
        self._checkpoint_dir = checkpoints.folder_of(worker.checkpoints, item.key)
        self.entered = False
        self._worker, self._item, self.lease = worker, item, lease
        self.staging = Staging()  # its pyexp.save() calls, stored when it is done
        self._started = time.monotonic()
        self._saved: tuple = ()  # its checkpoint folder's stamp once prepared
        self._log, self._offset = "", 0  # where its attempt starts in the worker's task log

    @property
    def checkpoint_dir(self) -> str:
        """The job's checkpoint folder, created on first use (not per index)."""
        os.makedirs(self._checkpoint_dir, exist_ok=True)
        return self._checkpoint_dir

    def __enter__(self) -> Job:
        self.entered = True
        self._worker.begin(self)
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> bool:
        return self._worker.end(self, exc)


class ClaimWorker:
    """The iterable pyexp.claim() returns; iterate it once."""

    def __init__(
        self,
        exp: ExperimentDescription,
        claims: PoolClaims,
        job: JobEnvironment,
        guard: FailFast | None = None,
    ) -> None:
        dirs = state_dirs(exp)
        self.exp, self.claims, self.job, self.guard = exp, claims, job, guard
        self.broken_path = dirs.broken
        # A worker may start several of these: each process its own log and journal.
        tag = f"{job.attempt or socket.gethostname()}-{os.getpid()}".replace("/", "_")
        self.records = CompletionRecords(dirs.done, journal=tag)
        self.attempts = Attempts(dirs.attempts)
        self.checkpoints = dirs.checkpoints
        self.store = ShardWriter(dirs.store)
        self.leases = IndexLeases(dirs.leases, job=job.job, array=claims.array)
        self.log_dir = log_dir(exp)
        self.task_log = TaskLog(self.log_dir, tag)
        self.grace = grace_seconds()
        self.tally: Counter[str] = Counter()
        self.signum: int | None = None
        self.unrecordable: str | None = None  # why state cannot be written: claim nothing more
        self._body = False  # a job's work runs: a stop signal raises Stopped in it
        self._retries: set[str] = set()  # keys that had failed before (the guard's)
        self._completed: dict[str, float] = {}  # keys this worker recorded complete: durations
        self._attempted: set[str] = set()  # keys with an attempt on record when it began
        self._old: dict[int, object] = {}

    def __iter__(self) -> Iterator[Job]:
        with contextlib.suppress(OSError):  # if it cannot be made, each index says so
            os.makedirs(self.log_dir, exist_ok=True)
        self._install()
        names = self.attempts.names()  # one listing
        self._attempted = {key for key, _, _ in names}
        self._retries = failed_before(names) if self.guard else set()
        try:
            while self.signum is None and not self._broken() and (job := self._next()) is not None:
                begin(job.staging)
                yield job
                if not job.entered:  # the loop came back: the body did not raise
                    self.end(job, None)
        finally:
            begin(None)
            self._restore()
            self.leases.release()
            self.store.seal()
            self.task_log.close()
            self.records.fold(self._completed)  # this worker's records, one segment
            if not self.exp.config.keep_checkpoints:  # their folders, one listing
                checkpoints.sweep_done(self.checkpoints, self._completed)
            self.say(self._summary())

    def _next(self) -> Job | None:
        while self.unrecordable is None and (item := self.claims.pop(0)) is not None:
            if self.signum is not None:
                break
            try:
                lease = self.leases.try_take(item.key)
            except OSError as e:  # its marker cannot be written: nor can its outcome
                self._cannot_record(e)
                return None
            if lease == DONE:
                self.tally["skipped"] += 1
                continue
            if lease is None:
                self.claims.held(item)
                continue
            self.claims.taken(item)
            if not self.claims.wanted(item) or self.records.known_complete(
                item.key, self.leases.duration / 2
            ):
                self.leases.forget(item.key)
                self.tally["skipped"] += 1
                continue
            job = Job(self, item, lease)
            try:
                if item.key in self._attempted:  # an earlier attempt may have saved there
                    job._saved = checkpoints.prepare(job._checkpoint_dir)
            except OSError as e:  # quota, read-only: this index fails, the others go on
                self._fail_unstarted(job, f"its checkpoint folder {describe(e)}")
                continue
            return job
        return None

    def _fail_unstarted(self, job: Job, error: str) -> None:
        info = {"index": job.index, "host": socket.gethostname(), "job": self.job.job}
        self._header(job, f"not started, {error}")
        info.update(duration=0.0, log=job._log, log_offset=job._offset, error=error)
        record_outcome(
            self.records, self.attempts, self.leases, job, FAILED, info, self.job.attempt
        )
        self.tally[FAILED] += 1
        self.say(f"index {job.index}: failed, not started: {error}")

    def begin(self, job: Job) -> None:
        """Write the index's log header and let stop signals interrupt its work."""
        self._header(job)
        job._started = time.monotonic()
        os.environ[CHECKPOINT_DIR] = job._checkpoint_dir  # for pyexp.checkpoint_dir()
        self._body = True

    def end(self, job: Job, exc: BaseException | None) -> bool:
        """Record the job's outcome and release its lease; whether to suppress exc."""
        self._body = False
        begin(None)
        signal.setitimer(signal.ITIMER_REAL, 0)
        os.environ.pop(CHECKPOINT_DIR, None)
        duration = time.monotonic() - job._started
        info = {
            "index": job.index,
            "host": socket.gethostname(),
            "job": self.job.job,
            "duration": round(duration, 3),
            "log": job._log,
            "log_offset": job._offset,
        }
        suppress = exc is None or isinstance(exc, (Exception, Stopped))
        if job.lease.lost:
            outcome = LEASE_LOST
        elif isinstance(exc, Stopped) or (exc is not None and self.signum is not None):
            outcome = TIMEOUT if self.signum == signal.SIGUSR1 else PREEMPTED
        elif exc is None:
            outcome = DONE
        else:
            outcome = FAILED
        if outcome in (TIMEOUT, PREEMPTED):
            last = self.attempts.latest({job.key}).get(job.key)
            outcome, saved = checkpoints.stop_outcome(
                job._checkpoint_dir, job._saved, outcome, last and last.info
            )
            info.update(saved)
        text = "".join(traceback.format_exception(exc)) if outcome == FAILED else ""
        self._log(f"{text}=== {_now()} {outcome} after {duration:.1f}s\n")
        if outcome == DONE or suppress:  # other BaseExceptions (SystemExit) leave it missing
            state = self.records, self.attempts, self.leases
            keep = self.exp.config.keep_checkpoints
            store = lambda: store_staged(self.store, job.staging, job)  # noqa: E731
            outcome, why = record_outcome(
                *state,
                job,
                outcome,
                info,
                self.job.attempt,
                checkpoint=None if keep else self._checkpoint(job, outcome),
                store=store,
                cannot_write=self._cannot_record,
            )
            if why:
                self.say(f"index {job.index}: {why}")
            if outcome == DONE:
                self._completed[job.key] = info["duration"]
        else:
            try:
                self.leases.end(job.key, completed=False)
            except OSError as e:
                self._cannot_record(e)
        self.tally[outcome] += 1
        retry = job.key in self._retries
        log = info["log"], retry, info.get("log_offset")  # the attempt's own lines name it
        if self.guard is not None and self.guard.saw(outcome, duration, *log):
            report_broken(self.guard, self.broken_path, self.job.job, self.say)
        return suppress

    def _checkpoint(self, job: Job, outcome: str) -> str | None:
        """The folder record_outcome tidies: none for a done job whose folder was not
        prepared (sweep_done removes it when the worker ends, if the job made one)."""
        return None if outcome == DONE and job.key not in self._attempted else job._checkpoint_dir

    def _cannot_record(self, error: OSError) -> None:
        if self.unrecordable is None:
            self.unrecordable = str(error)
            self.say(f"cannot write state ({describe(error)}); claiming no new index")

    def _broken(self) -> bool:
        return self.guard is not None and self.guard.tripped

    def say(self, message: str) -> None:
        """One line of the worker's report, on stderr."""
        _say(message)

    def _summary(self) -> str:
        t = self.tally
        stop = f", stopped by {signal.Signals(self.signum).name}" if self.signum else ""
        return (
            f"{t['done']} done, {t['skipped']} already complete, {t[FAILED]} failed, "
            f"{t[TIMEOUT] + t[PREEMPTED]} stopped, {t[CONTINUING]} continuing, "
            f"{t[LEASE_LOST]} lease lost"
            f"{self.claims.summary()}{stop}"
            + ("; stopped early, the state folder refused a write" if self.unrecordable else "")
        )

    def _header(self, job: Job, note: str = "") -> None:
        """Start the job's attempt in the worker's task log and note where (quietly: a log that
        cannot be written loses the log, not the work)."""
        job._log, job._offset = self.task_log.folder, 0
        try:
            _, job._log, job._offset = self.task_log.open_slot(0)
            self.task_log.note(job.key, job.index, job._log, job._offset)
        except OSError:
            pass
        self._log(
            f"=== {_now()} pyexp.claim index={job.index} run={job.run} key={job.key} "
            f"host={socket.gethostname()} job={self.job.job or 'local'} pid={os.getpid()}"
            f"{': ' + note if note else ''}\n"
        )

    def _log(self, text: str) -> None:
        with contextlib.suppress(OSError):
            fd, _, _ = self.task_log.open_slot(0)
            write_all(fd, text)

    def _install(self) -> None:
        for s in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
            self._old[s] = signal.signal(s, self._handle)

    def _restore(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for s, old in self._old.items():
            signal.signal(s, old)

    def _handle(self, signum: int, frame: object) -> None:
        if signum == signal.SIGALRM:  # SIGUSR1's grace for the current index is over
            if self._body:
                raise Stopped(signal.SIGUSR1)
            return
        if self.signum is None:
            self.signum = signum
        if self._body and signum == signal.SIGUSR1:
            signal.setitimer(signal.ITIMER_REAL, self.grace / 2)
        elif self._body:
            raise Stopped(signum)


def claim(
    experiment: str | None = None, runs: int | None = None, indices: str | None = None
) -> ClaimWorker:
    """The indices this worker should run, claimed one at a time (see the module docstring).

    Without arguments, the worker of pyexp-run's farm task (PYEXP_LEDGER, and PYEXP_TASK or
    SLURM_ARRAY_TASK_ID); with an experiment file, every index of runs (or indices, '0-9,12')
    on this machine, with any number of such loops running at once."""
    if experiment is None:
        return _from_ledger()
    exp = loadExperiment(experiment)
    if indices is not None:
        try:
            pool = IndexSet.parse(indices)
        except ValueError as e:
            raise RunnerError(f"indices {indices!r}: {e}") from None
    else:
        pool = IndexSet.span(0, exp.numPermutations() * (runs or 1))
    local = local_job_id(uuid.uuid4().hex[:12])
    job = JobEnvironment(array_job_id=local, array_task_id="0")
    return ClaimWorker(exp, PoolClaims(exp, pool, 0, 1, local, say=_say), job)


def _from_ledger() -> ClaimWorker:
    ledger = os.environ.get("PYEXP_LEDGER")
    if not ledger:
        raise RunnerError(
            "pyexp.claim(): no PYEXP_LEDGER; run this script as a farm worker's command "
            "(pyexp-submit/pyexp-run), or pass the experiment file: pyexp.claim(path, runs=N)"
        )
    task = os.environ.get("PYEXP_TASK")
    if task is not None and not task.isdigit():
        raise RunnerError(f"PYEXP_TASK={task!r}: not a task number")
    job = JobEnvironment.read()
    entry, number = load_task(ledger, int(task) if task else None, job)
    if not entry.is_farm:
        raise RunnerError(f"{ledger}: pyexp.claim() needs a farm entry, this one is static")
    config_path = config_file()
    config = load_config(config_path) if config_path else None
    exp = ExperimentDescription(entry.snapshot, path=entry.experiment, config=config)
    job = worker_job(entry, number, job)
    start = os.environ.get(WORKER_START)
    started = time.monotonic() - (time.time() - float(start)) if start else time.monotonic()
    budget = TimeBudget.for_entry(entry, job, CompletionRecords(state_dirs(exp).done), started)
    mark = os.environ.get(CLAIM_MARK)
    if mark:
        with contextlib.suppress(OSError), open(mark, "w"):
            pass
    # pyexp-run starts `cores` copies of the script per worker: each walks from its own start.
    slot, slots = int(os.environ.get("PYEXP_SLOT") or 0), max(1, entry.cores)
    pool, worker, workers = entry.index_set(), number * slots + slot, entry.workers * slots
    claims = PoolClaims(exp, pool, worker, workers, pool_tag(job), budget, _say)
    return ClaimWorker(exp, claims, job, FailFast.for_entry(entry, number))


def _say(message: str) -> None:
    print(f"pyexp.claim: {message}", file=sys.stderr, flush=True)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
