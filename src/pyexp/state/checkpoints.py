"""Checkpoint folders: where an index's own work survives its job.

One folder per (parameters, run) of an experiment's work scope, named by the record key
(`<state>/checkpoints/<params hash>-<run>`), so every attempt of the same work finds it and an
edited sweep never hands one parameter set's checkpoint to another. The command gets it as
$PYEXP_CHECKPOINT_DIR (Python: pyexp.checkpoint_dir()). It is created on first use, not per
index: by pyexp.checkpoint_dir() and save_checkpoint() in the command (a command that writes there
itself creates it, `mkdir -p "$PYEXP_CHECKPOINT_DIR"`), and by the runner before the command
starts only when an earlier attempt of the work is on record (it may have saved there: the
folder is cleaned of a killed save and stamped). A done index's folder is removed by its runner
when it ends (sweep_done: one listing, not a call per index), and at rest by pyexp-submit (unless
config.json says "keep_checkpoints": true). It lives under state_path, never under save_path:
it is never counted as results.

save_checkpoint() writes a temp file, fsyncs it and renames it over the last one, so a command
killed while saving (even by SIGKILL) leaves the previous complete checkpoint for the next attempt;
its progress (an optional step and fraction done) is written the same way, after it.

A stopped attempt (time-limit signal, preemption, scancel) whose folder changed while it ran is
*continuing*: progress, not failure. It is *stalled* (charged, so nothing runs forever) when its
progress mark equals that of the previous stop: the step saved, else the fraction, else a digest
of the files' sizes, heads and tails.

Only the holder of the index's lease writes there, and the stamps that decide "changed" are
taken on the node that ran the command (its own writes are visible to it, even on NFS). Not
promised: a save killed between the state and its progress leaves the new state with the old
progress (the mark lags one save); pickles are trusted (they are the command's own).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import time
from typing import Any

from pyexp.environment import checkpoint_folder
from pyexp.errors import RunnerError
from pyexp.state.atomic import TEMP_PREFIX, clean_temp, scan_names, write_atomic
from pyexp.state.attempts import CONTINUING, STALLED

STATE_FILE = "checkpoint.pkl"
PROGRESS_FILE = "progress.json"
_DIGEST_BYTES = 1 << 20  # read from each end of a file for the progress digest


def folder_of(root: str, key: str) -> str:
    """The checkpoint folder of record key under root (StateDirs.checkpoints)."""
    return os.path.join(root, key)


def prepare(folder: str) -> tuple:
    """Create folder (and its parents) if needed, without the temp files of a save killed
    midway (called under the index's lease: nobody else saves there); its stamp(). A folder
    this call created is empty: neither cleaned nor read (no round trip to the server). An
    OSError names it when that fails."""
    try:
        os.mkdir(folder)
        return ()
    except FileExistsError:
        pass
    except FileNotFoundError:  # its parents first
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise OSError(e.errno, e.strerror, folder) from e
    except OSError as e:
        raise OSError(e.errno, e.strerror, folder) from e
    clean_temp(folder, older_than=0)
    return stamp(folder)


def stamp(folder: str) -> tuple:
    """What the folder holds now, cheaply (names, sizes, modification times; temp files of an
    unfinished save left out): two equal stamps mean nothing was saved in between."""
    try:
        with os.scandir(folder) as it:
            entries = [e for e in it if not e.name.startswith(TEMP_PREFIX)]
            return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries))
    except OSError:
        return ()


def age(folder: str) -> float | None:
    """Seconds since the folder's newest file was saved; None when it holds none."""
    saved = stamp(folder)
    return time.time() - max(m for _, _, m in saved) / 1e9 if saved else None


def progress(folder: str) -> dict:
    """The progress saved with the last checkpoint ({'step': ..., 'fraction': ...}); {} if none."""
    try:
        with open(os.path.join(folder, PROGRESS_FILE)) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def mark(folder: str) -> str:
    """The progress mark of the folder: its step, else its fraction, else a digest of its files."""
    saved = progress(folder)
    for field in ("step", "fraction"):
        if saved.get(field) is not None:
            return f"{field}:{saved[field]}"
    digest = hashlib.blake2b(digest_size=8)
    for name, size, _ in stamp(folder):
        digest.update(f"{name}:{size}".encode())
        with contextlib.suppress(OSError), open(os.path.join(folder, name), "rb") as f:
            digest.update(f.read(_DIGEST_BYTES))
            if size > 2 * _DIGEST_BYTES:
                f.seek(-_DIGEST_BYTES, os.SEEK_END)
                digest.update(f.read(_DIGEST_BYTES))
    return f"digest:{digest.hexdigest()}"


def stop_outcome(folder: str, before: tuple, outcome: str, last: dict | None) -> tuple[str, dict]:
    """The outcome of an attempt stopped with outcome (timeout, preempted) and its checkpoint
    details: continuing if the folder changed since before, stalled if its mark equals the last
    attempt's (last: that attempt's record), else outcome unchanged."""
    if stamp(folder) == before:
        return outcome, {}
    now = mark(folder)
    details = {"checkpoint_mark": now}
    stalled = last is not None and last.get("checkpoint_mark") == now
    return (STALLED if stalled else CONTINUING), details


def remove(folder: str) -> None:
    """Remove a done index's checkpoint folder; one that cannot be removed is left (it is state,
    never results); an empty one in one call, not a listing and a removal."""
    try:
        os.rmdir(folder)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)


def sweep_done(root: str, done: set[str] | dict[str, float]) -> None:
    """Remove the folders under root of done record keys (one listing; an unreadable root is
    left as it is)."""
    with contextlib.suppress(OSError):
        for name in [n for n in scan_names(root) if n in done]:
            remove(os.path.join(root, name))


def remove_empty(folder: str) -> None:
    """Remove the folder of an index that saved nothing (so failures leave no folder behind)."""
    with contextlib.suppress(OSError):  # not empty: a checkpoint to continue from
        os.rmdir(folder)


def checkpoint_dir() -> str:
    """The current index's checkpoint folder, created if needed (inside pyexp-run's command or a
    pyexp.claim() job)."""
    folder = _named_folder()
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise RunnerError(
            f"{folder}: the checkpoint folder cannot be created ({e.strerror}); "
            "free space or quota under state_path"
        ) from None
    return folder


def _named_folder() -> str:
    folder = checkpoint_folder()
    if folder is None:
        raise RunnerError(
            "no checkpoint folder: PYEXP_CHECKPOINT_DIR is unset; pyexp-run sets it for each "
            "index's command, pyexp.claim() inside `with job:`"
        )
    return folder


def save_checkpoint(state: Any, step: int | None = None, fraction: float | None = None) -> str:
    """Save state (any picklable object) as the current index's checkpoint, atomically, with its
    progress: step (e.g. the training step) and fraction (0..1 of the index's work done);
    returns the file written."""
    folder = checkpoint_dir()
    path = os.path.join(folder, STATE_FILE)
    write_atomic(path, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    write_atomic(os.path.join(folder, PROGRESS_FILE), json.dumps(_progress(step, fraction)))
    return path


def _progress(step: int | None, fraction: float | None) -> dict:
    if fraction is not None and not 0 <= fraction <= 1:
        raise ValueError(f"save_checkpoint: fraction must be between 0 and 1, got {fraction!r}")
    return {"step": step, "fraction": fraction}


def load_checkpoint(default: Any = None) -> Any:
    """The current index's last saved checkpoint, else default (the first attempt)."""
    try:
        with open(os.path.join(_named_folder(), STATE_FILE), "rb") as f:
            return pickle.load(f)
    except FileNotFoundError:
        return default
