"""Valid sbatch long option names, from simple-slurm's option table.

simple-slurm is AGPL: this is the only module that touches it, and it only reads its table.
"""

from __future__ import annotations

import difflib
import re
from functools import cache
from importlib import resources

from pyexp.errors import ClusterConfigError

# Options newer than simple-slurm's table, or missing from it.
_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")  # what an option's long name looks like
_EXTRA = frozenset({"gpus-per-node", "mem", "cpus-per-gpu", "tres-bind", "spread-job"})


@cache
def known_options() -> frozenset[str]:
    """Every sbatch long option name, dash-separated ('mem-per-cpu')."""
    table = resources.files("simple_slurm").joinpath("arguments.txt").read_text(encoding="utf-8")
    names = {line.split(",")[0].strip().replace("_", "-") for line in table.splitlines()}
    return frozenset(n for n in names if n) | _EXTRA


def normalize(name: str) -> str:
    """The dash-separated long name of an option, accepting 'mem_per_cpu' and '--mem-per-cpu'."""
    return name.strip().lstrip("-").replace("_", "-").lower()


def check_option(name: str, where: str) -> str:
    """The option's long name; ClusterConfigError naming the closest known one on a typo. A name
    close to none is passed on: sbatch may know options newer than simple-slurm's table."""
    option = normalize(name)
    known = known_options()
    if option in known:
        return option
    close = difflib.get_close_matches(option, sorted(known), n=1, cutoff=0.8)
    if not close and _NAME.fullmatch(option):
        return option
    if not close:
        raise ClusterConfigError(f"{where}: '{name}' is not an sbatch long option name")
    raise ClusterConfigError(f"{where}: unknown sbatch option '{name}'; did you mean '{close[0]}'?")
