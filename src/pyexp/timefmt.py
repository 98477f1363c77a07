"""Slurm time and memory strings: hours() and gigs(); counts for people: amount()."""

import math
from numbers import Real


def _positive(n: object, what: str) -> float:
    if isinstance(n, bool) or not isinstance(n, Real) or not n > 0 or not math.isfinite(n):
        raise ValueError(f"{what} must be a positive finite number, got {n!r}")
    return float(n)


def hours(n: float) -> str:
    """Slurm time one second under n hours: hours(3) -> '2:59:59'."""
    seconds = round(_positive(n, "hours()") * 3600) - 1
    if seconds < 1:
        raise ValueError(f"hours() needs at least two seconds, got {n!r}")
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def gigs(n: float) -> str:
    """Slurm memory: gigs(4) -> '4G', gigs(0.5) -> '512M'."""
    value = _positive(n, "gigs()")
    if value.is_integer():
        return f"{int(value)}G"
    return f"{max(1, round(value * 1024))}M"


def amount(n: int, noun: str, plural: str | None = None) -> str:
    """'1 task', '2 tasks'; plural where it is not noun + 's' ('1 index', '3 indices')."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
