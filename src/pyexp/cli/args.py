"""Argument parsing shared by the console scripts: one-line usage errors, counts >= 1."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from pyexp.experiment import ExperimentDescription


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (cron mails stay readable)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def count(text: str) -> int:
    """A whole number of at least 1, for --runs, --parallel, --max-attempts."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def runs_for(exp: ExperimentDescription, given: int | None) -> int | None:
    """--runs, else the runs of the experiment's last pyexp-submit, else None (never submitted)."""
    from pyexp.state.layout import state_dirs
    from pyexp.state.settings import remembered_int

    return given or remembered_int(state_dirs(exp).settings, "runs")


def cluster_for(
    exp: ExperimentDescription, given: str | None, env: dict[str, str] | None = None
) -> tuple[str | None, bool]:
    """The cluster config to load: --cluster, else the one of the experiment's last submission to
    Slurm, else None ($CC_CLUSTER, else local); and whether that memory changed the answer."""
    from pyexp.scheduler.cluster import default_cluster_name
    from pyexp.state.layout import state_dirs
    from pyexp.state.settings import remembered_text

    if given:
        return given, False
    remembered = remembered_text(state_dirs(exp).settings, "cluster")
    if remembered is None or remembered == default_cluster_name(env):
        return None, False
    return remembered, True


def unknown_runs(exp: ExperimentDescription, path: str) -> str:
    """The one-line error when runs_for found no runs: never submitted, or settings damaged."""
    import os

    from pyexp.state.layout import state_dirs

    settings = state_dirs(exp).settings
    if os.path.exists(settings):
        return f"{path}: how many runs? {settings} cannot be read; pass --runs N to rewrite it"
    return f"{path}: never submitted, so how many runs? pass --runs N"
