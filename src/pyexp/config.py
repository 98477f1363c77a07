"""config.json: where results, logs, state and experiments live.

Which config.json: the nearest one from the experiment file's folder upwards, else the nearest
from the working directory upwards, else $PYEXP_CONFIG, else the defaults. So every command gives
the same answer from any folder. (Array tasks use the config their script names: see pyexp-run.)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from typing import Any

from pyexp.environment import config_file
from pyexp.errors import ConfigError, PyExpError

DEFAULTS = {
    "save_path": "results/{name}/{params}/{run}",
    "log_path": "logs",
    "state_path": ".pyexp",
    "experiment_directory": "experiments",
    "command": None,
    "keep_checkpoints": False,  # keep an index's checkpoint folder once it is done
    "max_log_bytes": 10_000_000,  # of each attempt's output kept in its log (head and tail)
    "store_only": False,  # results go only to the results store: no folder from save_path
}
_PATH_KEYS = ("log_path", "state_path", "experiment_directory")


@dataclass(frozen=True)
class Config:
    """Resolved settings; paths are absolute (save_path is a template, absolute when relative)."""

    root: str
    save_path: str
    log_path: str
    state_path: str
    experiment_directory: str
    command: str | None
    source: str | None  # the config.json read, or None for defaults
    keep_checkpoints: bool = False
    max_log_bytes: int = 10_000_000
    store_only: bool = False


def find_config_file(start: str, first: str | None = None) -> str | None:
    """The nearest config.json from first upwards, else from start upwards, else $PYEXP_CONFIG."""
    for folder in ([first] if first else []) + [start]:
        if found := nearest_config(folder):
            return found
    if env := config_file():
        if not os.path.isfile(env):
            raise ConfigError(f"PYEXP_CONFIG={env}: no such file")
        return os.path.abspath(env)
    return None


def nearest_config(start: str) -> str | None:
    """The nearest config.json in start or a folder above it."""
    here = os.path.abspath(start)
    while True:
        candidate = os.path.join(here, "config.json")
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def default_root(folder: str, cwd: str) -> str:
    """Where the defaults are anchored without config.json: the folder above the 'experiments'
    folder holding the experiment, so that the answer is the same from any folder; else cwd."""
    here = os.path.abspath(folder)
    while os.path.dirname(here) != here:
        if os.path.basename(here) == DEFAULTS["experiment_directory"]:
            return os.path.dirname(here)
        here = os.path.dirname(here)
    return cwd


def load_config(path: str | None, cwd: str | None = None) -> Config:
    """Read and validate a config.json (None: defaults relative to cwd)."""
    raw: dict = {}
    root = os.path.abspath(cwd or os.getcwd())
    if path is not None:
        root = os.path.dirname(os.path.abspath(path))
        raw = _read_json_object(path)
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    merged = {**DEFAULTS, **raw}
    for key, value in merged.items():
        if key in ("keep_checkpoints", "store_only"):
            if not isinstance(value, bool):
                raise ConfigError(f"{path}: '{key}' must be true or false, got {value!r}")
        elif key == "max_log_bytes":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(
                    f"{path}: 'max_log_bytes' must be a whole number of bytes (0: no cap), "
                    f"got {value!r}"
                )
        elif key != "command" and not isinstance(value, str):
            raise ConfigError(f"{path}: '{key}' must be a string, got {value!r}")
        if key == "command" and value is not None and not isinstance(value, str):
            raise ConfigError(f"{path}: 'command' must be a string, got {value!r}")
    resolved = {k: _absolute(root, merged[k]) for k in (*_PATH_KEYS, "save_path")}
    return Config(
        root=root,
        command=merged["command"],
        source=path,
        keep_checkpoints=merged["keep_checkpoints"],
        max_log_bytes=merged["max_log_bytes"],
        store_only=merged["store_only"],
        **resolved,
    )


def _absolute(root: str, value: str) -> str:
    return os.path.normpath(os.path.join(root, os.path.expanduser(value)))


def read_json(path: str, error: type[PyExpError]) -> Any:
    """The JSON file at path, parsed; error (one line: path, and line:column) if it cannot be."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None


def _read_json_object(path: str) -> dict:
    data = read_json(path, ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


@cache
def getConfig() -> Config:
    """The process's config, read once: the nearest config.json from the working directory
    upwards, else $PYEXP_CONFIG, else the defaults."""
    return load_config(find_config_file(os.getcwd()))


def config_for_experiment(path: str) -> Config:
    """The config of the experiment file at path: the nearest config.json from its folder
    upwards, else from the working directory upwards, else $PYEXP_CONFIG, else the defaults."""
    folder, cwd = os.path.dirname(os.path.abspath(path)), os.getcwd()
    found = find_config_file(cwd, folder)
    return load_config(found, default_root(folder, cwd) if found is None else None)
