"""Atomic small-file writes: temp file in the same folder, then rename."""

from __future__ import annotations

import os
import uuid


def write_atomic(path: str, data: str) -> None:
    """Write data to path so readers see the old file or the whole new one, never part."""
    tmp = os.path.join(os.path.dirname(path), f".tmp-{uuid.uuid4().hex}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def scan_names(folder: str) -> list[str]:
    """Names in folder (one directory read), skipping temp files; [] if it does not exist."""
    try:
        with os.scandir(folder) as it:
            return [e.name for e in it if not e.name.startswith(".")]
    except FileNotFoundError:
        return []
