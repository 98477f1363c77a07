"""What the console scripts share: one-line usage errors, counts >= 1, exit statuses, and a
quiet end when the reader of their output goes away (`pyexp-status | head -1`)."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, TextIO

# Each command imports its work inside the functions that do it: `--help` and the console
# scripts start fast.

if TYPE_CHECKING:
    from pyexp.experiment import ExperimentDescription


GAVE_UP = 3  # exit status of pyexp-submit and pyexp-status: indices failed for good
BROKEN_PIPE = 128 + 13  # as a shell reports a command killed by SIGPIPE

Main = Callable[[list[str] | None], int]


class _ReaderGone(BaseException):
    """stdout's reader went away: unwinds past every `except OSError` to the console wrapper."""


class _Stdout:
    """sys.stdout whose writes raise _ReaderGone instead of BrokenPipeError."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise _ReaderGone from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise _ReaderGone from None

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def console(main: Main) -> Main:
    """main as a console script: a closed stdout (`| head`) ends it with BROKEN_PIPE, silently,
    wherever the write was (inside an `except OSError` too)."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        real = sys.stdout
        sys.stdout = _Stdout(real)
        try:
            code = main(argv)
            sys.stdout.flush()
            return code
        except _ReaderGone:
            # Python flushes stdout again at exit: point it at /dev/null so that is quiet too.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, real.fileno())
            return BROKEN_PIPE
        finally:
            sys.stdout = real

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
