"""Cluster configs: one JSON per cluster, loaded by name or path and validated before submitting."""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field, replace
from importlib import resources
from numbers import Real

from pyexp.errors import ClusterConfigError
from pyexp.state.guard import DEFAULT_INDICES, DEFAULT_SECONDS
from pyexp.timefmt import gigs, hours

DEFAULT_CLUSTER = "local"
_PACKAGE = "pyexp.cluster_configs"

# Options pyexp writes itself, and the field (or place) that sets each one.
RESERVED = {
    "job-name": "pyexp (ledger entry id)",
    "array": "pyexp (the plan)",
    "time": "time_hours",
    "mem-per-cpu": "mem_per_core_gb",
    "mem": "mem_per_core_gb",
    "cpus-per-task": "cores",
    "account": "account (or --account / SBATCH_ACCOUNT)",
    "output": "log_path in config.json",
    "error": "log_path in config.json",
    "signal": "signal_lead_seconds",
    "gpus": "gpus",
    "parsable": "pyexp",
    "wrap": "pyexp",
}


@dataclass(frozen=True)
class ClusterConfig:
    """One cluster's settings for array jobs."""

    name: str
    source: str
    time_hours: float
    cores: int = 1
    indices_per_task: int = 1
    mem_per_core_gb: float | None = None
    account: str | None = None
    account_required: bool = False
    array_throttle: int | None = None
    max_array_size: int = 1001
    signal_lead_seconds: int = 120
    setup: tuple[str, ...] = ()
    sbatch: dict[str, str | None] = field(default_factory=dict)
    whole_node: bool = False
    python: str | None = None
    python_on_path: bool = True  # its folder first on the command's PATH (`python` is the venv's)
    description: str = ""
    max_time_hours: float | None = None  # the cluster's limits: a request beyond them is refused
    cores_per_node: int | None = None
    mem_per_node_gb: float | None = None
    max_queued_jobs: int | None = None  # jobs a user may queue, when Slurm does not say
    max_running_jobs: int | None = None  # jobs a user may run at once: caps farm workers
    gpus: str | None = None  # a model-qualified request, 'h100:1' -> --gpus=h100:1
    gpus_per_node: int | None = None
    gpu_models: tuple[str, ...] = ()  # the models `gpus` may name; () = any
    readonly_on_compute: tuple[str, ...] = ()  # env vars of roots compute nodes cannot write
    purged_after_days: dict[str, int] = field(default_factory=dict)  # env var of a root -> days
    docs: dict[str, str] = field(default_factory=dict)  # field -> the doc page its figure is from
    spec: str = ""  # how to load it again: a shipped name, or the absolute path of the file
    fail_fast_indices: int = DEFAULT_INDICES  # the broken-command guard (runner/guard.py); 0: off
    fail_fast_seconds: float = DEFAULT_SECONDS
    jobs_may_submit_jobs: bool = True  # False: no --until-done (its follow-up job submits)

    @property
    def time(self) -> str:
        """The Slurm time limit, one second under time_hours."""
        return hours(self.time_hours)

    @property
    def mem_per_cpu(self) -> str | None:
        """The Slurm memory per core, or None to leave it to the cluster."""
        return None if self.mem_per_core_gb is None else gigs(self.mem_per_core_gb)

    def with_account(
        self, flag: str | None, env: dict[str, str] | None = None, required: bool = True
    ) -> ClusterConfig:
        """This config with its account: --account, else SBATCH_ACCOUNT, else the file's."""
        env = os.environ if env is None else env
        account = flag or env.get("SBATCH_ACCOUNT") or self.account
        if account is None and self.account_required and required:
            raise ClusterConfigError(
                f"cluster '{self.name}' needs an account: pass --account def-NAME, "
                f"set SBATCH_ACCOUNT, or set 'account' in {self.source}"
            )
        if account is not None:
            _check_text(account, f"{self.source}: account")
        return replace(self, account=account)


_FIELDS = {
    "description": (str,),
    "account": (str, type(None)),
    "account_required": (bool,),
    "time_hours": (Real,),
    "mem_per_core_gb": (Real, type(None)),
    "cores": (int,),
    "indices_per_task": (int,),
    "array_throttle": (int, type(None)),
    "max_array_size": (int,),
    "signal_lead_seconds": (int,),
    "setup": (list,),
    "sbatch": (dict,),
    "whole_node": (bool,),
    "python": (str, type(None)),
    "python_on_path": (bool,),
    "max_time_hours": (Real, type(None)),
    "cores_per_node": (int, type(None)),
    "mem_per_node_gb": (Real, type(None)),
    "max_queued_jobs": (int, type(None)),
    "max_running_jobs": (int, type(None)),
    "gpus": (str, type(None)),
    "gpus_per_node": (int, type(None)),
    "gpu_models": (list,),
    "readonly_on_compute": (list,),
    "purged_after_days": (dict,),
    "docs": (dict,),
    "fail_fast_indices": (int,),
    "fail_fast_seconds": (Real,),
    "jobs_may_submit_jobs": (bool,),
}
_REQUIRED = ("time_hours",)
_COUNTS = (  # fields that count something: at least 1 when set
    "cores", "indices_per_task", "array_throttle", "cores_per_node", "max_queued_jobs",
    "max_running_jobs", "gpus_per_node",
)  # fmt: skip


def known_clusters() -> list[str]:
    """Names of the cluster configs shipped with pyexp."""
    folder = resources.files(_PACKAGE)
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def default_cluster_name(env: dict[str, str] | None = None) -> str:
    """$CC_CLUSTER (set on Alliance clusters), else 'local'."""
    env = os.environ if env is None else env
    return env.get("CC_CLUSTER") or DEFAULT_CLUSTER


def load_cluster(spec: str | None = None) -> ClusterConfig:
    """The cluster config named spec (shipped with pyexp) or at path spec; default: CC_CLUSTER."""
    from_env = not spec and "CC_CLUSTER" in os.environ
    spec = spec or default_cluster_name()
    if spec.endswith(".json") or os.sep in spec or os.path.isfile(spec):
        name = os.path.splitext(os.path.basename(spec))[0]
        path = os.path.abspath(spec)
        return replace(parse_cluster(_read(spec), name, path), spec=path)
    known = known_clusters()
    if spec not in known:
        close = difflib.get_close_matches(spec, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        where = f"$CC_CLUSTER={spec}" if from_env else f"unknown cluster '{spec}'"
        raise ClusterConfigError(
            f"{where}{hint}: no such cluster config; known: {', '.join(known)}; "
            "pass --cluster NAME or --cluster PATH to your own JSON"
        )
    resource = resources.files(_PACKAGE).joinpath(f"{spec}.json")
    with resources.as_file(resource) as path:
        return replace(parse_cluster(_read(str(path)), spec, str(path)), spec=spec)


def _read(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ClusterConfigError(f"{path}: cannot read cluster config: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ClusterConfigError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise ClusterConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    if not isinstance(data, dict):
        raise ClusterConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def parse_cluster(data: dict, name: str, source: str) -> ClusterConfig:
    """Validate a cluster config dict; ClusterConfigError names the file and the field."""
    _check_keys(data, source)
    values = {k: _typed(k, v, source) for k, v in data.items()}
    values["setup"] = tuple(_setup(values.get("setup", []), source))
    values["sbatch"] = _sbatch(values.get("sbatch", {}), source)
    for key in ("gpu_models", "readonly_on_compute"):
        values[key] = tuple(_names(key, values.get(key, []), source))
    values["purged_after_days"] = _days(values.get("purged_after_days", {}), source)
    values["docs"] = _docs(values.get("docs", {}), source)
    config = ClusterConfig(name=name, source=source, **values)
    _check_values(config)
    return config


def _check_keys(data: dict, source: str) -> None:
    for key in data:
        if key not in _FIELDS:
            close = difflib.get_close_matches(key, list(_FIELDS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ClusterConfigError(f"{source}: unknown field '{key}'{hint}")
    for key in _REQUIRED:
        if key not in data:
            raise ClusterConfigError(f"{source}: missing field '{key}'")


def _typed(key: str, value: object, source: str) -> object:
    types = _FIELDS[key]
    # bool is an int in Python; a JSON true is never a count or an amount.
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise ClusterConfigError(f"{source}: '{key}' must be {want}, got {json.dumps(value)}")
    return value


def _setup(lines: list, source: str) -> list[str]:
    for line in lines:
        if not isinstance(line, str):
            raise ClusterConfigError(f"{source}: 'setup' lines must be strings, got {line!r}")
    return lines


def _names(key: str, names: list, source: str) -> list[str]:
    for name in names:
        if not isinstance(name, str) or not name or any(ch in name for ch in ":$/ \n"):
            raise ClusterConfigError(
                f'{source}: \'{key}\' holds names such as "h100" or "HOME", got {json.dumps(name)}'
            )
    return names


def _days(purged: dict, source: str) -> dict[str, int]:
    for var, days in purged.items():
        _names("purged_after_days", [var], source)
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise ClusterConfigError(
                f"{source}: 'purged_after_days' maps an environment variable to whole days, "
                f'e.g. {{"SCRATCH": 60}}; got {json.dumps({var: days})}'
            )
    return purged


def _docs(docs: dict, source: str) -> dict[str, str]:
    for key, page in docs.items():
        if key not in _FIELDS or key in ("docs", "description"):
            raise ClusterConfigError(f"{source}: 'docs' names '{key}', which is not a field")
        if not isinstance(page, str) or not page.strip():
            raise ClusterConfigError(f"{source}: 'docs' of '{key}' must name a doc page")
    return docs


def _sbatch(options: dict, source: str) -> dict[str, str | None]:
    from pyexp.scheduler.sbatch_options import check_option  # lazy: simple-slurm only if asked

    out: dict[str, str | None] = {}
    for name, value in options.items():
        option = check_option(name, f"{source}: sbatch")
        if option in RESERVED:
            raise ClusterConfigError(
                f"{source}: sbatch option '{name}' is set by {RESERVED[option]}, not in 'sbatch'"
            )
        if value is True or value is None:
            out[option] = None  # a flag such as --exclusive
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            out[option] = _check_text(str(value), f"{source}: sbatch option '{name}'")
        else:
            raise ClusterConfigError(
                f"{source}: sbatch option '{name}' must be a string, number, true or null, "
                f"got {json.dumps(value)}"
            )
    return out


def _check_values(c: ClusterConfig) -> None:
    where = c.source
    for key, check in (("time_hours", hours), ("mem_per_core_gb", gigs)):
        value = getattr(c, key)
        try:
            if value is not None:
                check(value)
        except ValueError as e:
            raise ClusterConfigError(f"{where}: '{key}' = {value!r}: {e}") from None
    for key in _COUNTS:
        value = getattr(c, key)
        if value is not None and value < 1:
            raise ClusterConfigError(f"{where}: '{key}' must be at least 1, got {value}")
    if c.fail_fast_indices < 0:
        raise ClusterConfigError(
            f"{where}: 'fail_fast_indices' must be 0 (no guard) or more, got {c.fail_fast_indices}"
        )
    if not 0 < c.fail_fast_seconds < float("inf"):
        raise ClusterConfigError(
            f"{where}: 'fail_fast_seconds' must be a positive number, got {c.fail_fast_seconds}"
        )
    if c.max_array_size < 2:
        raise ClusterConfigError(f"{where}: 'max_array_size' must be at least 2")
    if not 0 <= c.signal_lead_seconds < c.time_hours * 3600 - 1:
        raise ClusterConfigError(
            f"{where}: 'signal_lead_seconds' ({c.signal_lead_seconds}) must be >= 0 and "
            f"shorter than the time limit ({c.time})"
        )
    _check_limits(c)
    _check_gpus(c)
    if c.whole_node and c.mem_per_core_gb is not None:
        raise ClusterConfigError(f"{where}: a whole_node cluster takes no 'mem_per_core_gb'")
    if c.account is not None:
        _check_text(c.account, f"{where}: account")
    if c.python is not None:
        _check_text(c.python, f"{where}: python")


def _check_limits(c: ClusterConfig) -> None:
    """Refuse on the login node what the cluster would refuse, or fail, in the queue."""
    mem = None if c.mem_per_core_gb is None else c.mem_per_core_gb * c.cores
    for asked, what, limit, name, hint in (
        (c.time_hours, "time_hours", c.max_time_hours, "max_time_hours", "fewer indices_per_task"),
        (c.cores, "cores", c.cores_per_node, "cores_per_node", "fewer cores"),
        (mem, "mem_per_core_gb x cores", c.mem_per_node_gb, "mem_per_node_gb", "less memory"),
    ):
        if limit is not None and limit <= 0:
            raise ClusterConfigError(f"{c.source}: '{name}' must be positive, got {limit}")
        if asked is not None and limit is not None and asked > limit:
            raise ClusterConfigError(
                f"{c.source}: {what} = {asked:g} is beyond cluster '{c.name}' limit "
                f"{name} = {limit:g}; ask for {hint}"
            )


def _gpu_request(gpus: str) -> tuple[str, int | None]:
    """'h100:2' -> ('h100', 2); '2' -> ('', 2); (model, None) when the count is not a number."""
    model, _, count = gpus.rpartition(":")
    return model, int(count) if count.isdigit() else None


def _check_gpus(c: ClusterConfig) -> None:
    """Refuse a GPU request the cluster's GPU nodes cannot take: unknown model, too many."""
    if c.gpus is None:
        return
    _check_text(c.gpus, f"{c.source}: gpus")
    model, count = _gpu_request(c.gpus)
    known = ", ".join(c.gpu_models)
    example = f"{c.gpu_models[0] if c.gpu_models else 'h100'}:1"
    if count is None or count < 1:
        raise ClusterConfigError(
            f"{c.source}: gpus '{c.gpus}' must be MODEL:COUNT with COUNT >= 1, e.g. \"{example}\""
        )
    if c.gpu_models and model not in c.gpu_models:
        what = f"unknown GPU model '{model}'" if model else "no GPU model named"
        raise ClusterConfigError(
            f"{c.source}: gpus '{c.gpus}': {what} on cluster '{c.name}'; known: {known} "
            f'(e.g. "gpus": "{example}")'
        )
    if c.gpus_per_node is not None and count > c.gpus_per_node:
        raise ClusterConfigError(
            f"{c.source}: gpus '{c.gpus}' asks for {count} GPUs, but a node of cluster "
            f"'{c.name}' has {c.gpus_per_node} (gpus_per_node); ask for at most {c.gpus_per_node}"
        )


def _check_text(value: str, where: str) -> str:
    # sbatch reads #SBATCH lines itself: a newline would end the directive, a backslash escapes.
    if not value or any(ch in value for ch in "\n\r\0\\"):
        raise ClusterConfigError(f"{where}: {value!r} must be non-empty, one line, no backslash")
    return value
