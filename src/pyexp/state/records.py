"""Completion records: one fact per (canonical parameters, run), written atomically on success.

Each completion is a loose file `<hash>-<run>`, or, from a runner (journal=its tag), a line
appended to its own journal `journal-<tag>` and synced: `<crc32> <json>\n`, the JSON holding the
record key with the record; a line cut short (a writer killed mid-append) or failing its
checksum is not a record, and a writer whose append failed starts a new journal, so only a
journal's tail can be cut. One append and one fsync per record, on a file opened once per
runner: no create, rename or later unlink per index. A writer folds many loose files, and
its own journal when it ends, into a segment `segments/seg-<uuid>` (write the segment, then
delete what it holds), so asking "what is done" costs a few directory reads and file reads, not
one stat per index. Journals of writers that died are read like segments, and folded at rest
once their job ended (fold(ended=...)). Contracts:
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
import zlib
from dataclasses import dataclass, field

from pyexp.errors import PyExpError
from pyexp.experiment import paramsHash
from pyexp.state.atomic import clean_temp, scan_names, write_atomic

SEGMENTS = "segments"
DURATIONS = "durations"
DAMAGED = "damaged"
JOURNAL = "journal-"  # a writer's appended records: journal-<job>_<task>-<pid>-<uuid>
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

    def __init__(self, folder: str, journal: str | None = None) -> None:
        self.folder = folder
        self._segments_seen: dict[str, frozenset[str]] = {}
        self._view: set[str] = set()  # completed() as last read, plus our own records
        self._view_at = -float("inf")  # when (monotonic)
        self._tag = journal  # records go to our own journal; None: loose files
        self._journal: tuple[int, str] | None = None  # (descriptor, path) once opened
        self._journals: list[str] = []  # the names of every journal this object wrote

    def mark_complete(self, params: dict, run: int, info: dict | None = None) -> None:
        """Record that (params, run) finished successfully (synced before returning)."""
        key = record_key(params, run)
        body = {"params": params, "run": run, "time": time.time(), **(info or {})}
        if self._tag is None:
            write_atomic(os.path.join(self.folder, key), json.dumps(body))
        else:
            self._append(json.dumps({"key": key, **body}).encode())
        self._view.add(key)

    def _append(self, data: bytes) -> None:
        """Append one journal line and sync it; an OSError names the journal (which is then
        left: the next record starts a new one, so no line follows a cut one)."""
        line = b"%08x %s\n" % (zlib.crc32(data), data)
        if self._journal is None:
            path = os.path.join(self.folder, f"{JOURNAL}{self._tag}-{uuid.uuid4().hex[:8]}")
            try:
                fd = _open_append(path)
            except OSError as e:
                raise OSError(e.errno, e.strerror, path) from None
            self._journal = fd, path
            self._journals.append(os.path.basename(path))
        fd, path = self._journal
        try:
            while line:
                line = line[os.write(fd, line) :]
            os.fsync(fd)
        except OSError as e:
            self.close()
            raise OSError(e.errno, e.strerror, path) from None

    def close(self) -> None:
        """Close our journal (the next record starts a new one)."""
        if self._journal is not None:
            with contextlib.suppress(OSError):
                os.close(self._journal[0])
            self._journal = None

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
        # Journals before segments: one folded meanwhile is in a segment written before.
        if any(key in self._journal_records(n) for n in self._names() if _is_journal(n)):
            return True
        return any(key in keys for keys in self._segments().values())

    def completed(self, compact: bool = True) -> set[str]:
        """Every completed record key; with compact, a writable folder's many loose records
        are folded into a segment (never failing the read)."""
        read_at = time.monotonic()
        names = self._names()
        loose = _loose(names)
        # Journals before segments: one folded meanwhile is in a segment written before.
        journaled = [self._journal_records(name) for name in filter(_is_journal, names)]
        segments = self._segments()
        keys = set(loose).union(*segments.values(), *journaled)
        self._view, self._view_at = set(keys), read_at
        if compact and len(loose) >= COMPACT_AT and os.access(self.folder, os.W_OK):
            with contextlib.suppress(OSError):
                self._fold(loose, segments)
        return keys

    def fold(self, keys: dict[str, float] | None = None, ended: set[str] = frozenset()) -> None:
        """Fold loose records into a segment: keys (a task's own when it ends, with their
        durations: no record is read) and our own journal, else all loose records, the
        journals of ended jobs (ended: array job ids) and every segment merged into one (a
        writer at rest); an optional chore that never raises (a damaged or unwritable folder
        is left)."""
        self.close()
        with contextlib.suppress(OSError, StateCorrupt):
            names = self._names()
            mine = [k for k in _loose(names) if keys is None or k in keys]
            journals = [
                n
                for n in filter(_is_journal, names)
                if (keys is not None and n in self._journals)
                or (keys is None and n[len(JOURNAL) :].split("_")[0] in ended)
            ]
            segments = self._segments()
            if mine or journals or (keys is None and len(segments) > 1):
                known, journaled = dict(keys or {}), set()
                for name in journals:  # one that cannot be read stops the fold: none is lost
                    for key, duration in self._journal_records(name, strict=True).items():
                        journaled.add(key)
                        if duration is not None:
                            known.setdefault(key, duration)
                merge = keys is None or None
                self._fold(mine, segments, merge, known, journaled - set(mine))
                for name in journals:  # after the segment holds their keys
                    _unlink_quietly(os.path.join(self.folder, name))

    def durations(self, sample: int = 200) -> list[float]:
        """Seconds each completed index took: every folded record's, and up to sample loose
        ones' (an estimate for planning: damaged or missing figures are skipped)."""
        out = [d for name in scan_names(self._durations_dir()) for d in self._durations_in(name)]
        names = self._names()
        for name in filter(_is_journal, names):
            with contextlib.suppress(OSError):  # an estimate: an unreadable journal is skipped
                out += [d for d in self._journal_records(name).values() if d is not None]
        for name in _loose(names)[:sample]:
            with contextlib.suppress(OSError, ValueError, TypeError, LookupError):
                out.append(float(_read_json(os.path.join(self.folder, name))["duration"]))
        return out

    def _names(self) -> list[str]:
        return scan_names(self.folder)

    def _journal_records(self, name: str, strict: bool = False) -> dict[str, float | None]:
        """The whole, sound records of a journal: {key: duration or None}; {} if it is gone
        (strict: an OSError if it cannot be read)."""
        try:
            with open(os.path.join(self.folder, name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            if strict:
                raise
            return {}  # folded meanwhile: its keys are in a segment written before
        return read_journal(data)

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
        journaled: set[str] = frozenset(),
    ) -> None:
        # Safe with concurrent folders and writers: a key is deleted only after a segment holds it.
        folder = os.path.join(self.folder, SEGMENTS)
        clean_temp(self.folder)
        clean_temp(folder)
        keys = {k for k in loose if _KEY.fullmatch(k.encode())}
        merge = merge or len(segments) >= MERGE_AT
        self._fold_durations(keys, merge, known or {})
        keys |= journaled
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
        figures += known.values()  # loose records' and journaled ones'
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


def read_journal(data: bytes) -> dict[str, float | None]:
    """The records of a journal's bytes whose line is whole and passes its checksum:
    {key: duration or None}."""
    out: dict[str, float | None] = {}
    for line in data.split(b"\n")[:-1]:  # the last part is empty unless cut mid-line
        crc, _, body = line.partition(b" ")
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            if int(crc, 16) == zlib.crc32(body):
                record = json.loads(body)
                duration = record.get("duration")
                key = record["key"]
                if isinstance(key, str) and _KEY.fullmatch(key.encode()):
                    out[key] = float(duration) if isinstance(duration, (int, float)) else None
    return out


def _open_append(path: str) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, flags, 0o644)


def _is_journal(name: str) -> bool:
    return name.startswith(JOURNAL)


def _loose(names: list[str]) -> list[str]:
    """The loose record names among a listing of the records folder."""
    return [n for n in names if n not in (SEGMENTS, DAMAGED, DURATIONS) and not _is_journal(n)]


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
