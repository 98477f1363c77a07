"""pyexp's own files at rest: what a finished sweep leaves is folded by the next writer.

A task folds its own completion records when it ends (runner/loop.py). What remains after the
last task, pyexp-submit folds under its submit lock (never a reader, never a dry run): loose
completion records into a segment, completion tombstones older than RETAIN_LEASES lease
durations plus CLOCK_SKEW removed (they must outlive every client cache first: until then they
are counted), ended tasks' logs and settled arrays' .out/.err files into one log archive
(state/task_logs.py), settled arrays' `started` markers removed (only settling reads them), and
the checkpoint folders of done work removed.
"""

from __future__ import annotations

import contextlib
import os

from pyexp.environment import lease_seconds
from pyexp.experiment import ExperimentDescription
from pyexp.state import checkpoints, task_logs
from pyexp.state.atomic import scan_names
from pyexp.state.layout import log_dir, state_dirs
from pyexp.state.leases import CLOCK_SKEW, RETAIN_LEASES, sweep_tombstones
from pyexp.state.ledger import SETTLED, LedgerScan, is_local_job, local_job_id
from pyexp.state.records import CompletionRecords, StateCorrupt


def tidy(exp: ExperimentDescription, scan: LedgerScan) -> None:
    """Fold what the finished tasks of exp left (scan: its ledger, settled entries final);
    quietly: each part is an optional chore whose failure leaves files, never loses state."""
    dirs = state_dirs(exp)
    with contextlib.suppress(OSError):
        sweep_tombstones(dirs.leases, RETAIN_LEASES * lease_seconds() + CLOCK_SKEW)
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
    records = CompletionRecords(dirs.done)
    records.fold(ended=jobs)  # loose records, ended tasks' journals
    if not exp.config.keep_checkpoints:  # done work's folders a killed runner left
        with contextlib.suppress(OSError, StateCorrupt):
            checkpoints.sweep_done(dirs.checkpoints, records.completed(compact=False))
    with contextlib.suppress(OSError):
        task_logs.fold(logs, jobs, outputs)
    for name in scan_names(dirs.started):
        if name.split("_")[0] in jobs:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(dirs.started, name))
