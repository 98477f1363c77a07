"""hours() and gigs(): Slurm time and memory strings, with validated input."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from pyexp import gigs, hours


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (3, "2:59:59"),
        (24, "23:59:59"),
        (1.5, "1:29:59"),
        (1, "0:59:59"),
        (72, "71:59:59"),
        (0.25, "0:14:59"),
        (Fraction(1, 2), "0:29:59"),
    ],
)
def test_hours(n, expected):
    assert hours(n) == expected


@pytest.mark.parametrize(
    ("n", "expected"),
    [(4, "4G"), (0.5, "512M"), (1.0, "1G"), (1.5, "1536M"), (0.25, "256M"), (128, "128G")],
)
def test_gigs(n, expected):
    assert gigs(n) == expected


BAD = [0, -1, -0.5, True, False, "3", None, math.nan, math.inf, -math.inf, [3]]


@pytest.mark.parametrize("n", BAD, ids=repr)
def test_hours_rejects_non_positive_or_non_numbers(n):
    with pytest.raises(ValueError, match=r"hours\(\) must be a positive"):
        hours(n)


@pytest.mark.parametrize("n", BAD, ids=repr)
def test_gigs_rejects_non_positive_or_non_numbers(n):
    with pytest.raises(ValueError, match=r"gigs\(\) must be a positive"):
        gigs(n)


def test_hours_too_small_for_slurm():
    with pytest.raises(ValueError, match="at least two seconds"):
        hours(1 / 3600)
