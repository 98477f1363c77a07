"""An experiment's remembered settings (settings.json): what the last pyexp-submit was told.

Keys: `runs` (runs per permutation of the last submission), `max_attempts` (the last explicit
--max-attempts) and `cluster` (the cluster config of the last submission to Slurm: a shipped name
or an absolute path), so that cron runs, pyexp-status and loadResults agree without repeating
flags.
"""

from __future__ import annotations

import json
from typing import Any

from pyexp.state.atomic import write_atomic


def read_settings(path: str) -> dict[str, Any]:
    """The remembered settings at path; {} when there are none or they cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def remember(path: str, **values: Any) -> None:
    """Merge values into the remembered settings at path (atomically)."""
    write_atomic(path, json.dumps({**read_settings(path), **values}))


def remembered_int(path: str, key: str) -> int | None:
    """A remembered positive whole number, or None."""
    value = read_settings(path).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def remembered_text(path: str, key: str) -> str | None:
    """A remembered non-empty string, or None."""
    value = read_settings(path).get(key)
    return value if isinstance(value, str) and value else None
