"""The runner inside array tasks: per index, lease, run the user's command, record, release."""

from pyexp.command import CommandTemplate
from pyexp.environment import DEFAULT_GRACE_SECONDS
from pyexp.errors import RunnerError
from pyexp.runner.command import parse_indices, resolve_command
from pyexp.runner.loop import Runner
from pyexp.runner.processes import oom_kills
from pyexp.runner.task import load_task, run_direct, run_ledger, write_snapshot

__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "CommandTemplate",
    "Runner",
    "RunnerError",
    "load_task",
    "oom_kills",
    "parse_indices",
    "resolve_command",
    "run_direct",
    "run_ledger",
    "write_snapshot",
]
