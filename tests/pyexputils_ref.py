"""PyExpUtils 3.2.3's sweep and save-key rules, transcribed from its code (MIT, andnp).

PyExpUtils-andnp 3.2.3 needs numba, h5py and pandas, too heavy for the test extra, so the
differential tests compare against these functions: utils/dict.py (flatKeys, get,
hyphenatedStringify), utils/permute.py (the permutation of an index, first key fastest) and
utils/csv.py with results/backends/csv.py (the rows its saveResults appends).
"""

from __future__ import annotations

import re
from typing import Any


def flatKeys(d: dict) -> list[str]:
    out: list[str] = []
    for key in d:
        if type(d[key]) is dict:
            out += [f"{key}.{sub}" for sub in flatKeys(d[key])]
        elif type(d[key]) is list:
            subs = [f"[{i}]" for i in range(len(d[key]))]
            if type(d[key][0]) is dict:
                subs = []
                for i, sub in enumerate(d[key]):
                    subs += [f"[{i}].{k}" for k in flatKeys(sub)]
            out += [f"{key}.{sub}" for sub in subs]
        else:
            out.append(key)
    return out


def get(d: dict, key: str, default: Any = None) -> Any:
    if key == "":
        return d
    parts = key.split(".")
    el = d.get(parts[0])
    if el is None:
        return default
    if isinstance(el, list) and len(parts) > 1:
        idx = int(re.findall(r"\[(\d+)\]", parts[1])[0])
        if len(el) <= idx:
            return default
        return get(el[idx], ".".join(parts[2:]), default)
    if isinstance(el, dict):
        return get(el, ".".join(parts[1:]), default)
    return el


def hyphenatedStringify(d: dict) -> str:
    return "_".join(f"{key}-{get(d, key)}" for key in sorted(flatKeys(d)))


def _dropLastArray(key: str) -> str:
    parts = key.split(".")
    return ".".join(parts[:-1]) if re.match(r"\[\d+\]", parts[-1]) else key


def _pairs(sweeps: dict) -> list[tuple[str, list]]:
    keys = sorted(dict.fromkeys(map(_dropLastArray, flatKeys(sweeps))))
    out = []
    for key in keys:
        values = get(sweeps, key)
        out.append((key, values if type(values) is list else [values]))
    return out


def _set_at_path(d: dict, path: str, val: Any) -> None:
    def inner(d: Any, path: str, val: Any, last: str) -> Any:
        if len(path) == 0:
            return d
        split = path.split(".", maxsplit=1)
        part, rest = split if len(split) > 1 else [split[0], ""]
        nxt = rest.split(".")[0]
        if part.startswith("["):
            num = int(re.sub(r"[\[,\]]", "", part))
            if len(d[last]) > num:
                d[last][num] = inner(d[last][num], rest, val, "") if len(rest) > 0 else val
            else:
                d[last].append(inner({}, rest, val, "") if len(rest) > 0 else val)
            return d
        if len(rest) > 0:
            if nxt.startswith("["):
                d.setdefault(part, [])
                return inner(d, rest, val, part)
            return inner(d.setdefault(part, {}), rest, val, part)
        d.setdefault(part, val)
        return d

    inner(d, path, val, "")


def numPermutations(meta: dict) -> int:
    count = 1
    for _, values in _pairs({"metaParameters": meta}):
        count *= max(len(values), 1)
    return count


def getPermutation(meta: dict, index: int) -> dict:
    """The metaParameters of index (PyExpUtils: the first sorted key varies fastest)."""
    perm: dict = {}
    accum = 1
    for key, values in _pairs({"metaParameters": meta}):
        perm[key] = values[(index // accum) % len(values)]
        accum *= len(values)
    out: dict = {}
    for key in perm:
        _set_at_path(out, key, perm[key])
    return out.get("metaParameters", {})


def csvRow(params: dict, run: int, data: list[float]) -> str:
    """The line PyExpUtils' CSV saveResults appends for one (permutation, run)."""
    keys = sorted(flatKeys(params))
    cells = ",".join(str(get(params, key)) for key in keys)
    return f"{cells},{run},{','.join(map(str, data))}\n"
