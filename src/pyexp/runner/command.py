"""What the user asks the runner for: the command template, the indices, numeric settings."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from pyexp.command import CommandTemplate
from pyexp.config import Config
from pyexp.errors import RunnerError
from pyexp.indexset import IndexSet
from pyexp.state.ledger import LedgerEntry

EXAMPLE_COMMAND = "python src/main.py -e {experiment} -i {index}"


def command_environ(
    environ: Mapping[str, str], python_on_path: bool, python: str | None = None
) -> dict[str, str]:
    """environ for the user's command: with python_on_path, the folder of the Python running
    pyexp-run (python, default sys.executable, not resolved: a venv's bin/python is a symlink)
    first on PATH, so `python` and the venv's scripts resolve."""
    env = dict(environ)
    folder = os.path.dirname(python or sys.executable)
    if not python_on_path or not folder:
        return env
    rest = env.get("PATH", os.defpath)
    if rest.split(os.pathsep)[0] != folder:
        env["PATH"] = folder + os.pathsep + rest if rest else folder
    return env


def resolve_command(cli: str | None, entry: LedgerEntry | None, config: Config) -> CommandTemplate:
    """The command: --command, else the ledger entry's, else config.json's."""
    template = cli or (entry.command if entry else None) or config.command
    if not template:
        where = config.source or "config.json"
        raise RunnerError(
            f'no command to run: pass --command or set "command" in {where} '
            f"(e.g. {EXAMPLE_COMMAND!r})"
        )
    return CommandTemplate(template)


def parse_indices(text: str) -> list[int]:
    """'0-9,12' -> [0, ..., 9, 12], ascending, without repeats."""
    try:
        return list(IndexSet.parse(text))
    except ValueError as e:
        raise RunnerError(f"--indices {text!r}: {e}") from None
