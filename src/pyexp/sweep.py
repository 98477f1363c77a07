"""The sweep tree of metaParameters and its index math: computed, never enumerated."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyexp.errors import ExperimentError

_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Const:
    """A value every permutation shares."""

    value: Any


@dataclass(frozen=True)
class Choice:
    """A swept key: one alternative per permutation; dict alternatives are sub-sweeps."""

    alternatives: tuple[Any, ...]  # literal values or Product sub-sweeps
    starts: tuple[int, ...]  # first local index of each alternative
    count: int


@dataclass(frozen=True)
class Product:
    """Dotted keys in sorted order; the last key varies fastest."""

    keys: tuple[str, ...]
    nodes: tuple[Const | Choice, ...]
    count: int


def _check_literal(value: Any, where: str) -> None:
    if isinstance(value, _SCALARS):
        if isinstance(value, float) and not math.isfinite(value):
            raise ExperimentError(f"{where}: {value!r} is not JSON data")
        return
    if isinstance(value, list):
        for item in value:
            _check_literal(item, where)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ExperimentError(f"{where}: key {k!r} is not a string")
            _check_literal(v, where)
        return
    raise ExperimentError(f"{where}: {type(value).__name__} value {value!r} is not JSON data")


def _choice(values: list, where: str) -> Choice:
    if not values:
        raise ExperimentError(f"{where}: empty list; a sweep needs at least one value")
    alternatives, starts, total = [], [], 0
    for pos, value in enumerate(values):
        if isinstance(value, dict):
            value = parse_product(value, f"{where}[{pos}]")
            size = value.count
        else:
            _check_literal(value, f"{where}[{pos}]")
            size = 1
        alternatives.append(value)
        starts.append(total)
        total += size
    return Choice(tuple(alternatives), tuple(starts), total)


def _leaves(d: dict, prefix: str, where: str) -> list[tuple[str, Const | Choice]]:
    if not isinstance(d, dict):
        raise ExperimentError(f"{where}: expected an object, got {type(d).__name__}")
    out: list[tuple[str, Const | Choice]] = []
    for key, value in d.items():
        if not isinstance(key, str) or not key or "." in key:
            raise ExperimentError(f"{where}: key {key!r} must be a non-empty string without '.'")
        dotted = prefix + key
        here = f"{where}.{key}" if where else key
        if isinstance(value, dict) and value:
            out.extend(_leaves(value, dotted + ".", here))
        elif isinstance(value, list):
            out.append((dotted, _choice(value, here)))
        else:
            _check_literal(value, here)
            out.append((dotted, Const(value)))
    return out


def parse_product(d: dict, where: str = "metaParameters") -> Product:
    """Parse a metaParameters dict (or a sub-sweep alternative) into a Product."""
    leaves = sorted(_leaves(d, "", where), key=lambda kv: kv[0])
    count = 1
    for _, node in leaves:
        if isinstance(node, Choice):
            count *= node.count
    return Product(tuple(k for k, _ in leaves), tuple(n for _, n in leaves), count)


def permutable(product: Product) -> dict[str, list]:
    """The swept (dotted) keys with their values as written (copies: safe to mutate)."""
    out = {}
    for key, node in zip(product.keys, product.nodes, strict=True):
        if isinstance(node, Choice):
            out[key] = [json_copy(_as_written(a)) for a in node.alternatives]
    return out


def _as_written(alternative: Any) -> Any:
    if not isinstance(alternative, Product):
        return alternative
    nested: dict = {}
    for key, node in zip(alternative.keys, alternative.nodes, strict=True):
        value = (
            node.value if isinstance(node, Const) else [_as_written(a) for a in node.alternatives]
        )
        set_dotted(nested, key, value)
    return nested


def set_dotted(d: dict, dotted: str, value: Any) -> None:
    """Set d['a']['b'] for 'a.b', creating inner dicts."""
    *outer, last = dotted.split(".")
    for part in outer:
        d = d.setdefault(part, {})
    d[last] = value


def flatten(params: dict, prefix: str = "") -> dict[str, Any]:
    """Nested params to {dotted key: value}, sorted by key."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return dict(sorted(out.items()))


def _mutable(value: Any) -> bool:
    return isinstance(value, (list, dict))


def json_copy(value: Any) -> Any:
    """A deep copy of JSON data (lists, dicts, scalars); several times faster than deepcopy."""
    if isinstance(value, list):
        return [json_copy(v) if isinstance(v, (list, dict)) else v for v in value]
    if isinstance(value, dict):
        return {k: json_copy(v) if isinstance(v, (list, dict)) else v for k, v in value.items()}
    return value


def compile_product(product: Product) -> Callable[[int], dict]:
    """A function local index -> nested params dict, generated once so decoding is a few divmods."""
    namespace: dict[str, Any] = {"_copy": json_copy}
    lines = ["def decode(i):"]
    exprs: dict[str, str] = {}
    swept = [
        (k, n) for k, n in zip(product.keys, product.nodes, strict=True) if isinstance(n, Choice)
    ]
    for pos, (key, node) in enumerate(reversed(swept)):
        last = pos == len(swept) - 1
        lines.append(f"    r{pos} = i" if last else f"    i, r{pos} = divmod(i, {node.count})")
        name = f"V{pos}"
        if all(not isinstance(a, Product) for a in node.alternatives):
            namespace[name] = node.alternatives
            expr = f"{name}[r{pos}]"
            if any(_mutable(a) for a in node.alternatives):
                expr = f"_copy({expr})"
        else:
            namespace[name] = _compile_choice(node)
            expr = f"{name}(r{pos})"
        exprs[key] = expr
    for pos, (key, node) in enumerate(zip(product.keys, product.nodes, strict=True)):
        if isinstance(node, Const):
            name = f"C{pos}"
            namespace[name] = node.value
            exprs[key] = f"_copy({name})" if _mutable(node.value) else name
    lines.append(f"    return {_dict_literal(dict(sorted(exprs.items())))}")
    exec("\n".join(lines), namespace)  # noqa: S102 - source built from our own identifiers only
    return namespace["decode"]


def _dict_literal(exprs: dict[str, str]) -> str:
    tree: dict = {}
    for key, expr in exprs.items():
        set_dotted(tree, key, expr)

    def render(node: dict) -> str:
        items = (f"{k!r}: {render(v) if isinstance(v, dict) else v}" for k, v in node.items())
        return "{" + ", ".join(items) + "}"

    return render(tree)


def _compile_choice(choice: Choice) -> Callable[[int], Any]:
    decoders = [
        (compile_product(a), a.count) if isinstance(a, Product) else (None, a)
        for a in choice.alternatives
    ]
    starts = choice.starts

    def pick(r: int) -> Any:
        pos = bisect_right(starts, r) - 1
        decode, literal = decoders[pos]
        return decode(r - starts[pos]) if decode else json_copy(literal)

    return pick
