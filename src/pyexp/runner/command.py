"""What the user asks the runner for: the command template, the indices, numeric settings."""

from __future__ import annotations

import math
import os
import shlex
import string
import sys
from collections.abc import Mapping

from pyexp.config import Config
from pyexp.errors import PyExpError
from pyexp.indexset import IndexSet
from pyexp.state.ledger import LedgerEntry

PLACEHOLDERS = ("experiment", "index", "run")
EXAMPLE_COMMAND = "python src/main.py -e {experiment} -i {index}"


class RunnerError(PyExpError, ValueError):
    """The runner cannot start: bad arguments, command, ledger or task."""


class CommandTemplate:
    """A command line with {experiment}, {index}, {run}: split once, each token filled, no shell."""

    def __init__(self, template: str) -> None:
        try:
            self.tokens = [_home(token) for token in shlex.split(template)]
        except ValueError as e:
            raise RunnerError(f"command {template!r}: {e}") from None
        if not self.tokens:
            raise RunnerError("the command is empty")
        self.template = template
        self.fields = {f for token in self.tokens for f in _check_token(template, token)}

    @property
    def in_process(self) -> bool:
        """Whether the command takes no index: a farm worker starts it once, and it claims its
        indices itself with pyexp.claim()."""
        return not self.fields & {"index", "run"}

    def argv(self, experiment: str, index: int, run: int) -> list[str]:
        """The argument vector for one index; values are never re-parsed."""
        return [t.format(experiment=experiment, index=index, run=run) for t in self.tokens]


def _check_token(template: str, token: str) -> list[str]:
    known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(token) if f is not None]
    except ValueError as e:
        raise RunnerError(f"command {template!r}: {e} (write {{{{ and }}}} for braces)") from None
    for name in fields:
        if name not in PLACEHOLDERS:
            raise RunnerError(
                f"command {template!r}: unknown placeholder {{{name}}}; known: {known} "
                "(write {{ and }} for literal braces)"
            )
    return fields


def _home(token: str) -> str:
    """token with a leading ~ or ~user expanded, as a shell would (braces kept literal)."""
    if not token.startswith("~"):
        return token
    head, sep, rest = token.partition("/")
    home = os.path.expanduser(head)
    if home == head:  # no such user: a shell leaves it too
        return token
    return home.replace("{", "{{").replace("}", "}}") + sep + rest


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


def env_number(name: str, value: str | None, default: float) -> float:
    """value (of the environment variable name) as a positive number, else default."""
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not (number > 0 and math.isfinite(number)):
        raise RunnerError(f"{name}={value!r}: must be a positive number")
    return number
