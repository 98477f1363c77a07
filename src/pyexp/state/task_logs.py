"""Task logs: one log file per runner slot, not per index, and a small index of attempts.

A runner (an array task, a farm worker, a local runner) writes its commands' output to
`<log_path>/<experiment id>/tasks/<tag>-<slot>.log`, one file per slot it runs in parallel,
kept open, each attempt starting with its `=== ... pyexp-run index=...` header. Beside them,
`<tag>.idx` holds one line per attempt, `<key> <index> <log file> <byte offset>`, so that the
attempts of a record key (parameters and run, not an index number) are found by reading the
small `.idx` files, never by scanning logs. Files per running task: its slots' logs and one
index; per index: none. The .idx starts with `runner <host id> <pid>:<start>` (the process that
writes it) and a runner that ends closes it with an `end` line; the next writer at rest
(pyexp-submit or pyexp-status, under the submit lock) folds the files of ended tasks (an `end`
line, a settled array, or a runner of this host whose process is gone: killed with -9), and the
.out/.err files of settled arrays, into one `archive-<id>.log` with its `archive-<id>.idx`
(fold()). Once MAX_ARCHIVES archives exist, the next fold merges all but the largest into its
own, so archives stay few however often a sweep is resubmitted.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import uuid
from dataclasses import dataclass

from pyexp.state.atomic import write_atomic
from pyexp.state.leases import dead_here, host_id, pid_start

TASKS = "tasks"
ARCHIVE = "archive-"
END = b"end\n"  # the last line of an ended task's .idx
RUNNER = b"runner "  # the first line of a task's .idx: the host id, pid and start of its writer
MAX_ARCHIVES = 4  # archive pairs kept before a fold merges them
ARCHIVED = "=== pyexp archived "  # starts an array task's .out/.err file in an archive


@dataclass(frozen=True)
class Located:
    """Where one attempt of a record key starts: a log file and a byte offset in it."""

    key: str
    index: int
    log: str
    offset: int


class TaskLog:
    """The log files of one runner: a descriptor per slot, opened once, and its .idx."""

    def __init__(self, folder: str, tag: str) -> None:
        self.folder = os.path.join(folder, TASKS)
        self.tag = tag
        self._slots: dict[int, tuple[int, str]] = {}  # slot -> (descriptor, path)
        self._idx: int | None = None

    def open_slot(self, slot: int) -> tuple[int, str, int]:
        """(descriptor, path, offset of the next write) of a slot's log; OSError if it cannot
        be opened."""
        if slot not in self._slots:
            os.makedirs(self.folder, exist_ok=True)
            path = os.path.join(self.folder, f"{self.tag}-{slot}.log")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            self._slots[slot] = fd, path
        fd, path = self._slots[slot]
        return fd, path, os.lseek(fd, 0, os.SEEK_END)

    def note(self, key: str, index: int, path: str, offset: int) -> None:
        """Add one attempt to the .idx (OSError if it cannot be written)."""
        if self._idx is None:
            path_idx = os.path.join(self.folder, f"{self.tag}.idx")
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
            self._idx = os.open(path_idx, flags, 0o644)
            pid = os.getpid()
            os.write(self._idx, RUNNER + f"{host_id()} {pid}:{pid_start(pid)}\n".encode())
        line = f"{key} {index} {os.path.basename(path)} {offset}\n".encode()
        while line:
            line = line[os.write(self._idx, line) :]

    def close(self) -> None:
        """Mark the .idx ended and close every descriptor (quietly)."""
        if self._idx is not None:
            with contextlib.suppress(OSError):
                os.write(self._idx, END)
        for fd in [*(fd for fd, _ in self._slots.values()), self._idx]:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._slots.clear()
        self._idx = None


def locate(folder: str, key: str) -> list[Located]:
    """Every attempt of key in the task logs under folder, oldest first by file then offset;
    reads only the .idx files."""
    found = []
    needle = f"{key} ".encode()
    for idx in sorted(glob.glob(os.path.join(glob.escape(folder), TASKS, "*.idx"))):
        try:
            with open(idx, "rb") as f:
                data = f.read()
        except OSError:  # vanished or unreadable: its attempts are not shown
            continue
        start = 0
        while (at := data.find(needle, start)) >= 0:
            end = data.find(b"\n", at)
            end = len(data) if end < 0 else end
            line, start = data[at:end], end + 1
            if at and data[at - 1 : at] != b"\n":  # the key inside another line
                continue
            parts = line.decode(errors="replace").split()
            if len(parts) == 4 and parts[1].isdigit() and parts[3].isdigit():
                log = os.path.join(folder, TASKS, os.path.basename(parts[2]))
                found.append(Located(key, int(parts[1]), log, int(parts[3])))
    return found


def archived_files(folder: str) -> dict[str, tuple[str, int]]:
    """Array tasks' .out/.err files folded into archives: name -> (archive log, offset)."""
    out = {}
    for idx in glob.glob(os.path.join(glob.escape(folder), TASKS, f"{ARCHIVE}*.idx")):
        with contextlib.suppress(OSError), open(idx, "rb") as f:
            for line in f:
                parts = line.decode(errors="replace").split()
                if len(parts) == 4 and parts[0] == "file" and parts[3].isdigit():
                    out[parts[1]] = os.path.join(folder, TASKS, parts[2]), int(parts[3])
    return out


def fold(folder: str, ended_jobs: set[str], outputs: list[str]) -> int:
    """Fold the files of ended tasks (their .idx says so, or their array job is in ended_jobs)
    and the existing files of outputs (array tasks' .out/.err) into one archive pair; how many
    files were folded. The archive is written whole (temp, then rename) before any is removed."""
    tasks = os.path.join(folder, TASKS)
    try:
        names = os.listdir(tasks)
    except FileNotFoundError:
        names = []
    idxs = [n for n in names if n.endswith(".idx") and not n.startswith(ARCHIVE)]
    ended = [n for n in idxs if _ended(os.path.join(tasks, n), ended_jobs)]
    outputs = [p for p in outputs if os.path.isfile(p)]
    if not (ended or outputs):
        return 0
    os.makedirs(tasks, exist_ok=True)
    name = f"{ARCHIVE}{uuid.uuid4().hex[:12]}"
    merged = _to_merge(tasks, [n for n in names if n.startswith(ARCHIVE) and n.endswith(".idx")])
    lines, folded = _write_archive(tasks, name, merged + ended, outputs)
    write_atomic(os.path.join(tasks, f"{name}.idx"), "".join(lines))
    for path in folded:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return len(folded)


def _to_merge(tasks: str, archives: list[str]) -> list[str]:
    """The archive .idx files to merge into the next archive, oldest first: all but the one with
    the largest log once there are MAX_ARCHIVES, else none."""
    if len(archives) < MAX_ARCHIVES:
        return []
    sizes = {}
    for idx in archives:
        with contextlib.suppress(OSError):
            log = os.stat(os.path.join(tasks, idx[: -len(".idx")] + ".log"))
            sizes[idx] = (log.st_size, log.st_mtime)
    largest = max(sizes, key=lambda n: sizes[n][0], default=None)
    return sorted((n for n in sizes if n != largest), key=lambda n: sizes[n][1])


def _ended(idx: str, ended_jobs: set[str]) -> bool:
    """Whether the task of idx ended: its array job in ended_jobs, its `end` line, or its runner
    a process of this host (and pid namespace) that is gone."""
    if os.path.basename(idx).split("_")[0] in ended_jobs:
        return True
    try:
        with open(idx, "rb") as f:
            first = f.readline()
            f.seek(max(0, os.fstat(f.fileno()).st_size - len(END)))
            return f.read() == END or _runner_gone(first)
    except OSError:
        return False


def _runner_gone(line: bytes) -> bool:
    """Whether an .idx's runner line names a process of this host that is gone."""
    parts = line[len(RUNNER) :].decode(errors="replace").split()
    if not line.startswith(RUNNER) or len(parts) != 2 or not parts[1].split(":")[0].isdigit():
        return False
    pid, _, start = parts[1].partition(":")
    return dead_here({"host_id": parts[0], "pid": int(pid), "pid_start": start}, {})


def _write_archive(tasks: str, name: str, idxs: list[str], outputs: list[str]):
    """Stream the logs the .idx files name, then outputs, into tasks/<name>.log; its .idx lines
    and the files folded."""
    lines: list[str] = []
    folded: list[str] = []
    tmp = os.path.join(tasks, f".{name}.tmp")
    with open(tmp, "wb") as out:
        for idx in idxs:
            entries, logs = _read_idx(os.path.join(tasks, idx))
            if idx.startswith(ARCHIVE):  # an archive merged: its log whole, lines rebased
                logs = [idx[: -len(".idx")] + ".log"]
            base = {}
            for log in logs:
                base[log] = out.tell()
                with contextlib.suppress(OSError), open(os.path.join(tasks, log), "rb") as f:
                    shutil.copyfileobj(f, out)
                folded.append(os.path.join(tasks, log))
            lines += [f"{k} {i} {name}.log {base[log] + off}\n" for k, i, log, off in entries]
            folded.append(os.path.join(tasks, idx))
        for path in outputs:
            out.write(f"{ARCHIVED}{os.path.basename(path)}\n".encode())
            lines.append(f"file {os.path.basename(path)} {name}.log {out.tell()}\n")
            with contextlib.suppress(OSError), open(path, "rb") as f:
                shutil.copyfileobj(f, out)
            folded.append(path)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, os.path.join(tasks, f"{name}.log"))
    return lines, folded


def _read_idx(path: str) -> tuple[list[tuple[str, str, str, int]], list[str]]:
    """(key, index, log, offset) of each attempt in an .idx, and its logs in order."""
    entries, logs = [], []
    with contextlib.suppress(OSError), open(path, "rb") as f:
        for line in f:
            parts = line.decode(errors="replace").split()
            if len(parts) == 4 and parts[3].isdigit():
                log = os.path.basename(parts[2])
                entries.append((parts[0], parts[1], log, int(parts[3])))
                logs += [log] if log not in logs else []
    return entries, logs
