"""Settling: how arrays that left the queue ended, for the indices they left unfinished."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace

from pyexp.experiment import ExperimentDescription
from pyexp.standing.slurm_states import NOT_THE_SCRIPTS_FAULT, SLURM_OUTCOMES, QueueSnapshot
from pyexp.state import leases, task_logs
from pyexp.state.atomic import scan_names
from pyexp.state.attempts import FAILED, LOST, Attempts
from pyexp.state.guard import broken_line
from pyexp.state.layout import log_dir, read_ledger, state_dirs
from pyexp.state.ledger import Ledger, LedgerEntry, LedgerScan
from pyexp.state.records import CompletionRecords, record_key

# What the array template writes to a task's .err when it ends before pyexp-run starts.
SETUP_FAILED = "pyexp: setup line failed"
SCRIPT_ENDED = (SETUP_FAILED, "pyexp: stopped by")
SAID_BYTES = 65536  # of the .err read: the script's lines come before pyexp-run's


def with_accounting(
    exp: ExperimentDescription,
    queue: QueueSnapshot,
    states: Callable[[list[str]], dict[str, str] | None],
    scan: LedgerScan | None = None,
) -> QueueSnapshot:
    """squeue's snapshot completed by sacct's word (states: job ids -> '123_4' -> state, None
    when accounting cannot say) on our unsettled arrays that squeue no longer shows as active;
    scan: the ledger as this command read it (default: read now)."""
    unsettled = [e for e in (scan or read_ledger(exp)).entries if left_queue(e, queue)]
    answer = states([e.job_id for e in unsettled if e.job_id]) if unsettled else None
    if not answer:
        return queue
    seen = {
        (e.id, t): answer[f"{e.job_id}_{t}"]
        for e in unsettled
        for t in range(e.task_count())
        if f"{e.job_id}_{t}" in answer
    }
    return queue.merged(seen)


@dataclass(frozen=True)
class _TaskEnd:
    """What is known of how one array task ended."""

    job: str  # '<array job>_<task>'
    state: str | None  # its final Slurm state, if squeue or sacct said
    runner_started: bool  # pyexp-run left its `started` marker
    launched: bool  # Slurm started the script: its .out or .err file exists
    said: str = ""  # the script's own line on why it ended before pyexp-run (its .err)


def settle(exp: ExperimentDescription, queue: QueueSnapshot, scan: LedgerScan | None = None) -> int:
    """Record how finished arrays ended for the indices they left unfinished; how many recorded.

    queue holds what squeue (and sacct, see with_accounting) said; an array is finished when
    none of its tasks may still run. An index is charged with the task's end (out of memory,
    timeout, cancelled, else lost) only when the task was running it: its lease marker still
    names that task (a runner that ends normally records the index and removes the marker).
    Indices the task never started are lost (retried, not charged). A task whose script failed
    before pyexp-run started charges every index as failed, so a broken script is not
    resubmitted forever; one cancelled, preempted, timed out or never launched (no output file)
    is not charged, nor one whose script said why it ended (a failed setup line, a stop signal:
    see the array template), and after max_attempts such arrays in a row pyexp-submit refuses
    (broken_script). A farm's pool is charged only where a worker's lease marker names the
    index. Each array is settled once; scan: the ledger as this command read it (default: now).
    """
    dirs = state_dirs(exp)
    ledger = Ledger(dirs.ledger)
    finished = [e for e in (scan or ledger.scan()).entries if left_queue(e, queue)]
    if not finished:
        return 0
    live = leases.live_keys(dirs.leases)  # before done: a runner may finish in between
    done = CompletionRecords(dirs.done).completed()
    attempts = Attempts(dirs.attempts)
    tried = {(key, attempt.split("-")[0]) for key, _, attempt in attempts.names()}
    started = {name.split("-")[0] for name in scan_names(dirs.started)}
    outputs = set(scan_names(log_dir(exp)))
    markers = set(scan_names(dirs.leases))
    recorded = 0
    for entry in finished:
        tasks = range(entry.task_count())
        ends = [_task_end(exp, entry, t, queue, started, outputs) for t in tasks]
        entry.script_failed = _script_failed(entry, ends)
        if entry.is_farm:
            recorded += _settle_farm(entry, queue, dirs.leases, done, tried, attempts, log_dir(exp))
            ledger.settle(entry)
            continue
        old = ExperimentDescription(entry.snapshot, path=entry.experiment, config=exp.config)
        for task, end in zip(entry.tasks, ends, strict=True):
            job = end.job
            for i in task:
                key = record_key(old.getPermutation(i), old.getRun(i))
                if key in done or (key, job) in tried:
                    continue
                holder = (
                    _holder_job(dirs.leases, key, log_dir(exp))
                    if key + leases.SUFFIX in markers
                    else None
                )
                ran = holder == job
                if key in live and not ran:  # another runner is on it
                    continue
                outcome, why = _vanished(end, ran)
                info = {"index": i, "job": job, "slurm": end.state, "why": why}
                attempts.record(key, outcome, info, job)
                recorded += 1
        ledger.settle(entry)
    return recorded


def _settle_farm(
    entry: LedgerEntry,
    queue: QueueSnapshot,
    folder: str,
    done: set[str],
    tried: set[tuple[str, str]],
    attempts: Attempts,
    logs: str,
) -> int:
    """A finished farm charges only the indices its workers' lease markers still name (they were
    running them when the worker ended); the rest of its pool is lost: missing, not charged."""
    workers = {f"{entry.job_id}_{t}": t for t in range(entry.workers)}
    recorded = 0
    for name in scan_names(folder):
        key = name.removesuffix(leases.SUFFIX)
        if key == name or key in done:
            continue
        job = _holder_job(folder, key, logs)
        if job not in workers or (key, job) in tried:
            continue
        state = queue.state(entry.id, workers[job])
        outcome, why = _vanished(_TaskEnd(job, state, True, True), ran=True)
        attempts.record(key, outcome, {"index": None, "job": job, "slurm": state, "why": why}, job)
        recorded += 1
    return recorded


def _holder_job(folder: str, key: str, logs: str) -> str | None:
    """The job whose lease marker names key: its holder's info says so from its first beat;
    before that, the task log that last noted key (a runner notes an attempt there as it starts
    the index, under the lease)."""
    job = leases.read_holder(os.path.join(folder, key + leases.SUFFIX)).get("slurm_job")
    if job is None and (found := task_logs.locate(logs, key)):
        job = os.path.basename(found[-1].log).rsplit("-", 1)[0]  # <job>_<task>-<slot>.log
    return job


def _task_end(
    exp: ExperimentDescription,
    entry: LedgerEntry,
    t: int,
    queue: QueueSnapshot,
    started: set[str],
    outputs: set[str],
) -> _TaskEnd:
    """How task t of a finished entry ended, from the queue, markers and its output files."""
    job = f"{entry.job_id}_{t}"
    launched = any(f"{entry.job_name}_{t}.{s}" in outputs for s in ("out", "err"))
    end = _TaskEnd(job, queue.state(entry.id, t), job in started, launched)
    if not launched or end.runner_started or end.state in NOT_THE_SCRIPTS_FAULT:
        return end
    err = os.path.join(log_dir(exp), f"{entry.job_name}_{t}.err")
    return replace(end, said=_script_said(err))


def _script_said(err: str) -> str:
    """The array script's own last line on why it ended before pyexp-run ("" if none)."""
    try:
        with open(err, encoding="utf-8", errors="replace") as f:
            text = f.read(SAID_BYTES)
    except OSError:
        return ""
    said = [line for line in text.splitlines() if line.startswith(SCRIPT_ENDED)]
    return said[-1] if said else ""


def _script_failed(entry: LedgerEntry, ends: list[_TaskEnd]) -> str:
    """Why no task of a finished entry got as far as pyexp-run ("" if one did, or if Slurm
    ended them before: cancelled, preempted, never launched, or a stop signal): its first such
    task's .err file and what the script said there."""
    if any(e.runner_started for e in ends):
        return ""
    failed = [e for e in ends if _vanished(e, ran=False)[0] == FAILED or _setup_failed(e)]
    if not failed:
        return ""
    err = f"{entry.job_name}_{failed[0].job.rsplit('_', 1)[1]}.err"
    return f"{err}: {failed[0].said}" if failed[0].said else err


def _setup_failed(end: _TaskEnd) -> bool:
    return end.said.startswith(SETUP_FAILED)


def broken_script(
    exp: ExperimentDescription, max_attempts: int, scan: LedgerScan | None = None
) -> str | None:
    """One line when the last max_attempts arrays of exp all failed before pyexp-run started."""
    settled = (scan or read_ledger(exp)).settled()
    last = settled[-max_attempts:]
    if len(last) < max_attempts or not all(e.script_failed for e in last):
        return None
    return (
        f"the last {max_attempts} arrays failed before pyexp-run started "
        f"({_where(exp, last[-1])}): fix the script (setup lines, python), then pass --retry-failed"
    )


def broken_command(exp: ExperimentDescription) -> str | None:
    """One line when a task's first indices all failed fast (runner/guard.py) and no
    pyexp-submit --retry-failed has cleared it since."""
    line = broken_line(state_dirs(exp).broken)
    return f"not resubmitted: {line}: fix the command, then pass --retry-failed" if line else None


def script_failure(exp: ExperimentDescription, scan: LedgerScan) -> str | None:
    """One line when the last settled array of exp (its ledger: scan) failed before pyexp-run
    started."""
    settled = scan.settled()
    if not settled or not settled[-1].script_failed:
        return None
    return f"the last finished array failed before pyexp-run started ({_where(exp, settled[-1])})"


def _where(exp: ExperimentDescription, entry: LedgerEntry) -> str:
    err, _, said = entry.script_failed.partition(": ")
    where = os.path.join(log_dir(exp), err)
    return f"{said}; see {where}" if said else f"see {where}"


def _vanished(end: _TaskEnd, ran: bool) -> tuple[str, str]:
    """The outcome of an index a finished task left without a record, and why."""
    state = end.state or "state unknown"
    if ran:
        return SLURM_OUTCOMES.get(end.state or "", LOST), f"running when the task ended ({state})"
    if end.runner_started:
        return LOST, f"not started before the task ended ({state})"
    if end.state in NOT_THE_SCRIPTS_FAULT or end.state == "TIMEOUT":
        return SLURM_OUTCOMES[end.state], f"task ended before pyexp-run started ({state})"
    if end.said:  # a setup line failed, or a stop signal came: retried, not charged
        return LOST, f"{end.said} ({state}); see its .err file"
    if not end.launched:
        return LOST, f"task never launched: no output file ({state}; cancelled while pending?)"
    return FAILED, f"task script failed before pyexp-run started ({state}); see its .err file"


def left_queue(entry: LedgerEntry, queue: QueueSnapshot) -> bool:
    # Slurm arrays are settled once all their tasks left the queue.
    return entry.unsettled_on_slurm and not any(
        queue.active(entry.id, t) for t in range(entry.task_count())
    )
