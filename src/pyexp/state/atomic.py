"""Atomic small-file writes: temp file in the same folder, then rename.

A write that fails (no space, quota, read-only) raises an OSError naming the file it was for and
leaves no temp file; a writer killed midway leaves a `.tmp-*` that clean_temp() removes later.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid

TEMP_PREFIX = ".tmp-"


def write_atomic(path: str, data: str | bytes, sync: bool = True) -> None:
    """Write data to path so readers see the old file or the whole new one, never part; sync:
    also to stable storage before the rename (a fact that must survive a server crash)."""
    try:
        _write(path, data.encode() if isinstance(data, str) else data, sync)
    except OSError as e:
        if e.filename is not None and e.filename != path and TEMP_PREFIX not in str(e.filename):
            raise
        raise OSError(e.errno, e.strerror or str(e), path) from e


def _write(path: str, data: bytes, sync: bool) -> None:
    tmp = os.path.join(os.path.dirname(path), f"{TEMP_PREFIX}{uuid.uuid4().hex}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def clean_temp(folder: str, older_than: float = 3600.0) -> None:
    """Remove temp files of writers killed midway (older than older_than seconds)."""
    cutoff = time.time() - older_than
    try:
        with os.scandir(folder) as it:
            old = [e.path for e in it if e.name.startswith(TEMP_PREFIX) and entry_mtime(e) < cutoff]
    except FileNotFoundError:
        return
    for path in old:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def entry_mtime(entry: os.DirEntry) -> float:
    """A listed entry's mtime; infinity if it vanished since the listing."""
    try:
        return entry.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return float("inf")


def scan_names(folder: str) -> list[str]:
    """Names in folder (one directory read), skipping temp files; [] if it does not exist."""
    try:
        with os.scandir(folder) as it:
            return [e.name for e in it if not e.name.startswith(".")]
    except FileNotFoundError:
        return []
