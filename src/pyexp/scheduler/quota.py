"""The file quota a submission will spend, checked before submitting.

Estimate (pure): while a sweep runs, each task has its logs (one per slot, its .idx, Slurm's .out
and .err) and its `started` marker, and each index a lease and a loose completion record until
the task ends (state/footprint.py); results add one folder per index unless the save_path's
folder does not vary per index (no {params}, {params_hash} or {run}). Files left: asked of
the cluster, in this order: `diskusage_report` (Alliance), `lfs quota -u USER MOUNT` (Lustre),
`quota -w` (Linux quota tools, for local and NFS filesystems, which exits 1 when over a quota);
each run with a timeout through scheduler/slurm.py's runner (path overridable by
PYEXP_DISKUSAGE_REPORT, PYEXP_LFS, PYEXP_QUOTA); no answer, or one that cannot be read: unknown,
nothing said. A --local run is checked too: its files land on the same filesystems, and a
command that is not installed costs nothing.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from pyexp.errors import SlurmError

QUOTA_COMMANDS = ("diskusage_report", "lfs", "quota")
QUOTA_TIMEOUT = 15.0  # seconds per command
PER_TASK = 5  # slot log, .idx, .out, .err, started marker (one slot each)
PER_INDEX = 2  # a lease (then a tombstone) and a loose completion record, until folded
_PER_INDEX_FIELDS = ("{params}", "{params_hash}", "{run}")
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


@dataclass(frozen=True)
class Estimate:
    """Files a submission creates at most: pyexp's own and the results' folders."""

    own: int
    results: int

    @property
    def total(self) -> int:
        """Both."""
        return self.own + self.results


@dataclass(frozen=True)
class Left:
    """A quota's files: used and the limit, on the filesystem named."""

    filesystem: str
    used: int
    limit: int

    @property
    def left(self) -> int:
        """Files still allowed."""
        return max(0, self.limit - self.used)


def estimate(indices: int, tasks: int, save_path: str) -> Estimate:
    """The files that indices in tasks create at most (save_path: the config's template)."""
    folder = os.path.dirname(save_path)
    varies = any(f in folder for f in _PER_INDEX_FIELDS)
    return Estimate(PER_TASK * tasks + PER_INDEX * indices, indices if varies else 0)


def refusal(where: str, est: Estimate, left: Left | None) -> str | None:
    """The one line refusing a submission over the files left in quota; None if it fits or
    the quota is unknown."""
    if left is None or est.total <= left.left:
        return None
    return (
        f"{where}: would create up to {est.total:,} files ({est.own:,} pyexp's, {est.results:,} "
        f"results folders) but the file quota of {left.filesystem} has {left.left:,} left "
        f"({left.used:,} of {left.limit:,} used); free files or pass --yes to submit anyway"
    )


Runner = Callable[..., str]  # scheduler/slurm.run: (name, args, timeout, ok=exit statuses)


def files_left(paths: list[str], run: Runner) -> Left | None:
    """The tightest file quota among the filesystems holding paths, as the cluster says; None
    when no command answers in a way that can be read."""
    found = []
    report = _quietly(lambda: parse_diskusage(run("diskusage_report", [], QUOTA_TIMEOUT)))
    linux: list[str] | None = None  # quota -w's words, asked once
    for path in paths:
        real = os.path.realpath(path)
        mount = mount_of(real)
        match = [q for q in report if _holds(q.filesystem, real)] or _lfs(run, mount)
        if not match:
            if linux is None:
                linux = _quietly(lambda: run("quota", ["-w"], QUOTA_TIMEOUT, ok=(0, 1)).split())
            match = _quietly(lambda w, m: parse_quota(w, m, mount_source(m)), linux, mount)
        found += match[:1]
    return min(found, key=lambda q: q.left) if found else None


def _lfs(run: Runner, mount: str) -> list[Left]:
    """What `lfs quota` says of mount."""
    ask = ["quota", "-u", getpass.getuser(), mount]
    return _quietly(lambda: parse_lfs(run("lfs", ask, QUOTA_TIMEOUT), mount))


def _quietly(ask: Callable[..., list], *args) -> list:
    """ask(*args), or [] when its command fails or its answer cannot be read (unknown)."""
    try:
        return ask(*args)
    except (SlurmError, OSError, ValueError, KeyError):
        return []


def _holds(filesystem: str, path: str) -> bool:
    return path == filesystem or path.startswith(filesystem.rstrip("/") + "/")


def mount_of(path: str) -> str:
    """The mount point holding path (path resolved, its nearest existing folder upwards)."""
    here = path
    while not os.path.exists(here):
        here = os.path.dirname(here)
    while not os.path.ismount(here):
        here = os.path.dirname(here)
    return here


def mount_source(mount: str) -> str | None:
    """What is mounted at mount (a device, `server:/export`), as /proc/self/mounts says."""
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = [w.replace("\\040", " ") for w in line.split()[:2]]
            if len(fields) == 2 and fields[1] == mount:
                return fields[0]
    return None


def count(text: str) -> int:
    """A file count as the tools print it: 1049, 500K, 1000k, 1.5M."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([kKmMgG]?)\*?", text.strip())
    if not m:
        raise ValueError(f"not a file count: {text!r}")
    return int(float(m.group(1)) * _SUFFIX[m.group(2).lower()])


_DISKUSAGE = re.compile(r"^\s*(/\S+)\s+\((\w+)\s+([^)]*)\)\s+.*?\s(\S+)/(\S+)\s*$")


def parse_diskusage(text: str) -> list[Left]:
    """Alliance's diskusage_report: one Left per line like
    `/scratch (user me)   1.1 GB/20 TB   1049/1000K`; a /project line names its group's folder
    (`/project/def-prof`)."""
    out = []
    for line in text.splitlines():
        m = _DISKUSAGE.match(line)
        if not m:
            continue
        fs, kind, owner, used, limit = m.groups()
        if fs.rstrip("/") == "/project" and kind == "group":
            fs = f"/project/{owner.strip()}"
        try:
            out.append(Left(fs, count(used), count(limit)))
        except ValueError:
            continue
    return out


def parse_lfs(text: str, mount: str) -> list[Left]:
    """`lfs quota -u USER MOUNT`: the files column, its soft quota (else its hard limit); []
    when there is no limit on files."""
    words = text.split()
    try:
        at = words.index(mount)
    except ValueError:
        return []
    fields = words[at + 1 : at + 9]  # kbytes quota limit grace files quota limit grace
    if len(fields) < 7:
        return []
    used, soft, hard = count(fields[4]), count(fields[5]), count(fields[6])
    limit = soft or hard
    return [Left(mount, used, limit)] if limit else []


def parse_quota(words: list[str], mount: str, source: str | None) -> list[Left]:
    """`quota -w` (or -s, or wrapped) as words: the files column of the filesystem named by its
    source or mount, its soft quota (else its hard limit); [] when it has no limit on files."""
    at = next((i for i, w in enumerate(words) if w in (source, mount)), None)
    if at is None:
        return []
    fields = words[at + 1 : at + 9]  # blocks quota limit [grace] files quota limit [grace]
    over = 1 if fields and fields[0].endswith("*") else 0  # over the space quota: a grace
    files = fields[3 + over : 6 + over]
    if len(files) < 3:
        return []
    used, soft, hard = count(files[0]), count(files[1]), count(files[2])
    limit = soft or hard
    return [Left(mount, used, limit)] if limit else []
