"""The runner inside array tasks: per index, lease, run the user's command, record, release.

Per index: skip it if complete; take its lease without waiting (held elsewhere: retry it after
the rest); run the command in its own process group, stdout and stderr appended to
`<log_path>/<experiment id>/<index>.log`; on exit 0 write the completion record, then release;
otherwise record a failed attempt, then release. SIGUSR1 (Slurm's pre-timeout signal) and
SIGTERM/SIGINT (preemption, scancel) stop it: children get SIGTERM, then SIGKILL after the grace
period, their attempts are recorded as timeout/preempted, leases released, no new index starts.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import shlex
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TextIO

from pyexp.config import Config
from pyexp.errors import PyExpError
from pyexp.experiment import ExperimentDescription, loadExperiment
from pyexp.state.atomic import write_atomic
from pyexp.state.attempts import FAILED, OOM, PREEMPTED, TIMEOUT, Attempts
from pyexp.state.layout import experiment_id, state_dirs
from pyexp.state.leases import DEFAULT_LEASE_SECONDS, IndexLeases, Lease, slurm_attempt, slurm_job
from pyexp.state.ledger import Ledger, LedgerEntry, split_changed
from pyexp.state.records import CompletionRecords, record_key

PLACEHOLDERS = ("experiment", "index", "run")
DEFAULT_GRACE_SECONDS = 30.0
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
EXAMPLE_COMMAND = "python src/main.py -e {experiment} -i {index}"


class RunnerError(PyExpError, ValueError):
    """The runner cannot start: bad arguments, command, ledger or task."""


class CommandTemplate:
    """A command line with {experiment}, {index}, {run}: split once, each token filled, no shell."""

    def __init__(self, template: str) -> None:
        try:
            self.tokens = shlex.split(template)
        except ValueError as e:
            raise RunnerError(f"command {template!r}: {e}") from None
        if not self.tokens:
            raise RunnerError("the command is empty")
        self.template = template
        for token in self.tokens:
            _check_token(template, token)

    def argv(self, experiment: str, index: int, run: int) -> list[str]:
        """The argument vector for one index; values are never re-parsed."""
        return [t.format(experiment=experiment, index=index, run=run) for t in self.tokens]


def _check_token(template: str, token: str) -> None:
    known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(token) if f is not None]
    except ValueError as e:
        raise RunnerError(f"command {template!r}: {e} (write {{{{ and }}}} for braces)") from None
    for name in fields:
        if name not in PLACEHOLDERS:
            raise RunnerError(
                f"command {template!r}: unknown placeholder {{{name}}}; known: {known} "
                "(write {{ and }} for literal braces)"
            )


def resolve_command(cli: str | None, entry: LedgerEntry | None, config: Config) -> CommandTemplate:
    """The command: --command, else the ledger entry's, else config.json's."""
    template = cli or (entry.command if entry else None) or config.command
    if not template:
        where = config.source or "config.json"
        raise RunnerError(
            f'no command to run: pass --command or set "command" in {where} '
            f"(e.g. {EXAMPLE_COMMAND!r})"
        )
    return CommandTemplate(template)


def parse_indices(text: str) -> list[int]:
    """'0-9,12' -> [0, ..., 9, 12], in the order given, without repeats."""
    out: dict[int, None] = {}
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise RunnerError(f"--indices {text!r}: {part!r} is not N or N-M") from None
        if first < 0 or last < first:
            raise RunnerError(f"--indices {text!r}: {part!r} is not an ascending range of indices")
        out.update(dict.fromkeys(range(first, last + 1)))
    return list(out)


def env_number(name: str, default: float) -> float:
    """A positive number from the environment, else default."""
    value = os.environ.get(name)
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not (number > 0 and math.isfinite(number)):
        raise RunnerError(f"{name}={value!r}: must be a positive number")
    return number


def default_parallel(entry: LedgerEntry | None) -> int:
    """Indices at once: the ledger entry's cores, else $SLURM_CPUS_PER_TASK, else 1."""
    if entry is not None:
        return max(1, entry.cores)
    return max(1, int(env_number("SLURM_CPUS_PER_TASK", 1)))


def load_task(ledger_path: str, task: int | None) -> tuple[LedgerEntry, list[int]]:
    """The ledger entry at ledger_path and its task's indices (task from $SLURM_ARRAY_TASK_ID)."""
    folder, name = os.path.split(os.path.abspath(ledger_path))
    try:
        entry = Ledger(folder).load(name.removesuffix(".json"))
    except FileNotFoundError:
        raise RunnerError(f"{ledger_path}: no such ledger entry") from None
    except (OSError, ValueError, TypeError) as e:
        raise RunnerError(f"{ledger_path}: unreadable ledger entry: {e}") from None
    if task is None:
        value = os.environ.get("SLURM_ARRAY_TASK_ID")
        if value is None:
            raise RunnerError("no task: pass --task N or run inside a Slurm array task")
        if not value.isdigit():
            raise RunnerError(f"SLURM_ARRAY_TASK_ID={value!r}: not a task number")
        task = int(value)
    if not 0 <= task < len(entry.tasks):
        raise RunnerError(f"{ledger_path}: task {task} out of range (0-{len(entry.tasks) - 1})")
    return entry, list(entry.tasks[task])


@dataclass
class _Item:
    """One index and what it stands for."""

    index: int
    params: dict
    run: int
    key: str


@dataclass
class _Running:
    """A started command."""

    item: _Item
    lease: Lease
    proc: subprocess.Popen | None  # None: the program could not be started
    log: int  # descriptor of the index's log file, appended to
    log_path: str
    started: float


class _SignalWatch:
    """One select() woken by SIGCHLD and the stop signals; remembers the first stop signal."""

    def __enter__(self) -> _SignalWatch:
        self.signum: int | None = None
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._old_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        sigs = (signal.SIGCHLD, *STOP_SIGNALS)
        self._old = {s: signal.signal(s, self._handle) for s in sigs}
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if signum != signal.SIGCHLD and self.signum is None:
            self.signum = signum

    def wait(self, timeout: float | None) -> None:
        """Sleep until a signal arrives or timeout seconds pass (None: no limit)."""
        if timeout is not None and timeout <= 0:
            return
        select.select([self._r], [], [], timeout)
        try:
            while os.read(self._r, 512):
                pass
        except BlockingIOError:
            pass

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        signal.set_wakeup_fd(self._old_fd)
        os.close(self._r)
        os.close(self._w)


class Runner:
    """Runs indices of one experiment under leases; stops cleanly on SIGUSR1/SIGTERM/SIGINT."""

    def __init__(
        self,
        exp: ExperimentDescription,
        command: CommandTemplate,
        *,
        experiment_path: str | None = None,
        parallel: int = 1,
        lease_duration: float | None = None,
        grace: float | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.exp = exp
        self.command = command
        self.experiment_path = experiment_path or exp.path or ""
        self.parallel = max(1, parallel)
        self.grace = (
            env_number("PYEXP_GRACE_SECONDS", DEFAULT_GRACE_SECONDS) if grace is None else grace
        )
        self.out = out or sys.stderr
        self.host, self.job, self.attempt = socket.gethostname(), slurm_job(), slurm_attempt()
        dirs = state_dirs(exp)
        self.started_marker = os.path.join(dirs.started, self.attempt) if self.attempt else None
        self.records = CompletionRecords(dirs.done)
        self.attempts = Attempts(dirs.attempts)
        if lease_duration is None:
            lease_duration = env_number("PYEXP_LEASE_SECONDS", DEFAULT_LEASE_SECONDS)
        self.leases = IndexLeases(dirs.leases, lease_duration, job=self.job)
        self.log_dir = os.path.join(exp.config.log_path, experiment_id(exp))
        self.tally: Counter[str] = Counter()
        self.running: dict[int, _Running] = {}
        self._argv0: dict[str, str] = {}
        self._environ = dict(os.environ)
        self._preexec = _die_with_parent()
        self._oom_seen = oom_kills()

    def run(self, indices: Iterable[int]) -> int:
        """Run every index not yet complete; returns the exit status (128+signal when stopped)."""
        if self.started_marker:  # tells reconcile this array task got as far as pyexp-run
            write_atomic(self.started_marker, f"{self.host} {os.getpid()} {_now()}\n")
        done = self.records.completed(compact=False)
        items = deque(self._item(i) for i in indices)
        os.makedirs(self.log_dir, exist_ok=True)
        with _SignalWatch() as self._watch:
            try:
                self._loop(items, done)
            finally:
                self._abandon()
        return self._summary()

    def _item(self, index: int) -> _Item:
        params, run = self.exp.getPermutation(index), self.exp.getRun(index)
        return _Item(index, params, run, record_key(params, run))

    def _loop(self, queue: deque[_Item], done: set[str]) -> None:
        deferred: list[_Item] = []
        window_end = next_poll = 0.0
        # Slow enough for a shared filesystem; fine enough that a dead foreign lease is taken
        # within duration * 7/6 of the first try, inside the 1.5 * duration window.
        poll = self.leases.duration / 6
        while True:
            # Signal first: a child reaped after a stop signal may have exited 0 because of it.
            if self._watch.signum is not None:
                self._stop(self._watch.signum)
                return
            self._reap()
            while queue and self._free() and self._watch.signum is None:
                self._first_try(queue.popleft(), done, deferred)
            now = time.monotonic()
            if not queue and deferred and self._free():
                window_end = window_end or now + 1.5 * self.leases.duration
                if now >= window_end:
                    self._give_up(deferred)
                elif now >= next_poll:
                    self._retry(deferred)
                    next_poll = now + poll
            if not (queue or deferred or self.running):
                return
            waiting_on_leases = not queue and deferred and self._free()
            self._watch.wait(max(0.0, next_poll - now) if waiting_on_leases else None)

    def _free(self) -> bool:
        return len(self.running) < self.parallel

    def _first_try(self, item: _Item, done: set[str], deferred: list[_Item]) -> None:
        if item.key in done:
            self.tally["skipped"] += 1
            return
        lease = self.leases.try_take(item.key)
        if lease is None:
            deferred.append(item)
        else:
            self._launch(item, lease)

    def _retry(self, deferred: list[_Item]) -> None:
        for item in list(deferred):
            if not self._free():
                return
            if self.records.is_complete(item.params, item.run):
                deferred.remove(item)
                self.leases.forget(item.key)
                self.tally["skipped"] += 1
            elif (lease := self.leases.try_take(item.key)) is not None:
                deferred.remove(item)
                self._launch(item, lease)

    def _give_up(self, deferred: list[_Item]) -> None:
        for item in deferred:
            self.leases.forget(item.key)
            self._say(f"index {item.index}: still leased by a live runner elsewhere; left to it")
        self.tally["elsewhere"] += len(deferred)
        deferred.clear()

    def _launch(self, item: _Item, lease: Lease) -> None:
        # Checked under the lease: another runner may have finished it since our first listing.
        try:
            complete = self.records.is_complete(item.params, item.run, fresh=True)
        except OSError as e:  # cannot tell: running it might run it twice
            self.leases.forget(item.key)
            self._say(f"index {item.index}: not started, its record cannot be checked ({e})")
            self.tally["unrecorded"] += 1
            return
        if complete:
            self.leases.forget(item.key)
            self.tally["skipped"] += 1
            return
        log_path = os.path.join(self.log_dir, f"{item.index}.log")
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        started = time.monotonic()
        _write(log, self._header(item))
        argv = self.command.argv(self.experiment_path, item.index, item.run)
        try:
            proc = subprocess.Popen(
                [self._resolve(argv[0]), *argv[1:]],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self._env(item, log),
                start_new_session=True,  # its own process group, signalled as one
                preexec_fn=self._preexec,
            )
        except OSError as e:
            _write(log, f"pyexp-run: cannot start {argv[0]!r}: {e.strerror}\n")
            self._finish(_Running(item, lease, None, log, log_path, started), 127)
            return
        self.running[proc.pid] = _Running(item, lease, proc, log, log_path, started)

    def _resolve(self, name: str) -> str:
        # One PATH lookup per program instead of one failed exec per PATH entry per index.
        if name not in self._argv0:
            self._argv0[name] = name if os.sep in name else (shutil.which(name) or name)
        return self._argv0[name]

    def _header(self, item: _Item) -> str:
        return (
            f"=== {_now()} pyexp-run index={item.index} run={item.run} key={item.key} "
            f"host={self.host} job={self.job or 'local'} pid={os.getpid()}\n"
        )

    def _env(self, item: _Item, log: int) -> dict[str, str]:
        env = dict(self._environ)
        env.update(
            PYEXP_INDEX=str(item.index),
            PYEXP_RUN=str(item.run),
            PYEXP_EXPERIMENT=self.experiment_path,
        )
        try:
            env["PYEXP_SAVE_PATH"] = self.exp.interpolateSavePath(item.index)
        except PyExpError as e:
            env.pop("PYEXP_SAVE_PATH", None)
            _write(log, f"pyexp-run: PYEXP_SAVE_PATH not set: {e}\n")
        return env

    def _reap(self) -> None:
        for pid, r in list(self.running.items()):
            if (rc := r.proc.poll()) is not None:
                del self.running[pid]
                self._finish(r, rc)

    def _finish(self, r: _Running, rc: int, outcome: str | None = None) -> None:
        duration = time.monotonic() - r.started
        _write(r.log, f"=== {_now()} exit {rc} after {duration:.1f}s\n")
        os.close(r.log)
        info = {
            "index": r.item.index,
            "host": self.host,
            "job": self.job,
            "duration": round(duration, 3),
            "log": r.log_path,
        }
        try:
            if rc == 0 and outcome is None:
                self.records.mark_complete(r.item.params, r.item.run, info)
                outcome = "done"
            else:
                outcome = outcome or (OOM if self._oom(rc) else FAILED)
                self.attempts.record(r.item.key, outcome, {**info, "exit_code": rc}, self.attempt)
        except OSError as e:  # quota, stale NFS handle: say so, keep the other indices going
            self._say(f"index {r.item.index}: exit {rc} but not recorded ({e}); it stays missing")
            outcome = "unrecorded"
        finally:
            self.leases.forget(r.item.key)
        self.tally[outcome] += 1
        lost = "; its lease was lost meanwhile" if r.lease.lost else ""
        self._say(
            f"index {r.item.index}: {outcome} (exit {rc}, {duration:.1f}s{lost}) log: {r.log_path}"
        )

    def _oom(self, rc: int) -> bool:
        if rc not in (-signal.SIGKILL, 128 + signal.SIGKILL):
            return False
        seen, self._oom_seen = self._oom_seen, oom_kills()
        return seen is not None and self._oom_seen is not None and self._oom_seen > seen

    def _stop(self, signum: int) -> None:
        outcome = TIMEOUT if signum == signal.SIGUSR1 else PREEMPTED
        name = signal.Signals(signum).name
        self._say(f"{name}: stopping {len(self.running)} running index(es), starting no more")
        self.tally["stopped_by"] = signum
        for r in self.running.values():
            _signal_group(r.proc, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while self.running and time.monotonic() < deadline:
            self._watch.wait(deadline - time.monotonic())
            for pid, r in list(self.running.items()):
                if (rc := r.proc.poll()) is not None:
                    del self.running[pid]
                    self._finish(r, rc, outcome)
        for pid, r in list(self.running.items()):
            _signal_group(r.proc, signal.SIGKILL)
            del self.running[pid]
            self._finish(r, r.proc.wait(), outcome)

    def _abandon(self) -> None:
        # Only reached with children left when something raised: kill them, record nothing.
        for r in self.running.values():
            _signal_group(r.proc, signal.SIGKILL)
            r.proc.wait()
            os.close(r.log)
        self.running.clear()
        self.leases.release()

    def _summary(self) -> int:
        t = self.tally
        self._say(
            f"{t['done']} done, {t['skipped']} already complete, {t[FAILED] + t[OOM]} failed, "
            f"{t[TIMEOUT] + t[PREEMPTED]} stopped, {t['refused']} refused, "
            f"{t['elsewhere']} left to other runners"
            + (f", {t['unrecorded']} not recorded" if t["unrecorded"] else "")
        )
        if t["stopped_by"]:
            return 128 + t["stopped_by"]
        return 1 if t[FAILED] or t[OOM] or t["refused"] or t["unrecorded"] else 0

    def _say(self, message: str) -> None:
        print(f"pyexp-run: {message}", file=self.out, flush=True)


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    # Only while unreaped: a reaped child's group id may belong to someone else by now.
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signum)


def _write(fd: int, text: str) -> None:
    data = text.encode()
    while data:
        data = data[os.write(fd, data) :]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that has Linux kill the child when the runner dies (kill -9 included)."""
    # PR_SET_PDEATHSIG fires when the forking *thread* ends: children are started from the
    # main thread only. It costs a fork instead of a vfork (about 3 ms per index here).
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the runner died before prctl took effect
            os._exit(1)

    return preexec


def oom_kills(root: str = "/sys/fs/cgroup", membership: str = "/proc/self/cgroup") -> int | None:
    """OOM kills so far in this process's cgroup (v2 or v1); None if unknown."""
    try:
        with open(membership, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:
            found = _counter(f"{root}{path}/memory.events", "oom_kill")
        elif "memory" in controllers.split(","):
            found = _counter(f"{root}/memory{path}/memory.oom_control", "oom_kill")
        else:
            continue
        if found is not None:
            return found
    return None


def _counter(path: str, name: str) -> int | None:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == name:
                    return int(value)
    except (OSError, ValueError):
        return None
    return None


def run_ledger(
    ledger_path: str,
    task: int | None = None,
    command: str | None = None,
    parallel: int | None = None,
    config: Config | None = None,
    out: TextIO | None = None,
) -> int:
    """Run one array task of a ledger entry; the exit status."""
    out = out or sys.stderr
    entry, indices = load_task(ledger_path, task)
    exp = loadExperiment(entry.experiment, config=config)
    _check_ledger_home(ledger_path, exp)
    template = resolve_command(command, entry, exp.config)
    runnable, refused = split_changed(entry, exp, indices)
    for i in refused:
        print(
            f"pyexp-run: index {i} refused: {entry.experiment} changed its parameters or run since "
            f"submission (ledger {entry.id}); not run, to be resubmitted",
            file=out,
            flush=True,
        )
    runner = Runner(
        exp,
        template,
        experiment_path=entry.experiment,
        parallel=parallel or default_parallel(entry),
        out=out,
    )
    runner.tally["refused"] = len(refused)
    return runner.run(runnable)


def _check_ledger_home(ledger_path: str, exp: ExperimentDescription) -> None:
    here = os.path.realpath(os.path.dirname(os.path.abspath(ledger_path)))
    expected = os.path.realpath(state_dirs(exp).ledger)
    if here != expected:
        raise RunnerError(
            f"{ledger_path} is not in this config's state folder ({expected}); run from the "
            "project folder or set PYEXP_CONFIG to the config.json it was submitted with"
        )


def run_direct(
    experiment: str,
    indices: str | None = None,
    runs: int | None = None,
    command: str | None = None,
    parallel: int | None = None,
    config: Config | None = None,
    out: TextIO | None = None,
) -> int:
    """Run the given indices (or every index of runs) of an experiment file; the exit status."""
    exp = loadExperiment(experiment, config=config)
    template = resolve_command(command, None, exp.config)
    if indices is None and runs is None:
        raise RunnerError("which indices? pass --indices 0-9,12 or --runs R")
    total = exp.numPermutations() * runs if runs is not None else None
    chosen = parse_indices(indices) if indices is not None else list(range(total or 0))
    if total is not None and chosen and max(chosen) >= total:
        raise RunnerError(f"--indices: {max(chosen)} is beyond {runs} run(s) ({total} indices)")
    runner = Runner(
        exp,
        template,
        experiment_path=experiment,
        parallel=parallel or default_parallel(None),
        out=out,
    )
    return runner.run(chosen)
