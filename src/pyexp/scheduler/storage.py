"""Where a cluster's filesystems betray a sweep: roots compute nodes cannot write (Trillium's
$HOME and $PROJECT) and scratch that purges old files (Fir, Narval, Rorqual). Pure: the roots
come from the cluster config's environment-variable names, expanded in the env given."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from pyexp.config import Config
from pyexp.scheduler.cluster import ClusterConfig


def fixed_root(template: str) -> str:
    """The folder of a save_path template before its first placeholder."""
    head, brace, _ = template.partition("{")
    return os.path.dirname(head) if brace else template


def under(path: str, root: str) -> bool:
    """Whether path is root or inside it once symlinks are resolved (~/scratch linked to the
    scratch filesystem is not under $HOME; ~/projects/def-x linked into $PROJECT is in it)."""
    real, top = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real, top]) == top


def _roots(names: Iterable[str], env: Mapping[str, str]) -> list[tuple[str, str]]:
    """(variable, folder) of each name set in env; an unset or empty one is no root here."""
    return [(name, env[name]) for name in names if env.get(name)]


def readonly_refusal(config: Config, cluster: ClusterConfig, env: Mapping[str, str]) -> str | None:
    """The one line refusing a state, log or save folder compute nodes cannot write; else None."""
    paths = (
        ("state_path", config.state_path),
        ("log_path", config.log_path),
        ("save_path", fixed_root(config.save_path)),
    )
    where = config.source or "config.json"
    for var, root in _roots(cluster.readonly_on_compute, env):
        for key, path in paths:
            if under(path, root):
                return (
                    f"{where}: {key} {path} is under ${var} ({root}), which is read-only on "
                    f"{cluster.name}'s compute nodes, so every task would fail there; set "
                    f"{key} to a folder under $SCRATCH"
                )
    return None


def purge_warning(config: Config, cluster: ClusterConfig, env: Mapping[str, str]) -> str | None:
    """The one line warning that state_path is on a purged filesystem; else None."""
    for var, root in _roots(cluster.purged_after_days, env):
        if under(config.state_path, root):
            days = cluster.purged_after_days[var]
            return (
                f"{config.source or 'config.json'}: state_path {config.state_path} is under "
                f"${var} ({root}), which {cluster.name} purges of files older than {days} days: "
                "completion records can vanish and finished work then runs again; keep "
                "state_path under $PROJECT or your home (results can stay on scratch)"
            )
    return None
