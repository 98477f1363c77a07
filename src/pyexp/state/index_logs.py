"""Where an index's output went: its log file, attempt by attempt, and its array tasks' files."""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

from pyexp.experiment import ExperimentDescription
from pyexp.state.layout import log_dir, state_dirs
from pyexp.state.ledger import Ledger

HEADER = "=== "  # the runner starts each attempt with '=== <time> pyexp-run index=...'


@dataclass
class AttemptLog:
    """One attempt's header line and the last lines it wrote."""

    header: str
    tail: list[str] = field(default_factory=list)
    lines: int = 0


def index_log(exp: ExperimentDescription, index: int) -> str:
    """The runner's log file of an index: <log_path>/<experiment id>/<index>.log."""
    return os.path.join(log_dir(exp), f"{index}.log")


def attempts_in(path: str, keep: int) -> list[AttemptLog]:
    """Each attempt in a log file with its last `keep` lines; read once, in bounded memory."""
    out: list[AttemptLog] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        tail: deque[str] = deque(maxlen=keep)
        for line in f:
            line = line.rstrip("\n")
            if line.startswith(HEADER) and "pyexp-run index=" in line:
                _close(out, tail)
                out.append(AttemptLog(line))
                tail = deque(maxlen=keep)
            else:
                if not out:  # output before any header: an attempt of its own
                    out.append(AttemptLog("(before the first header)"))
                out[-1].lines += 1
                tail.append(line)
        _close(out, tail)
    return out


def _close(out: list[AttemptLog], tail: deque[str]) -> None:
    if out:
        out[-1].tail = list(tail)


def task_files(exp: ExperimentDescription, index: int) -> list[tuple[str, str]]:
    """(job, file) of the .out/.err files of every array task that held index, oldest first."""
    out = []
    ran = _jobs_in_headers(index_log(exp, index))
    for entry in Ledger(state_dirs(exp).ledger).entries():
        if entry.is_farm:  # any worker may have run it: those its log's headers name
            held = [t for t in range(entry.workers) if f"{entry.job_id}_{t}" in ran]
            held = held if index in entry.index_set() else []
        else:
            held = [t for t, task in enumerate(entry.tasks) if index in task]
        for t in held:
            stem = os.path.join(log_dir(exp), f"{entry.job_name}_{t}")
            job = f"{entry.job_id or entry.id}_{t}"
            out += [(job, f"{stem}.{ext}") for ext in ("out", "err")]
    return out


def _jobs_in_headers(path: str) -> set[str]:
    """The `job=` of every attempt header in an index's log; empty if there is no log."""
    try:
        headers = [a.header for a in attempts_in(path, keep=0)]
    except OSError:
        return set()
    return {f.split("=", 1)[1] for h in headers for f in h.split() if f.startswith("job=")}


TAIL_BYTES = 65536  # of a log read for its last line: training output can be large


def last_output_line(path: str) -> str:
    """The last non-blank line the latest attempt in an index's log wrote, not pyexp's own
    `=== ` lines; '' when it wrote none or the log cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - TAIL_BYTES))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    last = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(HEADER) and " index=" in line:  # a later attempt starts
            last = ""
        elif line and not line.startswith(HEADER):
            last = line
    return last
