"""What the user asks the runner for: the command template, the indices, numeric settings."""

from __future__ import annotations

import math
import shlex
import string

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
            self.tokens = shlex.split(template)
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
