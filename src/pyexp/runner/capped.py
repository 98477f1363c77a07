"""A command's output copied to its log by the runner, capped: the head is written as it comes,
the tail kept in memory, and at the end a line saying how many bytes were cut, then the tail.

No thread per command: the runner's loop waits on the pipes with its signals
(SignalWatch.wait) and pumps them, so an index costs no thread start and no join."""

from __future__ import annotations

import os
import select
import time
from collections import deque

CHUNK = 65536
PUMP_CHUNKS = 16  # per pump: a chatty command cannot hold the loop for long
END_SECONDS = 5.0  # how long a command's end waits for others holding its output (daemons)


class CappedCopy:
    """Copies a pipe's read end to a log descriptor whenever pumped, keeping at most `limit`
    bytes (half head, half tail; 0: no limit)."""

    def __init__(self, source: int, log: int, limit: int) -> None:
        self.source, self.log, self.limit = source, log, limit
        self.cut = 0
        self.ended = False
        self._head = limit - limit // 2 if limit else -1
        self._tail: deque[bytes] = deque()
        self._kept = 0
        os.set_blocking(source, False)

    def pump(self) -> bool:
        """Copy what the pipe holds now (a bounded amount); whether it has ended (then closed)."""
        if self.ended:
            return True
        try:
            for _ in range(PUMP_CHUNKS):
                data = os.read(self.source, CHUNK)
                if not data:
                    break
                self._take(data)
            else:
                return False
        except BlockingIOError:
            return False
        except OSError:
            pass
        self.close()
        return True

    def finish(self, timeout: float | None = None) -> bool:
        """Copy until the pipe ends (the command and every process holding its output ended) or
        timeout seconds pass (None: END_SECONDS); whether it ended (if not, pump it later)."""
        deadline = time.monotonic() + (END_SECONDS if timeout is None else timeout)
        while not self.pump():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            select.select([self.source], [], [], left)
        return True

    def close(self) -> None:
        """Stop copying: write the cut line and the tail, close the pipe (idempotent)."""
        if self.ended:
            return
        self.ended = True
        os.close(self.source)
        tail = b"".join(self._tail)
        keep = tail[len(tail) - self.limit // 2 :] if self.limit else tail
        self.cut = len(tail) - len(keep)
        if self.cut:
            line = f"\n[pyexp-run: {self.cut} bytes of output cut here (max_log_bytes)]\n"
            self._write(line.encode())
        self._write(keep)

    def _take(self, data: bytes) -> None:
        if self._head != 0:
            now = data if self._head < 0 else data[: self._head]
            self._head = self._head if self._head < 0 else self._head - len(now)
            self._write(now)
            data = data[len(now) :]
        if data:
            self._tail.append(data)
            self._kept += len(data)
            while len(self._tail) > 1 and self._kept - len(self._tail[0]) >= self.limit // 2:
                self._kept -= len(self._tail.popleft())

    def _write(self, data: bytes) -> None:
        try:
            while data:
                data = data[os.write(self.log, data) :]
        except OSError:
            pass


def start_copy(log: int, limit: int) -> tuple[int, CappedCopy]:
    """A pipe whose write end a command gets as stdout/stderr, and its copier to log."""
    r, w = os.pipe2(os.O_CLOEXEC)
    return w, CappedCopy(r, log, limit)
