"""pyexp's own files at rest: what a finished sweep leaves is folded by the next writer.

A task folds its own completion records when it ends (runner/loop.py), and sweeps the due
tombstones of anyone. What remains after the last task, pyexp-submit (never a dry run) and
pyexp-status (when the lock is free and the folder writable: scheduler/submit.tidy_if_idle) fold
under the submit lock: loose completion records into a segment (pyexp-submit only), completion
tombstones removed once due (RETAIN_LEASES of the lease duration each carries plus CLOCK_SKEW:
they must outlive every client cache first), ended tasks' logs and settled arrays' .out/.err
files into one log archive (state/task_logs.py), and settled arrays' `started` markers removed
(only settling reads them).
"""

from __future__ import annotations

import contextlib
import os

from pyexp.experiment import ExperimentDescription
from pyexp.state import task_logs
from pyexp.state.atomic import scan_names
from pyexp.state.layout import log_dir, state_dirs
from pyexp.state.leases import sweep_tombstones
from pyexp.state.ledger import SETTLED, LedgerScan, is_local_job, local_job_id
from pyexp.state.records import CompletionRecords


def tidy(exp: ExperimentDescription, scan: LedgerScan) -> None:
    """Fold what the finished tasks of exp left (scan: its ledger, settled entries final):
    loose records, then as leftovers(); quietly: each part is an optional chore whose failure
    leaves files, never loses state."""
    CompletionRecords(state_dirs(exp).done).fold()
    leftovers(exp, scan)


def leftovers(exp: ExperimentDescription, scan: LedgerScan) -> None:
    """Remove the due tombstones and settled arrays' `started` markers, and fold ended tasks'
    logs and settled arrays' .out/.err into an archive; records are left as they are (loose
    ones are placed by their parameters, folded ones only through the ledger)."""
    dirs = state_dirs(exp)
    with contextlib.suppress(OSError):
        sweep_tombstones(dirs.leases)
    ended = [e for e in scan.entries if e.state == SETTLED or is_local_job(e.job_id)]
    logs = log_dir(exp)
    outputs = [
        os.path.join(logs, f"{e.job_name}_{t}.{ext}")
        for e in ended
        for t in range(e.task_count())
        for ext in ("out", "err")
    ]
    # Slurm's array job ids; a local farm's workers name themselves after the entry instead
    jobs = {str(e.job_id) for e in ended if e.job_id} | {local_job_id(e.id) for e in ended}
    with contextlib.suppress(OSError):
        task_logs.fold(logs, jobs, outputs)
    for name in scan_names(dirs.started):
        if name.split("_")[0] in jobs:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(dirs.started, name))
