"""Where an index's output went: its attempts in the task logs (found by record key), its old
per-index log (pyexp before task logs), and its array tasks' files."""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

from pyexp.experiment import ExperimentDescription
from pyexp.state.layout import log_dir, state_dirs
from pyexp.state.ledger import Ledger
from pyexp.state.records import record_key
from pyexp.state.task_logs import ARCHIVED, locate

HEADER = "=== "  # the runner starts each attempt with '=== <time> pyexp-run index=...'


@dataclass
class AttemptLog:
    """One attempt's header line and the last lines it wrote."""

    header: str
    tail: list[str] = field(default_factory=list)
    lines: int = 0
    log: str = ""  # the file it is in
    index: int | None = None  # the index number it ran under, when known


def index_log(exp: ExperimentDescription, index: int) -> str:
    """An index's log as pyexp wrote it before task logs: <log_path>/<experiment id>/<index>.log."""
    return os.path.join(log_dir(exp), f"{index}.log")


def attempts_of(exp: ExperimentDescription, index: int, keep: int) -> list[AttemptLog]:
    """Every attempt of the work index now means (its parameters and run), oldest first, each
    with its last keep lines: those in task logs, and those in an old per-index log whose
    header names the same work (or no work: logs older than record keys)."""
    key = record_key(exp.getPermutation(index), exp.getRun(index))
    out = []
    for at in locate(log_dir(exp), key):
        found = attempt_at(at.log, at.offset, keep)
        if found is not None:
            out.append(AttemptLog(found.header, found.tail, found.lines, at.log, at.index))
    try:
        old = attempts_in(index_log(exp, index), keep)
    except OSError:
        old = []
    for a in old:
        if f"key={key} " in a.header + " " or " key=" not in a.header:
            out.append(AttemptLog(a.header, a.tail, a.lines, index_log(exp, index), index))
    return sorted(out, key=lambda a: _started(a.header))


def _started(header: str) -> str:
    parts = header.split()
    return parts[1] if len(parts) > 1 else ""


def attempt_at(path: str, offset: int, keep: int) -> AttemptLog | None:
    """The attempt whose header starts at offset in path, with its last keep lines; None when
    the file or the header is not there."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            first = f.readline().decode("utf-8", errors="replace").rstrip("\n")
            if not _is_header(first):
                return None
            found = AttemptLog(first, log=path)
            tail: deque[str] = deque(maxlen=keep)
            for raw in f:
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                if _is_header(line) or line.startswith(ARCHIVED):  # the next attempt or file
                    break
                found.lines += 1
                tail.append(line)
    except OSError:
        return None
    found.tail = list(tail)
    return found


def _is_header(line: str) -> bool:
    return line.startswith(HEADER) and ("pyexp-run index=" in line or "pyexp.claim index=" in line)


def attempts_in(path: str, keep: int) -> list[AttemptLog]:
    """Each attempt in a log file with its last `keep` lines; read once, in bounded memory."""
    out: list[AttemptLog] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        tail: deque[str] = deque(maxlen=keep)
        for line in f:
            line = line.rstrip("\n")
            if _is_header(line):
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
    ran = _jobs_in_headers([a.header for a in attempts_of(exp, index, keep=0)])
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


def _jobs_in_headers(headers: list[str]) -> set[str]:
    """The `job=` of every attempt header."""
    return {f.split("=", 1)[1] for h in headers for f in h.split() if f.startswith("job=")}


TAIL_BYTES = 65536  # of a log read for its last line: training output can be large
TAIL_LINES = 50  # of an attempt read for its last line


def last_output_line(path: str, offset: int | None = None) -> str:
    """The last non-blank line the attempt whose header starts at offset in path wrote (offset
    None: the latest attempt in the log), not pyexp's own `=== ` lines; '' when it wrote none or
    the log cannot be read."""
    if offset is not None:
        found = attempt_at(path, offset, keep=TAIL_LINES)
        lines = [line.strip() for line in found.tail] if found else []
        return next((line for line in reversed(lines) if line and not _is_ours(line)), "")
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
        elif line and not _is_ours(line):
            last = line
    return last


def _is_ours(line: str) -> bool:
    return line.startswith(HEADER)
