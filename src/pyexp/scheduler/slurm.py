"""The only place that runs Slurm commands: sbatch, squeue, scancel, scontrol, sacct and sacctmgr,
with timeouts.

Each command's path can be overridden by environment (PYEXP_SBATCH, PYEXP_SQUEUE,
PYEXP_SCANCEL, PYEXP_SCONTROL, PYEXP_SACCT, PYEXP_SACCTMGR), and the timeout by
PYEXP_SLURM_TIMEOUT (seconds), so tests can inject fakes.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import signal
import subprocess

from pyexp.environment import slurm_command, slurm_timeout
from pyexp.errors import SlurmError
from pyexp.scheduler.job_limits import JobLimits, parse_assoc_mgr, parse_sacctmgr
from pyexp.standing.slurm_states import QueueSnapshot
from pyexp.state.ledger import entry_id_from_job_name

COMMANDS = ("sbatch", "squeue", "scancel", "scontrol", "sacct", "sacctmgr")  # all we ever run
GRACE_MARGIN_SECONDS = 4  # after the grace: SIGKILL, reap, record attempts, release leases


class SlurmUncertain(SlurmError):
    """Slurm may have done it anyway: the command timed out, or printed what we cannot read."""


SQUEUE_FORMAT = "%i|%j|%T"
_JOB_ID = re.compile(r"(\d+)(?:;\S+)?")
_RANGE = re.compile(r"(\d+)(?:-(\d+)(?::(\d+))?)?")
_LOST_ANSWER = re.compile(r"timed? ?out|socket|connection|unable to contact", re.IGNORECASE)


def available() -> bool:
    """Whether squeue can be found, i.e. whether this machine talks to a Slurm cluster."""
    return shutil.which(slurm_command("squeue")) is not None


def run(
    name: str, args: list[str], timeout: float | None = None, ok: tuple[int, ...] = (0,)
) -> str:
    """Run a Slurm command and return its stdout; SlurmError with one line on any failure (an
    exit status not in ok)."""
    exe = slurm_command(name)
    timeout = slurm_timeout() if timeout is None else timeout
    try:
        proc = subprocess.Popen(
            [exe, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # so a timeout kills the whole command, children included
        )
    except FileNotFoundError:
        raise SlurmError(f"{name}: command not found ({exe}); no Slurm here? try --local") from None
    except PermissionError:
        raise SlurmError(f"{name}: not executable ({exe})") from None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise SlurmUncertain(f"{name} did not answer within {timeout:g} s") from None
    if proc.returncode not in ok:
        message = f"{name} failed (exit {proc.returncode}): {_first_line(err or out)}"
        # "Socket timed out on send/recv": the controller may have queued the job anyway.
        raise (SlurmUncertain if _LOST_ANSWER.search(err or out) else SlurmError)(message)
    return out


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


def sbatch(script: str, timeout: float | None = None) -> str:
    """Submit a script with sbatch --parsable; returns the job id."""
    return parse_job_id(run("sbatch", ["--parsable", script], timeout))


def parse_job_id(out: str) -> str:
    """The job id in sbatch --parsable output ('jobid' or 'jobid;cluster')."""
    match = _JOB_ID.fullmatch(out.strip())
    if match is None:
        shown = out.strip()[:80] or "nothing"
        raise SlurmUncertain(f"sbatch printed {shown!r}, not a job id")
    return match.group(1)


def queue_snapshot(timeout: float | None = None) -> QueueSnapshot:
    """Our pyexp array tasks that squeue shows, with their states, recently ended ones too."""
    # -t all: tasks that ended within MinJobAge (CANCELLED while pending, ...) say how they ended.
    out = run("squeue", ["--me", "-a", "-h", "-r", "-t", "all", "-o", SQUEUE_FORMAT], timeout)
    return parse_squeue(out)


def parse_squeue(text: str) -> QueueSnapshot:
    """Parse `squeue -h -r -o '%i|%j|%T'` lines; jobs that are not pyexp arrays are ignored."""
    tasks: dict[tuple[str, int], str] = {}
    names: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3:
            continue
        job, name, state = parts[0], "|".join(parts[1:-1]), parts[-1].strip()
        entry = entry_id_from_job_name(name.strip())
        if entry is None or "_" not in job:
            continue
        names[entry] = name.strip()
        for task in expand_task_ids(job.split("_", 1)[1]):
            tasks[(entry, task)] = state
    return QueueSnapshot(tasks, names)


def expand_task_ids(spec: str) -> list[int]:
    """Array task ids of an squeue id suffix: '4', '[5-99%4]', '[1,3,5-7]', '[0-10:2]'."""
    spec = spec.strip()
    if spec.startswith("["):
        spec = spec[1:].split("]", 1)[0]
    spec = spec.split("%", 1)[0]
    ids: list[int] = []
    for part in spec.split(","):
        match = _RANGE.fullmatch(part.strip())
        if match is None:
            raise SlurmError(f"squeue showed an array task id we cannot read: {spec!r}")
        first, last, step = match.groups()
        ids.extend(range(int(first), int(last or first) + 1, int(step or 1)))
    return ids


def job_state(job_id: str, timeout: float | None = None) -> str | None:
    """The state squeue shows for one (non-array) job, ended ones within MinJobAge too; None
    when squeue no longer knows it."""
    try:
        out = run("squeue", ["-h", "-t", "all", "-j", job_id, "-o", "%T"], timeout)
    except SlurmUncertain:
        raise
    except SlurmError as e:
        if "invalid job id" in str(e).lower():
            return None
        raise
    states = out.split()
    return states[0] if states else None


def scancel(job_ids: list[str], timeout: float | None = None) -> None:
    """Cancel these jobs (whole arrays: pending and running tasks)."""
    if job_ids:
        run("scancel", list(job_ids), timeout)


def user_jobs(timeout: float | None = None) -> int:
    """How many jobs the user has queued or running, each array task counted (as Slurm counts
    them against MaxSubmitJobs)."""
    out = run("squeue", ["--me", "-h", "-r", "-o", "%i"], timeout)
    jobs = [line.strip() for line in out.splitlines() if line.strip()]
    # -r lists one task a line; a folded '123_[5-99%4]' (older squeue) still counts each task.
    return sum(len(expand_task_ids(job.split("_", 1)[1])) if "_" in job else 1 for job in jobs)


def job_limits(timeout: float | None = None) -> JobLimits | None:
    """The user's MaxSubmitJobs and MaxJobs from sacctmgr, else from scontrol's association
    manager; None when neither answers (no accounting database, or no limits recorded)."""
    user = os.environ.get("USER") or getpass.getuser()
    asks = (
        ("sacctmgr", ["show", "assoc", f"user={user}", "format=MaxSubmitJobs,MaxJobs", "-n", "-P"]),
        ("scontrol", ["show", "assoc_mgr", f"users={user}", "flags=assoc"]),
    )
    for (name, args), parse in zip(asks, (parse_sacctmgr, parse_assoc_mgr), strict=True):
        if shutil.which(slurm_command(name)) is None:
            continue
        try:
            limits = parse(run(name, args, timeout))
        except SlurmError:
            continue
        if limits is not None and (limits.max_submit, limits.max_jobs) != (None, None):
            return limits
    return None


def show_config(timeout: float | None = None) -> str:
    """`scontrol show config`'s text, or "" when it cannot be read."""
    try:
        return run("scontrol", ["show", "config"], timeout)
    except SlurmError:
        return ""


def _config_number(config: str, name: str) -> int | None:
    match = re.search(rf"^\s*{name}\s*=\s*(\d+)", config, re.MULTILINE)
    return int(match.group(1)) if match else None


def max_array_size(config: str) -> int | None:
    """MaxArraySize from `scontrol show config`'s text, or None when it does not say."""
    return _config_number(config, "MaxArraySize")


def grace_seconds(config: str) -> int | None:
    """The runner's stop grace that ends before Slurm SIGKILLs it: KillWait less a margin for
    recording attempts and releasing leases; None when `scontrol show config` does not say."""
    kill_wait = _config_number(config, "KillWait")
    return None if kill_wait is None else max(1, kill_wait - GRACE_MARGIN_SECONDS)


def sacct_states(job_ids: list[str], timeout: float | None = None) -> dict[str, str] | None:
    """Each array task's state by sacct ('123_4' -> 'OUT_OF_MEMORY', pending ones too), or None
    when sacct cannot say (no accounting here)."""
    if not job_ids or shutil.which(slurm_command("sacct")) is None:
        return None
    args = ["-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(job_ids)]
    try:
        out = run("sacct", args, timeout)
    except SlurmError:  # no slurmdbd: accounting is optional
        return None
    return parse_sacct(out)


def parse_sacct(text: str) -> dict[str, str]:
    """Parse `sacct -n -P -X -o JobID,State` lines; a pending array's '123_[5-9]' is expanded."""
    states = {}
    for line in text.splitlines():
        job, _, state = line.strip().partition("|")
        array, sep, spec = job.partition("_")
        if not (sep and state.strip()):
            continue  # not an array task
        try:
            tasks = expand_task_ids(spec)
        except SlurmError:
            continue  # accounting is a hint: an unreadable line is no answer for that task
        for task in tasks:
            states[f"{array}_{task}"] = state.split()[0]  # 'CANCELLED by 0' -> 'CANCELLED'
    return states
