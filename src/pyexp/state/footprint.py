"""pyexp's own files at rest: what a finished sweep leaves is folded by the next writer.

A task folds its own completion records when it ends (runner/loop.py), and sweeps the due
tombstones of anyone. What remains after the last task, pyexp-submit (never a dry run) and
pyexp-status (when the lock is free and the folder writable: scheduler/submit.tidy_if_idle) fold
under the submit lock: loose completion records and ended jobs' journals into a segment
(pyexp-submit only), completion tombstones removed once due (RETAIN_LEASES of the lease duration
each carries plus CLOCK_SKEW: they must outlive every client cache first), ended tasks' logs and
settled arrays' .out/.err files into one log archive (state/task_logs.py), settled arrays'
`started` markers removed (only settling reads them), and the checkpoint folders of done work
removed.
"""

from __future__ import annotations

import contextlib
import os

from pyexp.experiment import ExperimentDescription
from pyexp.state import checkpoints, task_logs
from pyexp.state.atomic import scan_names
from pyexp.state.layout import log_dir, state_dirs
from pyexp.state.leases import sweep_tombstones
from pyexp.state.ledger import LedgerScan, local_job_id
from pyexp.state.records import CompletionRecords, StateCorrupt


def tidy(exp: ExperimentDescription, scan: LedgerScan) -> None:
    """Fold what the finished tasks of exp left (scan: its ledger, settled entries final):
    loose records and ended jobs' journals, done work's checkpoint folders, then as
    leftovers(); quietly: each part is an optional chore whose failure leaves files, never
    loses state."""
    dirs = state_dirs(exp)
    records = CompletionRecords(dirs.done)
    records.fold(ended=_ended_jobs(scan))
    if not exp.config.keep_checkpoints:  # done work's folders a killed runner left
        with contextlib.suppress(OSError, StateCorrupt):
            checkpoints.sweep_done(dirs.checkpoints, records.completed(compact=False))
    leftovers(exp, scan)


def _ended_jobs(scan: LedgerScan) -> set[str]:
    """The job ids of scan's ended entries (LedgerScan.ended)."""
    ended = scan.ended()
    # Slurm's array job ids; a local farm's workers name themselves after the entry instead
    return {str(e.job_id) for e in ended if e.job_id} | {local_job_id(e.id) for e in ended}


def leftovers(exp: ExperimentDescription, scan: LedgerScan) -> None:
    """Remove the due tombstones and settled arrays' `started` markers, and fold ended tasks'
    logs and settled arrays' .out/.err into an archive; records are left as they are (loose
    ones are placed by their parameters, folded ones only through the ledger)."""
    dirs = state_dirs(exp)
    with contextlib.suppress(OSError):
        sweep_tombstones(dirs.leases)
    logs = log_dir(exp)
    outputs = [
        os.path.join(logs, f"{e.job_name}_{t}.{ext}")
        for e in scan.ended()
        for t in range(e.task_count())
        for ext in ("out", "err")
    ]
    jobs = _ended_jobs(scan)
    with contextlib.suppress(OSError):
        task_logs.fold(logs, jobs, outputs)
    for name in scan_names(dirs.started):
        if name.split("_")[0] in jobs:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(dirs.started, name))
