"""Every PYEXP_* setting a user may give in the environment, read and validated here: one
function each, read when asked (tests and jobs set them per process), one-line ConfigErrors."""

from __future__ import annotations

import math
import os

from pyexp.errors import ConfigError

DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_GRACE_SECONDS = 20.0
DEFAULT_SLURM_TIMEOUT = 60.0
DEFAULT_SUBMIT_LOCK_SECONDS = 30.0
CHECKPOINT_DIR = "PYEXP_CHECKPOINT_DIR"


def seconds(name: str, default: float) -> float:
    """$name as a positive, finite number of seconds; default when unset or empty."""
    return positive(name, os.environ.get(name), default)


def positive(name: str, value: str | None, default: float) -> float:
    """value (of the environment variable name) as a positive, finite number; default if empty."""
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not (number > 0 and math.isfinite(number)):
        raise ConfigError(f"{name}={value!r}: must be a positive number; unset it or fix it")
    return number


def lease_seconds() -> float:
    """How long an index lease lasts unrenewed: $PYEXP_LEASE_SECONDS, else 60 s."""
    return seconds("PYEXP_LEASE_SECONDS", DEFAULT_LEASE_SECONDS)


def grace_seconds() -> float:
    """How long a stopped command may take to end: $PYEXP_GRACE_SECONDS, else 20 s."""
    return seconds("PYEXP_GRACE_SECONDS", DEFAULT_GRACE_SECONDS)


def slurm_timeout() -> float:
    """Seconds to wait for a Slurm command: $PYEXP_SLURM_TIMEOUT, else 60."""
    return seconds("PYEXP_SLURM_TIMEOUT", DEFAULT_SLURM_TIMEOUT)


def submit_lock_seconds() -> float:
    """How long the submit lock lasts unrenewed: $PYEXP_SUBMIT_LOCK_SECONDS, else 30 s."""
    return seconds("PYEXP_SUBMIT_LOCK_SECONDS", DEFAULT_SUBMIT_LOCK_SECONDS)


def slurm_command(name: str) -> str:
    """The executable of a Slurm command: $PYEXP_<NAME> (e.g. PYEXP_SBATCH), else the name."""
    return os.environ.get(f"PYEXP_{name.upper()}") or name


def config_file() -> str | None:
    """The config.json named by $PYEXP_CONFIG, None when unset or empty."""
    return os.environ.get("PYEXP_CONFIG") or None


def checkpoint_folder() -> str | None:
    """The current index's checkpoint folder: $PYEXP_CHECKPOINT_DIR (set by pyexp-run and
    pyexp.claim()), None when unset or empty."""
    return os.environ.get(CHECKPOINT_DIR) or None
