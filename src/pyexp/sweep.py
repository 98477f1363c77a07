"""The sweep tree of metaParameters and its index math: computed, never enumerated."""

from __future__ import annotations

import json
import logging
import math
import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyexp.errors import ExperimentError

logger = logging.getLogger("pyexp.experiment")
_SCALARS = (str, int, float, bool, type(None))
CHOICE = "$choice"
_INDEX = re.compile(r"\[(\d+)\]")  # a dotted part naming a list element: 'layers.[0].units'


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
    """A sweep over literal values, or a $choice over sub-sweeps (dicts)."""
    if not values:
        raise ExperimentError(f"{where}: empty list; a sweep needs at least one value")
    alternatives, starts, total = [], [], 0
    for pos, value in enumerate(values):
        if isinstance(value, Product):
            size = value.count
        else:
            _check_literal(value, f"{where}[{pos}]")
            size = 1
        alternatives.append(value)
        starts.append(total)
        total += size
    return Choice(tuple(alternatives), tuple(starts), total)


def _alternatives(value: dict, where: str) -> Choice:
    """{"$choice": [{...}, ...]}: each alternative is a sub-sweep."""
    options = value[CHOICE]
    if len(value) != 1 or not isinstance(options, list):
        raise ExperimentError(
            f"{where}: '{CHOICE}' must be the only key, holding a list of objects"
        )
    if not options:
        raise ExperimentError(f"{where}: empty '{CHOICE}'; it needs at least one alternative")
    subs = []
    for pos, option in enumerate(options):
        if not isinstance(option, dict):
            raise ExperimentError(
                f"{where}.{CHOICE}[{pos}]: an alternative must be an object, got {option!r}"
            )
        subs.append(parse_product(option, f"{where}.{CHOICE}[{pos}]"))
    return _choice(subs, where)


def _value_leaves(value: Any, dotted: str, where: str) -> list[tuple[str, Const | Choice]]:
    """The leaves of one value at a dotted key, with PyExpUtils' meaning of lists and dicts."""
    if isinstance(value, dict):
        if CHOICE in value:
            return [(dotted, _alternatives(value, where))]
        if value:
            return _leaves(value, dotted + ".", where)
        logger.warning(
            "%s: an empty object sets no parameter and sweeps nothing (PyExpUtils drops the key; "
            "pyexp passes {}): remove it or give it keys",
            where,
        )
        return [(dotted, Const({}))]
    if isinstance(value, list) and value and isinstance(value[0], dict):
        # A list of objects is a fixed array of structures whose inner sweeps expand.
        out = []
        for pos, item in enumerate(value):
            if not isinstance(item, dict):
                raise ExperimentError(
                    f"{where}[{pos}]: a list that starts with an object must hold only objects"
                )
            out.extend(_value_leaves(item, f"{dotted}.[{pos}]", f"{where}.[{pos}]"))
        return out
    if isinstance(value, list):
        return [(dotted, _choice(value, where))]
    _check_literal(value, where)
    return [(dotted, Const(value))]


def _leaves(d: dict, prefix: str, where: str) -> list[tuple[str, Const | Choice]]:
    if not isinstance(d, dict):
        raise ExperimentError(f"{where}: expected an object, got {type(d).__name__}")
    out: list[tuple[str, Const | Choice]] = []
    for key, value in d.items():
        if not isinstance(key, str) or not key or "." in key or _INDEX.fullmatch(key):
            raise ExperimentError(f"{where}: key {key!r} must be a non-empty string without '.'")
        here = f"{where}.{key}" if where else key
        out.extend(_value_leaves(value, prefix + key, here))
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
    return nest(
        {key: _written(node) for key, node in zip(alternative.keys, alternative.nodes, strict=True)}
    )


def _written(node: Const | Choice) -> Any:
    """A node as the experiment file wrote it."""
    if isinstance(node, Const):
        return node.value
    values = [_as_written(a) for a in node.alternatives]
    if any(isinstance(a, Product) for a in node.alternatives):
        return {CHOICE: values}
    return values


class _Leaf:
    """A value in a tree of dotted parts (so a dict value is never taken for a branch)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _tree(flat: dict[str, Any]) -> dict:
    """Dotted keys to a tree of dicts; list parts '[i]' stay dict keys until built."""
    tree: dict = {}
    for dotted, value in flat.items():
        *outer, last = dotted.split(".")
        node = tree
        for part in outer:
            node = node.setdefault(part, {})
        node[last] = _Leaf(value)
    return tree


def _children(node: dict) -> tuple[bool, list]:
    """Whether node is a list (all parts '[i]') and its (part, child) pairs in order."""
    if node and all(_INDEX.fullmatch(k) for k in node):
        return True, sorted(node.items(), key=lambda kv: int(kv[0][1:-1]))
    return False, list(node.items())


def _build(node: Any) -> Any:
    if isinstance(node, _Leaf):
        return node.value
    is_list, children = _children(node)
    if is_list:
        return [_build(v) for _, v in children]
    return {k: _build(v) for k, v in children}


def nest(flat: dict[str, Any]) -> dict:
    """{dotted key: value} to nested params; parts like '[0]' ('layers.[0].units') build lists."""
    return _build(_tree(flat))


def flat_items(params: dict) -> list[tuple[str, Any]]:
    """PyExpUtils' flat keys of resolved params, sorted: dicts dotted, list elements '.[i]'."""
    out: list[tuple[str, Any]] = []

    def walk(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{key}.{k}", v)
        elif isinstance(value, list) and value:
            objects = isinstance(value[0], dict)
            for pos, item in enumerate(value):
                if objects and isinstance(item, dict):
                    walk(f"{key}.[{pos}]", item)
                else:
                    out.append((f"{key}.[{pos}]", item))
        else:
            out.append((key, value))

    for k, v in params.items():
        walk(k, v)
    return sorted(out, key=lambda kv: kv[0])


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
    def render(node: Any) -> str:
        if isinstance(node, _Leaf):
            return node.value
        is_list, children = _children(node)
        if is_list:
            return "[" + ", ".join(render(v) for _, v in children) + "]"
        return "{" + ", ".join(f"{k!r}: {render(v)}" for k, v in children) + "}"

    return render(_tree(exprs))


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


ABSENT: Any = object()  # what value_at returns for a key the params lack


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def value_at(params: Any, dotted: str) -> Any:
    """The value at a dotted key of nested params ('[i]' parts index lists), or ABSENT."""
    node = params
    for part in dotted.split("."):
        match = _INDEX.fullmatch(part)
        if isinstance(node, list) and match and int(match.group(1)) < len(node):
            node = node[int(match.group(1))]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return ABSENT
    return node


class PermutationFinder:
    """Resolved params -> local index of a Product: the decoder's inverse, O(swept keys).

    Values compare as canonical JSON (1 and 1.0 differ, as in paramsHash); keys the product does
    not know are not checked, so callers confirm a match by hashing the decoded permutation.
    """

    def __init__(self, product: Product) -> None:
        self._product = product
        self._positions: dict[int, dict[Any, int] | None] = {}  # id(Choice) -> value -> position

    def __call__(self, params: dict) -> int | None:
        """The index whose permutation has these params, or None if none can."""
        return self._find(self._product, params)

    def _find(self, product: Product, params: Any) -> int | None:
        index = 0
        for key, node in zip(product.keys, product.nodes, strict=True):
            value = value_at(params, key)
            if value is ABSENT:
                return None
            if isinstance(node, Const):
                if _identity(value) != _identity(node.value):
                    return None
                continue
            r = self._position(node, value)
            if r is None:
                return None
            index = index * node.count + r
        return index

    def _position(self, node: Choice, value: Any) -> int | None:
        if id(node) not in self._positions:
            self._positions[id(node)] = _literal_positions(node)
        positions = self._positions[id(node)]
        if positions is not None:
            return positions.get(_identity(value))
        for pos, alternative in enumerate(node.alternatives):
            local = self._find(alternative, value) if isinstance(value, dict) else None
            if local is not None:
                return node.starts[pos] + local
        return None


def _identity(value: Any) -> Any:
    """A hashable stand-in equal for values paramsHash cannot tell apart (1 and 1.0 differ)."""
    return (type(value), value) if isinstance(value, _SCALARS) else _canonical(value)


def _literal_positions(node: Choice) -> dict[Any, int] | None:
    """value identity -> first position, for a choice among literals; None for sub-sweeps."""
    if any(isinstance(a, Product) for a in node.alternatives):
        return None
    positions: dict[Any, int] = {}
    for pos, a in enumerate(node.alternatives):
        positions.setdefault(_identity(a), pos)
    return positions
