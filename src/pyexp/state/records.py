"""Completion records: one fact per (canonical parameters, run), written atomically on success.

Each completion is a loose file `<hash>-<run>`. A writer folds many loose files into a segment
`segments/seg-<uuid>` (write the segment, then delete what it holds), so asking "what is done"
costs a few directory reads and file reads, not one stat per index. Contracts:
- reading never writes: completed(compact=False) and is_complete() only read; with compact=True
  the fold is an optimisation done only when the folder is writable, and its failure (read-only
  mount, quota, no space) never reaches the reader.
- a fold writes only the loose records into a new segment; segments are merged into one only
  when there are more than MERGE_AT; temp files of folds killed midway are removed after an hour.
- a segment starts with `pyexp-segment 1 <count> <sha256 of the rest>` (pyexp 0.1's headerless
  segments are read when every line is a whole key); one that does not match
  (truncated, overwritten, binary junk) raises StateCorrupt naming the file and the repair
  command, so finished work is never taken for missing; repair_records() rebuilds the folder.
- a segment that vanishes while being read (a concurrent merge) makes the reader list again, a
  bounded number of times with backoff.
- writing a record that fails raises an OSError naming the record's file.
- durations(): how long completed indices took, for planning and ETAs; a fold keeps the
  durations of the records it folds in `durations/dur-<uuid>` (merged with the segments), so
  reading them costs a handful of file reads plus a bounded sample of loose records.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field

from pyexp.errors import PyExpError
from pyexp.experiment import paramsHash
from pyexp.state.atomic import clean_temp, scan_names, write_atomic

SEGMENTS = "segments"
DURATIONS = "durations"
DAMAGED = "damaged"
COMPACT_AT = 2000  # loose records before a writer folds them into one segment file
MERGE_AT = 16  # segments before a fold merges them into one
_HEADER = b"pyexp-segment 1 "
_KEY = re.compile(rb"[0-9a-f]+-[0-9]+")
_RELISTS = 8


class StateCorrupt(PyExpError, RuntimeError):
    """A state file is damaged: nothing is decided from it until it is repaired."""


def record_key(params: dict, run: int) -> str:
    """The record name of (params, run): independent of the index."""
    return f"{paramsHash(params)}-{run}"


class CompletionRecords:
    """The completion records of one experiment, in one folder on the shared filesystem."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._segments_seen: dict[str, frozenset[str]] = {}
        self._view: set[str] = set()  # completed() as last read, plus our own records
        self._view_at = -float("inf")  # when (monotonic)

    def mark_complete(self, params: dict, run: int, info: dict | None = None) -> None:
        """Record that (params, run) finished successfully."""
        key = record_key(params, run)
        body = {"params": params, "run": run, "time": time.time(), **(info or {})}
        write_atomic(os.path.join(self.folder, key), json.dumps(body))
        self._view.add(key)

    def known_complete(self, key: str, within: float) -> bool:
        """Whether key is complete in a view of the folder read at most within seconds ago
        (read again when older) or recorded by this object: no round trip between reads.
        Asked under the key's lease with within <= D/2 (D: the lease duration), this is as good
        as a fresh check: a record written before its tombstone was removed (2 D after it was
        written, the record right after it) is over 1.5 D old at the view's read, longer than
        any cache lasts; a younger one still has its tombstone, and the exclusive create that
        took the key would have met it (state/leases.py)."""
        if time.monotonic() - self._view_at > within:
            self.completed(compact=False)
        return key in self._view

    def is_complete(self, params: dict, run: int) -> bool:
        """Whether (params, run) has a record (a stat, then the segment folder if needed)."""
        key = record_key(params, run)
        if os.path.exists(os.path.join(self.folder, key)):
            return True
        return any(key in keys for keys in self._segments().values())

    def completed(self, compact: bool = True) -> set[str]:
        """Every completed record key; with compact, a writable folder's many loose records
        are folded into a segment (never failing the read)."""
        read_at = time.monotonic()
        loose = self._loose()
        segments = self._segments()
        keys = set(loose).union(*segments.values())
        self._view, self._view_at = set(keys), read_at
        if compact and len(loose) >= COMPACT_AT and os.access(self.folder, os.W_OK):
            with contextlib.suppress(OSError):
                self._fold(loose, segments)
        return keys

    def fold(self, keys: dict[str, float] | None = None) -> None:
        """Fold loose records into a segment: keys (a task's own when it ends, with their
        durations: no record is read), else all and every segment merged into one (a writer at
        rest); an optional chore that never raises (a damaged or unwritable folder is left)."""
        with contextlib.suppress(OSError, StateCorrupt):
            mine = [k for k in self._loose() if keys is None or k in keys]
            segments = self._segments()
            if mine or (keys is None and len(segments) > 1):
                self._fold(mine, segments, merge=keys is None or None, known=keys or {})

    def durations(self, sample: int = 200) -> list[float]:
        """Seconds each completed index took: every folded record's, and up to sample loose
        ones' (an estimate for planning: damaged or missing figures are skipped)."""
        out = [d for name in scan_names(self._durations_dir()) for d in self._durations_in(name)]
        for name in self._loose()[:sample]:
            with contextlib.suppress(OSError, ValueError, TypeError, LookupError):
                out.append(float(_read_json(os.path.join(self.folder, name))["duration"]))
        return out

    def _loose(self) -> list[str]:
        return [n for n in scan_names(self.folder) if n not in (SEGMENTS, DAMAGED, DURATIONS)]

    def _durations_dir(self) -> str:
        return os.path.join(self.folder, DURATIONS)

    def _durations_in(self, name: str) -> list[float]:
        try:
            with open(os.path.join(self._durations_dir(), name), encoding="ascii") as f:
                return [float(x) for x in f.read().split()]
        except (OSError, ValueError):
            return []

    def _segments(self) -> dict[str, frozenset[str]]:
        folder = os.path.join(self.folder, SEGMENTS)
        for attempt in range(_RELISTS):
            names = scan_names(folder)
            if self._read_new(folder, names):
                self._segments_seen = {n: self._segments_seen[n] for n in names}
                return dict(self._segments_seen)
            # Merged away by a writer meanwhile; the segment that holds its keys was written
            # before this one was deleted, so list again.
            time.sleep(0.005 * 2**attempt)
        raise StateCorrupt(f"{folder}: segments kept vanishing while being read; try again")

    def _read_new(self, folder: str, names: list[str]) -> bool:
        """Read the segments not seen yet; False if one vanished meanwhile."""
        for name in names:
            if name not in self._segments_seen:
                try:
                    self._segments_seen[name] = read_segment(os.path.join(folder, name))
                except FileNotFoundError:
                    return False
        return True

    def _fold(
        self,
        loose: list[str],
        segments: dict[str, frozenset[str]],
        merge: bool | None = None,
        known: dict[str, float] | None = None,
    ) -> None:
        # Safe with concurrent folders and writers: a key is deleted only after a segment holds it.
        folder = os.path.join(self.folder, SEGMENTS)
        clean_temp(self.folder)
        clean_temp(folder)
        keys = {k for k in loose if _KEY.fullmatch(k.encode())}
        merge = merge or len(segments) >= MERGE_AT
        self._fold_durations(keys, merge, known or {})
        self._write_segment(folder, keys.union(*segments.values()) if merge else keys)
        for n in loose:
            _unlink_quietly(os.path.join(self.folder, n))
        for n in segments if merge else ():
            _unlink_quietly(os.path.join(folder, n))
            self._segments_seen.pop(n, None)

    def _fold_durations(self, keys: set[str], merge: bool, known: dict[str, float]) -> None:
        # Written before the records are deleted, so no duration is lost with them; merged
        # along with the segments so the folder stays a handful of files.
        old = scan_names(self._durations_dir()) if merge else []
        figures = [d for name in old for d in self._durations_in(name)]
        figures += [known[k] for k in keys if k in known]
        for k in keys - set(known):
            with contextlib.suppress(OSError, ValueError, TypeError, LookupError):
                figures.append(float(_read_json(os.path.join(self.folder, k))["duration"]))
        text = "".join(f"{d:.3f}\n" for d in figures)
        write_atomic(os.path.join(self._durations_dir(), f"dur-{uuid.uuid4().hex}"), text)
        for name in old:
            _unlink_quietly(os.path.join(self._durations_dir(), name))

    def _write_segment(self, folder: str, keys) -> None:
        name = f"seg-{uuid.uuid4().hex}"
        write_atomic(os.path.join(folder, name), encode_segment(keys))
        self._segments_seen[name] = frozenset(keys)


def encode_segment(keys) -> bytes:
    """A segment file's bytes: the header (count, checksum), then one key a line."""
    keys = sorted(keys)
    body = "".join(f"{k}\n" for k in keys).encode()
    return _HEADER + f"{len(keys)} {hashlib.sha256(body).hexdigest()}\n".encode() + body


def read_segment(path: str) -> frozenset[str]:
    """The keys of a segment file; StateCorrupt if it fails its check."""
    with open(path, "rb") as f:
        data = f.read()
    keys, why = _decode_segment(data)
    if why:
        raise StateCorrupt(
            f"{path}: damaged completion segment ({why}); "
            "run `pyexp-repair EXPERIMENT.json` to rebuild it"
        )
    return keys


def _decode_segment(data: bytes) -> tuple[frozenset[str], str]:
    """(keys, "") for a sound segment; (the keys that look sound, why) for a damaged one."""
    head, _, body = data.partition(b"\n")
    if not head.startswith(_HEADER):
        body = data
    lines = body.split(b"\n")  # the last part is empty unless the file was cut mid-line
    whole = frozenset(k.decode() for k in lines[:-1] if _KEY.fullmatch(k))
    if not head.startswith(_HEADER):
        # pyexp 0.1 wrote segments without a header: sound if every line is a whole key.
        legacy = data.endswith(b"\n") and len(whole) == len(lines) - 1
        return whole, "" if legacy else "no header"
    count, _, digest = head[len(_HEADER) :].partition(b" ")
    if digest.decode("ascii", "replace") != hashlib.sha256(body).hexdigest():
        return whole, "checksum mismatch"
    if not count.isdigit() or int(count) != len(whole) or len(whole) != len(lines) - 1:
        return whole, "count mismatch"
    return whole, ""


@dataclass
class RepairReport:
    """What repair_records did."""

    segments: int = 0  # segments checked
    damaged: list[str] = field(default_factory=list)  # where damaged segments were moved
    salvaged: int = 0  # keys kept from damaged segments
    lost: int = 0  # keys a damaged segment's header counts but that could not be read


def repair_records(folder: str) -> RepairReport:
    """Move damaged segments of folder aside (to damaged/), keeping every key they still hold
    in a new sound segment, and remove temp files left by killed writers."""
    report = RepairReport()
    seg_dir = os.path.join(folder, SEGMENTS)
    clean_temp(folder, older_than=0)
    clean_temp(seg_dir, older_than=0)
    salvaged: set[str] = set()
    for name in scan_names(seg_dir):
        path = os.path.join(seg_dir, name)
        report.segments += 1
        with open(path, "rb") as f:
            data = f.read()
        keys, why = _decode_segment(data)
        if not why:
            continue
        salvaged |= keys
        report.lost += max(0, _counted(data) - len(keys))
        aside = os.path.join(folder, DAMAGED, f"{name}.{uuid.uuid4().hex[:8]}")
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        report.damaged.append(aside)
        write_atomic(os.path.join(seg_dir, f"seg-{uuid.uuid4().hex}"), encode_segment(keys))
        os.rename(path, aside)  # after its keys are safe in a sound segment
    report.salvaged = len(salvaged)
    return report


def _counted(data: bytes) -> int:
    parts = data.partition(b"\n")[0][len(_HEADER) :].split(b" ")
    return int(parts[0]) if data.startswith(_HEADER) and parts[0].isdigit() else 0


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
