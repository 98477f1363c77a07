"""A command line with {experiment}, {index}, {run}: parsed once, checked at submit, filled by
the runner (the core: both the scheduler and the runner use it)."""

from __future__ import annotations

import os
import shlex
import string

from pyexp.errors import RunnerError

PLACEHOLDERS = ("experiment", "index", "run")


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
