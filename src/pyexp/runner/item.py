"""One index of an experiment (its parameters, run and record key), and where the Runner's
next one comes from: the given indices in order, or a farm worker's pool (runner/pool.py)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

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


class InOrder:
    """The given indices in order; a held lease is retried after the rest (see _loop)."""

    defers = True
    array = None  # not a farm worker's: its failures leave no failure mark

    def __init__(self, items: deque[Item]) -> None:
        self.items = items

    def more(self) -> bool:
        return bool(self.items)

    def pop(self, running: int) -> Item | None:
        return self.items.popleft() if self.items else None

    def taken(self, item: Item) -> None:
        pass

    def wanted(self, item: Item) -> bool:
        return True

    def held(self, item: Item) -> None:
        pass

    def summary(self) -> str:
        return ""


class Source(Protocol):
    """Where the Runner's next index comes from: InOrder, or a farm worker's PoolClaims."""

    defers: bool
    array: str | None  # the farm worker's array (pyexp.state.leases' failure marks name it)

    def more(self) -> bool: ...
    def pop(self, running: int) -> Item | None: ...
    def taken(self, item: Item) -> None: ...
    def wanted(self, item: Item) -> bool: ...
    def held(self, item: Item) -> None: ...
    def summary(self) -> str: ...
