"""ExperimentDescription: one JSON sweep, index <-> parameters, save paths."""

from __future__ import annotations

import hashlib
import json
import os
import string
from functools import lru_cache
from typing import Any

from pyexp import sweep
from pyexp.config import Config, config_for_experiment, getConfig, read_json
from pyexp.context import FileSystemContext
from pyexp.errors import ExperimentError, SavePathError

MAX_COMPONENT_BYTES = 255
_BUILTIN_FIELDS = ("name", "params", "run", "params_hash")
_NONE: Any = object()


def canonical_json(value: Any) -> str:
    """The one JSON text of a value: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def paramsHash(params: dict) -> str:
    """A stable 20-hex-digit hash of resolved parameters (never Python's salted hash())."""
    return hashlib.blake2b(canonical_json(params).encode(), digest_size=10).hexdigest()


def paramsString(params: dict) -> str:
    """PyExpUtils' string: 'key-value' per flat key (sorted, lists as 'key.[i]') joined by '_'."""
    return "_".join(f"{k}-{v}" for k, v in sweep.flat_items(params))


class ExperimentDescription:
    """A sweep: every (permutation, run) is one integer index."""

    def __init__(self, d: dict, path: str | None = None, config: Config | None = None) -> None:
        where = path or "experiment"
        if not isinstance(d, dict):
            raise ExperimentError(f"{where}: expected a JSON object, got {type(d).__name__}")
        if "metaParameters" not in d:
            raise ExperimentError(f"{where}: no 'metaParameters' object")
        self._d = d
        self.path = path
        self._config = config
        self._product = sweep.parse_product(d["metaParameters"], f"{where}: metaParameters")
        self._decode = sweep.compile_product(self._product)
        self._count = self._product.count
        self._finder = sweep.PermutationFinder(self._product)
        self._fields_cache: dict[str, Any] | None = None
        self._available: tuple[str, ...] = ()
        self._checked: frozenset[str] = frozenset()

    def __getstate__(self) -> dict:
        # The compiled decoder is generated code: rebuild it instead of pickling it.
        return {k: v for k, v in self.__dict__.items() if k != "_decode"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._decode = sweep.compile_product(self._product)

    @property
    def config(self) -> Config:
        """The config this experiment resolves paths with: by default, its file's (else the
        process's), resolved once."""
        if self._config is None:
            self._config = config_for_experiment(self.path) if self.path else getConfig()
        return self._config

    @property
    def description(self) -> dict:
        """The experiment dict as loaded."""
        return self._d

    def __getattr__(self, key: str) -> Any:
        # PyExpUtils exposes top-level fields as attributes: exp.agent, exp.environment.
        try:
            return self.__dict__["_d"][key]
        except KeyError:
            raise AttributeError(key) from None

    def permutable(self) -> dict[str, list]:
        """The swept keys (dotted) with their values."""
        return sweep.permutable(self._product)

    def numPermutations(self) -> int:
        """How many parameter permutations; computed, never enumerated."""
        return self._count

    def getPermutation(self, idx: int) -> dict:
        """The metaParameters with every sweep resolved for idx (wraps over runs)."""
        return self._decode(idx % self._count)

    def permutationOf(self, params: dict) -> int | None:
        """The permutation whose resolved parameters are params, or None; O(swept keys)."""
        p = self._finder(params)
        same = p is not None and paramsHash(self.getPermutation(p)) == paramsHash(params)
        return p if same else None

    def getRun(self, idx: int) -> int:
        """Which run idx is: idx // numPermutations()."""
        return idx // self._count

    def fingerprint(self) -> str:
        """A stable hash of the whole experiment dict."""
        return hashlib.blake2b(canonical_json(self._d).encode(), digest_size=10).hexdigest()

    def getExperimentName(self) -> str:
        """d['name'], else the file's folder relative to experiment_directory (or its whole
        folder path when outside it, so two files in different folders never share a name)."""
        if "name" in self._d:
            return str(self._d["name"])
        if self.path is None:
            raise ExperimentError("experiment has neither a 'name' field nor a path")
        path = os.path.abspath(self.path)
        folder = os.path.dirname(path)
        stem = os.path.splitext(os.path.basename(path))[0]
        for base in (self.config.experiment_directory, self.config.root):
            if folder == base:
                return stem
            if folder.startswith(base.rstrip(os.sep) + os.sep):
                return os.path.relpath(folder, base)
        return folder.lstrip(os.sep)

    def _fields(self) -> dict[str, Any]:
        # Top-level scalar fields and the name: fixed for this experiment, so computed once.
        if self._fields_cache is None:
            scalars = (str, int, float, bool)
            top = {
                k: v
                for k, v in self._d.items()
                if isinstance(v, scalars) and k not in _BUILTIN_FIELDS
            }
            if "name" in self._d or self.path is not None:  # else {name} cannot be filled
                top["name"] = self.getExperimentName()
            self._fields_cache = top
            self._available = tuple(sorted({*top, *_BUILTIN_FIELDS}))
        return self._fields_cache

    def savePathFields(self) -> dict[str, Any]:
        """The top-level fields and attributes save_path uses besides params and run ('name'
        only when the JSON sets it: a name from the path already selects the state folder)."""
        used = _check_template(self.config.save_path)
        out = {k: self._d["name"] for k in used & {"name"} if "name" in self._d}
        fields = self._fields()
        for k in sorted(used - set(_BUILTIN_FIELDS)):
            value = fields[k] if k in fields else self._attribute(k)
            if value is not _NONE:
                out[k] = value if k in fields else str(value)
        return out

    def _attribute(self, key: str) -> Any:
        """A placeholder from an attribute of this object (PyExpUtils allowed any), or _NONE."""
        if key.startswith("_") or not (key in self.__dict__ or hasattr(type(self), key)):
            return _NONE
        value = getattr(self, key)
        return _NONE if callable(value) else value

    def _check_fields(self, used: frozenset[str], template: str) -> None:
        """Every placeholder is known and every field it uses is path-safe."""
        fields = self._fields()
        for k in sorted(used):
            if k in fields:
                _check_value(f"field {k}", str(fields[k]), allow_slash=k == "name")
            elif k == "name":
                raise SavePathError(
                    f"save_path {template!r}: {{name}} needs a 'name' field or an experiment file"
                )
            elif k not in _BUILTIN_FIELDS and self._attribute(k) is _NONE:
                known = ", ".join("{" + f + "}" for f in self._available)
                raise SavePathError(
                    f"save_path {template!r}: unknown placeholder {{{k}}}; known: {known} "
                    "and the experiment's attributes"
                )

    def interpolateSavePath(self, idx: int, key: str | None = None) -> str:
        """Fill the config's save_path (or key) with this index's name, params, run and fields."""
        template = key if key is not None else self.config.save_path
        fields = self._fields()
        used = _check_template(template)
        if not used <= self._checked:  # only fields the template uses must be path-safe
            self._check_fields(used, template)
            self._checked = self._checked | used
        values = dict(fields)
        for k in used - fields.keys() - set(_BUILTIN_FIELDS):
            values[k] = self._attribute(k)
            _check_value(f"attribute {k}", str(values[k]), allow_slash=True)
        if "run" in used:
            values["run"] = self.getRun(idx)
        if "params" in used or "params_hash" in used:
            params = self.getPermutation(idx)
            if "params" in used:
                joined = paramsString(params)
                if "/" in joined or "\0" in joined or "-." in joined:  # rare: check each
                    _check_params(sweep.flat_items(params))
                values["params"] = joined
            if "params_hash" in used:
                values["params_hash"] = paramsHash(params)
        path = template.format_map(values)
        _check_components(path)
        return path

    def buildSaveContext(self, idx: int, base: str = "") -> FileSystemContext:
        """A FileSystemContext for idx's save path; base replaces the config's folder."""
        path = self.interpolateSavePath(idx)
        if base:
            root = self.config.root
            if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
                path = os.path.relpath(path, root)
        return FileSystemContext(path, base)

    def __repr__(self) -> str:
        return f"ExperimentDescription({self.path or self._d.get('name')!r})"


@lru_cache(maxsize=64)
def _check_template(template: str) -> frozenset[str]:
    """The placeholder names template uses; SavePathError if it cannot be parsed."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise SavePathError(f"save_path {template!r}: {e}") from None
    roots = frozenset(f.split(".")[0].split("[")[0] for f in fields)
    if "" in roots:
        raise SavePathError(f"save_path {template!r}: empty placeholder {{}}")
    return roots


def _check_value(what: str, text: str, allow_slash: bool = False) -> None:
    parts = text.split("/") if allow_slash else [text]
    if "\0" in text or (not allow_slash and "/" in text) or (allow_slash and text.startswith("/")):
        raise SavePathError(f"{what}={text!r} would add path components to the save path")
    if any(p in ("..", ".") for p in parts):
        raise SavePathError(f"{what}={text!r} would climb out of the results tree")


def _check_params(flat: list[tuple[str, Any]]) -> None:
    for k, v in flat:
        if "/" in k or "\0" in k:
            raise SavePathError(f"parameter name {k!r} would add path components to the save path")
        _check_value(f"parameter {k}", str(v))


def _check_components(path: str) -> None:
    for part in path.split("/"):
        if len(part) * 4 > MAX_COMPONENT_BYTES and len(part.encode()) > MAX_COMPONENT_BYTES:
            raise SavePathError(
                f"save path component of {len(part.encode())} bytes exceeds the filesystem's "
                f"{MAX_COMPONENT_BYTES} ({part[:40]}...); use {{params_hash}} instead of {{params}}"
            )


def loadExperiment(
    path: str,
    Model: type[ExperimentDescription] | Config | None = None,
    config: Config | None = None,
) -> ExperimentDescription:
    """Read an experiment JSON file into Model (ExperimentDescription or a user's subclass)."""
    if isinstance(Model, Config):  # the older positional use: loadExperiment(path, config)
        Model, config = None, Model
    Model = Model or ExperimentDescription
    if not (isinstance(Model, type) and issubclass(Model, ExperimentDescription)):
        raise TypeError(
            f"loadExperiment({path!r}, Model): Model must be ExperimentDescription or a "
            f"subclass of it, got {Model!r}"
        )
    d = read_json(path, ExperimentError)
    path = _original_path(path)
    return Model(d, path=path) if config is None else Model(d, path=path, config=config)


def _original_path(path: str) -> str:
    """The experiment file a pyexp-run snapshot was taken of (it names the state), else path."""
    snapshot = os.environ.get("PYEXP_SNAPSHOT")
    if snapshot and os.path.abspath(path) == os.path.abspath(snapshot):
        return os.environ.get("PYEXP_EXPERIMENT") or path
    return path
