"""Rendering sbatch scripts from Jinja templates, every value shell-quoted."""

from __future__ import annotations

import os
import shlex
import sys
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from pyexp.errors import PyExpError
from pyexp.timefmt import gigs, hours

if TYPE_CHECKING:
    import jinja2  # lazy: only runs that render a script pay for it

    from pyexp.scheduler.cluster import ClusterConfig
    from pyexp.scheduler.planner import ArrayPlan

DEFAULT_TEMPLATE = "array.sbatch.j2"


class RenderError(PyExpError, ValueError):
    """A value that cannot go into an sbatch script, or a broken template."""


class Shell(str):
    """Text safe to put in a script as is: quoted by the q filter, or trusted by raw."""

    __slots__ = ()


def q(value: Any) -> Shell:
    """Shell-quote a value (shlex.quote); already-quoted text passes unchanged."""
    if isinstance(value, Shell):
        return value
    if value is None:
        raise RenderError("template tried to write None into the script")
    text = str(value)
    # sbatch parses #SBATCH lines itself: a newline would end the directive and start a shell
    # line, and it treats a backslash as an escape even inside single quotes.
    if any(ch < " " or ch in "\x7f\\" for ch in text):
        raise RenderError(
            f"{text!r} cannot go into an sbatch script: control characters and backslashes "
            "are not allowed"
        )
    return Shell(shlex.quote(text))


def printable(value: Any) -> str:
    """value as text that q accepts: control characters and backslashes shown as '?'."""
    return "".join("?" if ch < " " or ch in "\x7f\\" else ch for ch in str(value))


def raw(value: Any) -> Shell:
    """Mark trusted shell code (the cluster config's setup lines) to be written unquoted."""
    return Shell(str(value))


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The Jinja environment: every {{ expression }} goes through q unless marked raw."""
    import jinja2  # lazy: only runs that render a script pay for it

    env = jinja2.Environment(
        finalize=q,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["q"] = q
    env.filters["raw"] = raw
    env.filters["printable"] = printable
    return env


@lru_cache(maxsize=8)
def load_template(path: str | None = None, shipped: str = DEFAULT_TEMPLATE) -> jinja2.Template:
    """The template at path (--template), else the one named shipped that pyexp ships."""
    import jinja2  # lazy: only runs that render a script pay for it

    try:
        if path is None:
            text = resources.files("pyexp.templates").joinpath(shipped).read_text("utf-8")
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        return environment().from_string(text)
    except OSError as e:
        raise RenderError(f"{path}: cannot read template: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise RenderError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except jinja2.TemplateSyntaxError as e:
        raise RenderError(f"{path or DEFAULT_TEMPLATE}:{e.lineno}: {e.message}") from None


def log_pattern(log_dir: str, job_name: str, suffix: str) -> str:
    """Slurm's --output/--error pattern: one file per array task, named after the job."""
    # Slurm expands %-patterns in these paths; a literal % in the folder is written %%.
    return os.path.join(log_dir.replace("%", "%%"), f"{job_name}_%a.{suffix}")


def array_context(
    plan: ArrayPlan,
    cluster: ClusterConfig,
    *,
    job_name: str,
    ledger: str,
    log_dir: str,
    experiment: str,
    workdir: str | None = None,
    config: str | None = None,
    grace: int | None = None,
) -> dict[str, Any]:
    """Everything the array template needs; values are raw, the template quotes them."""
    lead = cluster.signal_lead_seconds
    return {
        "job_name": job_name,
        "array": plan.array_spec,
        "tasks": plan.task_count,
        "indices": plan.indices,
        "time": hours(plan.time_hours),
        "cores": cluster.cores,
        "whole_node": cluster.whole_node,
        "mem_per_cpu": gigs(plan.mem_per_core_gb) if plan.mem_per_core_gb else cluster.mem_per_cpu,
        "gpus": cluster.gpus,
        "account": cluster.account,
        "output": log_pattern(log_dir, job_name, "out"),
        "error": log_pattern(log_dir, job_name, "err"),
        "signal": f"B:USR1@{lead}" if lead else None,
        "sbatch": sorted(cluster.sbatch.items()),
        "setup": list(cluster.setup),
        "workdir": workdir or os.getcwd(),
        "config": config,
        "grace": grace,
        "experiment": experiment,
        "python": cluster.python or sys.executable,
        "python_on_path": cluster.python_on_path,
        "ledger": ledger,
        "cluster": cluster.name,
    }


def render(
    context: dict[str, Any], template: str | None = None, shipped: str = DEFAULT_TEMPLATE
) -> str:
    """The script text for one array (or, with shipped, another job pyexp ships a template of)."""
    import jinja2  # lazy: only runs that render a script pay for it

    try:
        return load_template(template, shipped).render(context)
    except jinja2.UndefinedError as e:
        raise RenderError(f"{template or DEFAULT_TEMPLATE}: {e.message}") from None
