"""Cancelling an experiment's arrays in Slurm, recorded so that their indices become missing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyexp.scheduler import chain, slurm
from pyexp.scheduler.submit import submit_lock
from pyexp.state.layout import state_dirs
from pyexp.state.ledger import SUBMITTED, Ledger, LedgerEntry

if TYPE_CHECKING:
    from pyexp.experiment import ExperimentDescription
    from pyexp.standing.reconcile import QueueSnapshot


@dataclass
class Cancelled:
    """What pyexp-cancel did (or, with dry_run, would do) for one experiment."""

    job_ids: list[str] = field(default_factory=list)
    tasks: int = 0  # pending or running array tasks of those jobs
    dry_run: bool = False
    followup: str = ""  # the --until-done chain's follow-up job, cancelled too


def cancel_experiment(
    exp: ExperimentDescription, dry_run: bool = False, lock_timeout: float = 60.0
) -> Cancelled:
    """scancel every array of exp that squeue still shows; its ledger entries are marked
    cancelled first, so the indices they leave unfinished are missing, never charged as failed.
    Holds the submit lock, so a cron pyexp-submit neither races the marks nor settles them.
    The --until-done chain's follow-up is cancelled with them and the chain says so."""
    queue = slurm.queue_snapshot()  # required: without squeue nothing is known to be queued
    ledger = Ledger(state_dirs(exp).ledger)
    if dry_run:
        found = _active(ledger, queue, dry_run=True)
        found.followup = chain.pending_followup(exp) or ""
        return found
    with submit_lock(state_dirs(exp).submit_lock, lock_timeout):
        found = _active(ledger, queue)
        found.followup = chain.pending_followup(exp) or ""
        entries = [e for e in ledger.entries() if e.job_id in found.job_ids]
        for entry in entries:
            ledger.mark_cancelled(entry)
        if found.followup:
            chain.stop(exp, f"cancelled by pyexp-cancel (with follow-up job {found.followup})")
        try:
            slurm.scancel(found.job_ids + ([found.followup] if found.followup else []))
        except slurm.SlurmUncertain:
            raise  # it may have cancelled them: keep the marks (a cancelled index is missing)
        except slurm.SlurmError:
            for entry in entries:  # nothing was cancelled: they run on and settle as before
                ledger.mark_submitted(entry, entry.job_id or "")
            raise
    return found


def _active(ledger: Ledger, queue: QueueSnapshot, dry_run: bool = False) -> Cancelled:
    found = Cancelled(dry_run=dry_run)
    for entry in ledger.entries():
        tasks = _active_tasks(entry, queue)
        if tasks and entry.state == SUBMITTED and entry.job_id:
            found.job_ids.append(entry.job_id)
            found.tasks += tasks
    return found


def _active_tasks(entry: LedgerEntry, queue: QueueSnapshot) -> int:
    return sum(1 for t in range(entry.task_count()) if queue.active(entry.id, t))
