"""What the console scripts share: one-line usage errors, counts >= 1, exit statuses, and a
quiet end when the reader of their output goes away (`pyexp-status | head -1`)."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from pyexp.experiment import ExperimentDescription


GAVE_UP = 3  # exit status of pyexp-submit and pyexp-status: indices failed for good
BROKEN_PIPE = 128 + 13  # as a shell reports a command killed by SIGPIPE

Main = Callable[[list[str] | None], int]


def console(main: Main) -> Main:
    """main as a console script: a closed stdout (`| head`) ends it with BROKEN_PIPE, silently."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            code = main(argv)
            sys.stdout.flush()  # inside the try: a reader gone meanwhile is not a traceback
            return code
        except BrokenPipeError:
            # Python flushes stdout again at exit: point it at /dev/null so that is quiet too.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return BROKEN_PIPE

    return wrapped


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


def unknown_runs(exp: ExperimentDescription, path: str) -> str:
    """The one-line error when runs_for found no runs: never submitted, or settings damaged."""
    import os

    from pyexp.state.layout import state_dirs

    settings = state_dirs(exp).settings
    if os.path.exists(settings):
        return f"{path}: how many runs? {settings} cannot be read; pass --runs N to rewrite it"
    return f"{path}: never submitted, so how many runs? pass --runs N"
