"""Task logs: one log file per runner slot, not per index, and a small index of attempts.

A runner (an array task, a farm worker, a local runner) writes its commands' output to
`<log_path>/<experiment id>/tasks/<tag>-<slot>.log`, one file per slot it runs in parallel,
kept open, each attempt starting with its `=== ... pyexp-run index=...` header. Beside them,
`<tag>.idx` holds one line per attempt, `<key> <index> <log file> <byte offset>`, so that the
attempts of a record key (parameters and run, not an index number) are found by reading the
small `.idx` files, never by scanning logs. Files per running task: its slots' logs and one
index; per index: none.
"""

from __future__ import annotations

import contextlib
import glob
import os
from dataclasses import dataclass

TASKS = "tasks"


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
        line = f"{key} {index} {os.path.basename(path)} {offset}\n".encode()
        while line:
            line = line[os.write(self._idx, line) :]

    def close(self) -> None:
        """Close every descriptor (quietly)."""
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
