"""Reading `strace -c` summaries, shared by the benchmarks in this folder."""

from __future__ import annotations

import os
import re


def read_strace_summary(path: str) -> dict[str, int]:
    """Calls per syscall from a file written by `strace -c -o path`."""
    counts: dict[str, int] = {}
    with open(path) as f:
        for line in f:
            fields = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(fields) >= 5 and re.fullmatch(r"[\d.]+", fields[0]) and fields[-1] != "total":
                counts[fields[-1]] = int(fields[3])
    return counts


_CALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\(")
_AT_CWD = re.compile(r'AT_FDCWD<([^>]*)>, "([^"]*)"')


def calls_naming(path: str, folders: tuple[str, ...]) -> dict[str, int]:
    """Calls per syscall, from a file written by `strace -f -y -o path`, of the lines that name
    a path under one of folders (with -y, fd arguments show their paths too; a path relative to
    the working directory counts where it resolves, an absolute one where it is)."""
    counts: dict[str, int] = {}
    with open(path) as f:
        for line in f:
            if _names(line, folders) and (m := _CALL.match(line)):
                counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def _names(line: str, folders: tuple[str, ...]) -> bool:
    if m := _AT_CWD.search(line):
        cwd, name = m.groups()
        return os.path.join(cwd, name).startswith(folders)
    return any(folder in line for folder in folders)
