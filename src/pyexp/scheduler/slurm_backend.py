"""The Slurm backend: sbatch per array (recorded in the ledger first), squeue, scancel, and the
room left under the user's job limit."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from pyexp.errors import SlurmError
from pyexp.scheduler import slurm
from pyexp.scheduler.backend import Backend, Sent, SubmitFailed, SubmitLockLost
from pyexp.scheduler.planner import Limits
from pyexp.state.layout import state_dirs
from pyexp.state.ledger import Ledger

if TYPE_CHECKING:
    from pyexp.experiment import ExperimentDescription
    from pyexp.scheduler.cluster import ClusterConfig
    from pyexp.standing.slurm_states import QueueSnapshot
    from pyexp.state.ledger import LedgerEntry


class SlurmBackend(Backend):
    """Arrays go to Slurm; every command runs through pyexp.scheduler.slurm."""

    def __init__(self, cluster: ClusterConfig, lock_seconds: float = 30.0) -> None:
        super().__init__(cluster)
        self.lock_seconds = lock_seconds

    def queue(self, required: bool) -> QueueSnapshot | None:
        """squeue's answer; None when not required and Slurm cannot be asked."""
        if required:
            return slurm.queue_snapshot()
        if not slurm.available():
            return None
        try:
            return slurm.queue_snapshot()
        except SlurmError:
            return None

    def limits(self) -> Limits:
        """Room under MaxSubmitJobs (sacctmgr or scontrol), else under the config's
        max_queued_jobs, less every job of the user that squeue shows (array tasks counted)."""
        cluster = self.cluster
        config = slurm.show_config()
        size = slurm.max_array_size(config) or cluster.max_array_size
        grace = slurm.grace_seconds(config)
        found = slurm.job_limits()
        cap, source = cluster.max_queued_jobs, f"max_queued_jobs {cluster.max_queued_jobs}"
        if found is not None and found.max_submit is not None:
            cap, source = found.max_submit, f"{found.source} MaxSubmitJobs {found.max_submit}"
        running = found.max_jobs if found is not None else None
        if cap is None:
            silent = f"Slurm states none, no max_queued_jobs in {os.path.basename(cluster.source)}"
            return Limits(None, size, running, silent, grace)
        try:
            used = slurm.user_jobs()
        except SlurmError as e:
            return Limits(None, size, running, f"{source}, but {e}", grace)
        return Limits(max(0, cap - used), size, running, f"{source}, {used} queued", grace)

    def submit(
        self, exp: ExperimentDescription, entries: list[LedgerEntry], held: Callable[[], bool]
    ) -> Sent:
        """sbatch each entry's script, the entry written to the ledger first."""
        ledger, sent = Ledger(state_dirs(exp).ledger), Sent()
        where = entries[0].experiment if entries else ""
        for n, entry in enumerate(entries):
            # Recorded before sbatch: a task that starts at once finds its entry, and an array
            # whose sbatch hangs but gets queued anyway is still found in squeue by its job name.
            # Recorded before the fencing check, too: a submitter that takes the lock after the
            # check sees this entry in flight, so a pause between check and sbatch sends nothing
            # twice (a pause before the check drops the entry: the next round submits it).
            ledger.write(entry)
            if not held():  # fencing: another submitter took the lock while this one was paused
                _forget(ledger, entries[n:], keep_first=False)
                raise SubmitLockLost(
                    f"{where}: lost the submit lock {state_dirs(exp).submit_lock} "
                    f"(paused past its {self.lock_seconds:g} s lease); stopped after {n} of "
                    f"{len(entries)} arrays, another submitter handles the rest"
                )
            try:
                job_id = slurm.sbatch(entry.script)
            except SlurmError as e:
                kept = _forget(ledger, entries[n:], isinstance(e, slurm.SlurmUncertain))
                summary = (
                    f"{n} of {len(entries)} arrays submitted, the others' indices stay missing"
                )
                raise SubmitFailed(f"{where}: {e}; {summary}{kept}") from None
            ledger.mark_submitted(entry, job_id)
            sent.job_ids.append(job_id)
        return sent


def _forget(ledger: Ledger, unsent: list[LedgerEntry], keep_first: bool) -> str:
    """Drop the ledger entry and scripts of arrays Slurm did not take; the note for the error."""
    note = ""
    if keep_first:
        # It may have been queued after all: keep its entry and script, so squeue's
        # tasks of pyexp-<id> count as queued and find their indices. If it was not queued,
        # nothing refers to the entry and its indices stay missing.
        note = f" (ledger entry {unsent[0].id} kept in case it was queued)"
        ledger.mark_unconfirmed(unsent[0])
        unsent = unsent[1:]
    for entry in unsent:
        ledger.discard(entry)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.script)
    return note
