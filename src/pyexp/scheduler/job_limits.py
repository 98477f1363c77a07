"""The user's job limits as Slurm states them (pure parsing of sacctmgr and scontrol answers).

MaxSubmitJobs bounds jobs queued or running (each array task counts, as Slurm counts them);
MaxJobs bounds those running at once. Unlimited reads as None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ASSOC_FIELD = re.compile(r"\b(MaxSubmitJobs|MaxJobs)=(\d+|N)?")


@dataclass(frozen=True)
class JobLimits:
    """A user's MaxSubmitJobs and MaxJobs (None: unlimited) and which command said so."""

    max_submit: int | None
    max_jobs: int | None
    source: str = ""


def parse_sacctmgr(text: str) -> JobLimits | None:
    """`sacctmgr show assoc user=U format=MaxSubmitJobs,MaxJobs -n -P` lines 'N|M'; with several
    associations the smallest limit; None when no line is an association."""
    submits, jobs, seen = [], [], False
    for line in text.splitlines():
        parts = [p.strip() for p in line.strip().split("|")]
        if len(parts) < 2 or not all(p == "" or p.isdigit() for p in parts[:2]):
            continue
        seen = True
        submits += [int(parts[0])] if parts[0] else []
        jobs += [int(parts[1])] if parts[1] else []
    if not seen:
        return None
    return JobLimits(min(submits, default=None), min(jobs, default=None), source="sacctmgr")


def parse_assoc_mgr(text: str) -> JobLimits | None:
    """`scontrol show assoc_mgr users=U flags=assoc`: 'MaxSubmitJobs=1000(12)' is a limit (and
    the usage so far); 'N' or nothing is unlimited. The smallest of the user's records; None when
    no record says."""
    found: dict[str, list[int]] = {"MaxSubmitJobs": [], "MaxJobs": []}
    seen = False
    for name, limit in _ASSOC_FIELD.findall(text):
        seen = True
        found[name] += [int(limit)] if limit.isdigit() else []
    if not seen:
        return None
    return JobLimits(
        min(found["MaxSubmitJobs"], default=None),
        min(found["MaxJobs"], default=None),
        "scontrol assoc_mgr",
    )
