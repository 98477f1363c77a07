"""Reading `strace -c` summaries, shared by the benchmarks in this folder."""

from __future__ import annotations

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
