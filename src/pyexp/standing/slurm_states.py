"""Slurm's job states as pyexp reads them, and the snapshot of our array tasks' states."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyexp.state.attempts import LOST, OOM, PREEMPTED, TIMEOUT

# Ends of a task. Anything else squeue or sacct shows (PENDING, RUNNING, REQUEUED, SUSPENDED,
# REQUEUE_HOLD, STOPPED, ...) may still run: the task still owns its indices.
FINAL_SLURM_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "BOOT_FAIL",
        "DEADLINE",
        "PREEMPTED",
    }
)
# How a task's final state reads as the outcome of the index it was running. None of these is
# charged against the attempt cap but OUT_OF_MEMORY; any other end without a record is lost.
SLURM_OUTCOMES = {
    "OUT_OF_MEMORY": OOM,
    "TIMEOUT": TIMEOUT,
    "DEADLINE": TIMEOUT,
    "CANCELLED": PREEMPTED,
    "PREEMPTED": PREEMPTED,
    "NODE_FAIL": LOST,
    "BOOT_FAIL": LOST,
}
# Ends that say a task which never reached pyexp-run was not at fault: retried, not charged.
NOT_THE_SCRIPTS_FAULT = frozenset({"CANCELLED", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL"})


def is_final(state: str) -> bool:
    """Whether a task in this state has ended for good."""
    return state in FINAL_SLURM_STATES


@dataclass(frozen=True)
class QueueSnapshot:
    """Our array tasks' states, (ledger entry id, array task id) -> Slurm state: squeue's
    (`-t all`, so recently ended tasks too), completed by sacct's word when it answers."""

    tasks: dict[tuple[str, int], str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # entry id -> job name squeue showed

    def active(self, entry_id: str, task_id: int) -> bool:
        """Whether that task may still run (pending, running, requeued, suspended, ...)."""
        state = self.tasks.get((entry_id, task_id))
        return state is not None and not is_final(state)

    def state(self, entry_id: str, task_id: int) -> str | None:
        """The task's last state seen, or None."""
        return self.tasks.get((entry_id, task_id))

    def entry_active(self, entry_id: str) -> bool:
        """Whether any task of that entry may still run."""
        return any(e == entry_id and not is_final(s) for (e, _), s in self.tasks.items())

    def merged(self, states: dict[tuple[str, int], str]) -> QueueSnapshot:
        """This snapshot completed with states of tasks it does not list (sacct's word)."""
        # What squeue lists is the controller's current word; accounting may lag behind it.
        return QueueSnapshot({**states, **self.tasks}, self.names)
