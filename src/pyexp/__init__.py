"""pyexp: hyperparameter sweeps on Slurm, PyExpUtils' API done right."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module; resolved on first use so `import pyexp` stays fast (no numpy).
_EXPORTS = {
    "ExperimentDescription": "experiment",
    "loadExperiment": "experiment",
    "paramsHash": "experiment",
    "claim": "runner.claim",
    "checkpoint_dir": "state.checkpoints",
    "save_checkpoint": "state.checkpoints",
    "load_checkpoint": "state.checkpoints",
    "save": "runner.save",
    "getConfig": "config",
    "FileSystemContext": "context",
    "hours": "timefmt",
    "gigs": "timefmt",
    "listIndices": "standing.missing",
    "listMissingResults": "standing.missing",
    "loadResults": "analysis.results",
    "Result": "analysis.results",
    "ResultView": "analysis.results",
    "loadFrame": "analysis.frame",
    "splitOverParameter": "analysis.filters",
    "sliceOverParameter": "analysis.filters",
    "getBest": "analysis.filters",
    "find": "analysis.filters",
    "whereParameterEquals": "analysis.filters",
    "whereParameterGreaterEq": "analysis.filters",
    "whereParametersEqual": "analysis.filters",
    "plotSensitivity": "analysis.plot",
    "rankResults": "analysis.bootstrap",
    "rankFrame": "analysis.bootstrap",
    "ResultsError": "errors",
    "PyExpError": "errors",
    "ExperimentError": "errors",
    "ConfigError": "errors",
    "SavePathError": "errors",
    "ClusterConfigError": "errors",
    "SlurmError": "errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pyexp' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pyexp.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
