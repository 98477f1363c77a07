"""Exception types: each carries a one-line message saying what is wrong and where."""


class PyExpError(Exception):
    """Base of every error pyexp raises on purpose."""


class ExperimentError(PyExpError, ValueError):
    """A malformed experiment file or description."""


class ConfigError(PyExpError, ValueError):
    """A malformed or unreadable config.json."""


class SavePathError(PyExpError, ValueError):
    """A save path that cannot be built: unknown placeholder, escaping value, too-long part."""


class ResultsError(PyExpError, ValueError):
    """Results that cannot be used: a file that does not fit the experiment (PyExpUtils CSV
    columns), or none loaded where one is needed (getBest)."""


class ClusterConfigError(PyExpError, ValueError):
    """A malformed cluster config or sbatch option."""


class SlurmError(PyExpError, RuntimeError):
    """Slurm refused, hung, or answered something we cannot read."""


class RunnerError(PyExpError, ValueError):
    """The runner cannot start: bad arguments, command, ledger or task."""


class LedgerMismatch(PyExpError, RuntimeError):
    """Work in the ledger no longer means what the experiment file says now."""


def describe(error: Exception) -> str:
    """One line for a command-line user: our message, or 'path: reason' for an OS error."""
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror}"
    return str(error)
