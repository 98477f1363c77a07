"""One index of an experiment and what it stands for: its parameters, run and record key."""

from __future__ import annotations

from dataclasses import dataclass

from pyexp.experiment import ExperimentDescription
from pyexp.state.records import record_key


@dataclass
class Item:
    """One index and what it stands for."""

    index: int
    params: dict
    run: int
    key: str

    @classmethod
    def of(cls, exp: ExperimentDescription, index: int) -> Item:
        """The index of exp with its parameters, run and record key."""
        params, run = exp.getPermutation(index), exp.getRun(index)
        return cls(index, params, run, record_key(params, run))
