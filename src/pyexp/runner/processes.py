"""Process supervision: start commands in their own process group, watch signals, stop them.

A started command's process group is killed when the runner dies, even by SIGKILL. On Linux 5.3+
one small watcher process per runner does it: it is handed a pidfd of each command as it starts
(exact: the pid cannot be reused while the runner has not reaped it) and, once the runner's end
of their socket closes, SIGKILLs the group of every command still alive. That costs a sendmsg per
index, where an exec of util-linux `setpriv --pdeathsig SIGKILL` costs a millisecond of CPU; a
watcher that is killed is restarted and handed the live commands at the next start. Without
pidfds the command is exec'd through setpriv (the parent-death signal; without setpriv, a small
Python trampoline sets it), never through a `preexec_fn`: that would run Python in a child forked
while lease heartbeat threads run (unsafe) and costs a full fork per index.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)

# Sets the parent-death signal, checks the runner did not die before it took effect, execs.
_TRAMPOLINE = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, 9)\n"
    "os.getppid() == int(sys.argv[1]) or os._exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)

# Given a socket: keeps a pidfd per live command; at end of stream SIGKILLs their groups.
_WATCHER = (
    "import os, select, signal, socket, sys\n"
    "for s in (1, 2, 10, 15): signal.signal(s, signal.SIG_IGN)\n"
    "sock, held = socket.socket(fileno=int(sys.argv[1])), {}\n"
    "alive = lambda fd: not select.select([fd], [], [], 0)[0]\n"
    "while True:\n"
    "    try: msg, fds, _, _ = socket.recv_fds(sock, 32, 1)\n"
    "    except OSError: msg, fds = b'', []\n"
    "    if not msg: break\n"
    "    held.update(zip(fds, [int(msg)]))\n"
    "    for fd in [fd for fd in held if not alive(fd)]: os.close(fd); del held[fd]\n"
    "for fd, pid in held.items():\n"
    "    try: alive(fd) and os.killpg(pid, signal.SIGKILL)\n"
    "    except OSError: pass\n"
)


class SignalWatch:
    """One poll() woken by SIGCHLD, SIGCONT, the stop signals, wake() and the pipes it is given;
    remembers the first stop."""

    def __enter__(self) -> SignalWatch:
        self.signum: int | None = None
        self.resumed = False  # SIGCONT came: the process was paused, its leases may be gone
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._open = threading.Lock()
        self._closed = False
        self._old_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        sigs = (signal.SIGCHLD, signal.SIGCONT, *STOP_SIGNALS)
        self._old = {s: signal.signal(s, self._handle) for s in sigs}
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if signum == signal.SIGCONT:
            self.resumed = True
        elif signum != signal.SIGCHLD and self.signum is None:
            self.signum = signum

    def wake(self) -> None:
        """End the current or next wait(); safe from any thread, a no-op once closed."""
        with self._open:
            if not self._closed:
                with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
                    os.write(self._w, b"w")

    def wait(self, timeout: float | None, fds: Iterable[int] = ()) -> None:
        """Sleep until a signal or wake() arrives, one of fds can be read, or timeout seconds
        pass (None: no limit)."""
        if timeout is not None and timeout <= 0:
            return
        poller = select.poll()
        for fd in (self._r, *fds):
            poller.register(fd, select.POLLIN)
        poller.poll(None if timeout is None else math.ceil(timeout * 1000))
        try:
            while os.read(self._r, 512):
                pass
        except BlockingIOError:
            pass

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        signal.set_wakeup_fd(self._old_fd)
        with self._open:
            self._closed = True
            os.close(self._r)
            os.close(self._w)


class Spawner:
    """Starts commands in their own session, stdin closed, output to a log descriptor; each
    is killed when this process dies (see the module's docstring)."""

    # One watcher per process, whatever the number of spawners, for as long as it lives.
    _watcher: socket.socket | None = None
    _live: list[subprocess.Popen] = []  # handed to the watcher, maybe still running

    def __init__(self) -> None:
        linux = sys.platform.startswith("linux")
        self._prefix = [] if linux and _has_pidfd() else die_with_parent_prefix(os.getpid())
        self._programs: dict[tuple[str, str | None], str] = {}

    def start(self, argv: list[str], log: int | None, env: Mapping[str, str]) -> subprocess.Popen:
        """Start argv (log None: it writes where this process does); OSError when its program
        cannot be found or started."""
        proc = subprocess.Popen(
            [*self._prefix, self._resolve(argv[0], env.get("PATH")), *argv[1:]],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,  # its own process group, signalled as one
        )
        if not self._prefix:
            Spawner._live = [p for p in Spawner._live if p.returncode is None] + [proc]
            try:
                self._hand_over(proc)
            except OSError:  # unprotected, it must not run: the index was not started
                signal_group(proc, signal.SIGKILL)
                proc.wait()
                raise
        return proc

    def _hand_over(self, proc: subprocess.Popen) -> None:
        # A pidfd of the unreaped proc, to the watcher; a watcher gone (only then: closing
        # a live one's socket kills) gets a successor that is handed every live command.
        if Spawner._watcher is not None:
            try:
                return _send_pidfd(Spawner._watcher, proc.pid)
            except (BrokenPipeError, ConnectionResetError):
                Spawner._watcher.close()
        Spawner._watcher = _start_watcher()
        for p in Spawner._live:
            if p.poll() is None:
                _send_pidfd(Spawner._watcher, p.pid)

    def _resolve(self, name: str, path: str | None) -> str:
        # One lookup per program on the command's PATH, instead of one failed exec per PATH
        # entry per index.
        if os.sep in name:
            return name
        if (name, path) not in self._programs:
            found = shutil.which(name, path=path)
            if found is None:
                raise FileNotFoundError(errno.ENOENT, "not found on PATH", name)
            self._programs[name, path] = found
        return self._programs[name, path]


def _has_pidfd() -> bool:
    # pidfd_open came with Linux 5.3 (2019); clusters on older kernels use setpriv.
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


def _start_watcher() -> socket.socket:
    """A new watcher process and this end of its socket (closed: the watcher kills)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with theirs:
        subprocess.Popen(
            [sys.executable, "-S", "-c", _WATCHER, str(theirs.fileno())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(theirs.fileno(),),
            start_new_session=True,  # out of the runner's group: Ctrl-C and killpg miss it
        )
    return ours


def _send_pidfd(watcher: socket.socket, pid: int) -> None:
    """Hand the watcher a pidfd of pid; BrokenPipeError when it is gone."""
    fd = os.pidfd_open(pid)
    try:
        socket.send_fds(watcher, [str(pid).encode()], [fd])
    finally:
        os.close(fd)


def die_with_parent_prefix(parent: int) -> list[str]:
    """The argv prefix that has Linux SIGKILL the command when parent dies ([] if none)."""
    if not sys.platform.startswith("linux"):
        return []
    setpriv = shutil.which("setpriv")
    if setpriv and _has_pdeathsig(setpriv):
        return [setpriv, "--pdeathsig", "SIGKILL", "--"]
    return [sys.executable, "-S", "-c", _TRAMPOLINE, str(parent)]


def _has_pdeathsig(setpriv: str) -> bool:
    # --pdeathsig came with util-linux 2.33 (2018); older clusters may lack it.
    try:
        out = subprocess.run([setpriv, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--pdeathsig" in out.stdout


def signal_group(proc: subprocess.Popen, signum: int) -> None:
    """Signal proc's process group, only while proc is unreaped."""
    # A reaped child's group id may belong to someone else by now.
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signum)


def write_all(fd: int, text: str) -> None:
    """Write all of text to fd."""
    data = text.encode()
    while data:
        data = data[os.write(fd, data) :]


def oom_kills(root: str = "/sys/fs/cgroup", membership: str = "/proc/self/cgroup") -> int | None:
    """OOM kills so far in this process's cgroup (v2 or v1); None if unknown."""
    try:
        with open(membership, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:
            found = _counter(f"{root}{path}/memory.events", "oom_kill")
        elif "memory" in controllers.split(","):
            found = _counter(f"{root}/memory{path}/memory.oom_control", "oom_kill")
        else:
            continue
        if found is not None:
            return found
    return None


def _counter(path: str, name: str) -> int | None:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == name:
                    return int(value)
    except (OSError, ValueError):
        return None
    return None
