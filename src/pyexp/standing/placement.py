"""Where record keys (`<paramsHash>-<run>`) sit in a sweep, without enumerating a big one.

A key names work by parameters, so its index comes from the permutation whose hash it carries.
Up to MAP_LIMIT permutations every hash is computed once (exact, a second or two at the limit).
Above it, a key is placed from parameters that are on record for it (loose completion records,
the snapshots of ledger entries), inverted in O(swept keys) and confirmed by hashing; a key whose
parameters are nowhere on record stays unplaced and is reported, never guessed.
"""

from __future__ import annotations

from collections.abc import Iterable

from pyexp.experiment import ExperimentDescription
from pyexp.standing.missing import permutation_hashes

MAP_LIMIT = 1_000_000  # permutations up to which every paramsHash is computed


def split_key(key: str) -> tuple[str, int] | None:
    """(params hash, run) of a record key, or None for a name that is not one."""
    digest, dash, run = key.rpartition("-")
    return (digest, int(run)) if dash and digest and run.isdigit() else None


def place(
    exp: ExperimentDescription,
    runs: int,
    keys: Iterable[str],
    known: Iterable[tuple[str, dict]] = (),
) -> tuple[dict[str, int], set[str]]:
    """({key: index} for keys of runs below `runs` found in exp, keys that could not be placed).

    known: (params hash, params) pairs, read lazily and only while keys remain unplaced; used
    only above MAP_LIMIT. Keys of later runs or of permutations no longer swept are left out.
    """
    n = exp.numPermutations()
    wanted: dict[str, list[tuple[str, int]]] = {}
    for key in keys:
        parts = split_key(key)
        if parts and parts[1] < runs:
            wanted.setdefault(parts[0], []).append((key, parts[1]))
    if not wanted:
        return {}, set()
    if n <= MAP_LIMIT:
        where = {h: p for p, h in enumerate(permutation_hashes(exp)) if h in wanted}
    else:
        where = _from_params(exp, set(wanted), known)
    placed = {
        key: run * n + where[h] for h, pairs in wanted.items() if h in where for key, run in pairs
    }
    unplaced = (
        set()
        if n <= MAP_LIMIT
        else {k for h, ps in wanted.items() if h not in where for k, _ in ps}
    )
    return placed, unplaced


def _from_params(
    exp: ExperimentDescription, hashes: set[str], known: Iterable[tuple[str, dict]]
) -> dict[str, int]:
    where: dict[str, int] = {}
    for digest, params in known:
        if digest in hashes and digest not in where:
            p = exp.permutationOf(params)  # confirmed by hashing the decoded permutation
            if p is not None:
                where[digest] = p
            if len(where) == len(hashes):
                break
    return where
