"""The broken-command guard's word: written by the array task (or farm worker) whose first
indices all failed fast, read by pyexp-submit (which refuses to resubmit) and pyexp-status.

One small JSON file per experiment (`broken-command.json`), written atomically; the latest task
to trip the guard wins. `pyexp-submit --retry-failed` removes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

from pyexp.state.atomic import write_atomic

# The thresholds when a cluster config (or an older ledger entry) does not set them: META-Farm's.
DEFAULT_INDICES = 5  # the first this many indices of a task all failed ...
DEFAULT_SECONDS = 5.0  # ... each within this many seconds


def record_broken(path: str, line: str, job: str | None) -> None:
    """Persist the guard's one line (what tripped it, the first failure's log and last line)."""
    write_atomic(path, json.dumps({"line": line, "job": job, "time": time.time()}))


def broken_line(path: str) -> str | None:
    """The guard's line, or None when it has not tripped (or its file cannot be read)."""
    try:
        with open(path, encoding="utf-8") as f:
            line = json.load(f).get("line")
    except (OSError, ValueError, AttributeError):
        return None
    return line if isinstance(line, str) and line else None


def clear_broken(path: str) -> None:
    """Forget that the guard tripped (the user asked to retry)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
