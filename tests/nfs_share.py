"""Two "nodes" sharing one folder through caching mounts, as NFS clients do.

Each node is `unshare --uts --pid --mount --fork`: its own hostname, pids and mounts. Inside it, an
sshfs mount (`-o passive`, talking SFTP to a local sftp-server over a socket pair: no sshd) shows
the share's folder at the same path on every node, with attribute, entry, negative-entry and
sshfs directory caches of `cache` seconds each. A node runs one command and ends with it; its
mount and every process in it go with it (SIGKILL of the node is a node failure).

Run as a script, this module is the node itself (pid 1 of the namespace):
    python nfs_share.py HOST SHARE MOUNT CACHE DELAY -- COMMAND...
DELAY > 0 relays each SFTP request through a thread that holds it DELAY seconds (a slow server).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/lib/sftp-server")
NO_MOUNT = 97  # the node's exit status when its mount could not be made


def sftp_server() -> str | None:
    """The sftp-server program, None if not installed."""
    return next((p for p in SFTP_SERVERS if os.access(p, os.X_OK)), None)


def unavailable() -> str | None:
    """Why two caching nodes cannot be made here, None if they can."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse (FUSE is not available)"
    if shutil.which("sshfs") is None or sftp_server() is None:
        return "sshfs or openssh-sftp-server is not installed (apt-get install sshfs)"
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return "needs root and unshare for separate node namespaces"
    return None


class Node:
    """One node's command, running in its own namespaces with the share mounted."""

    def __init__(self, share: Share, host: str, argv: list[str], env: dict, delay: float) -> None:
        self.host = host
        node = [sys.executable, __file__, host, str(share.server), str(share.mount)]
        node += [str(share.cache), str(delay), "--", *argv]
        self.proc = subprocess.Popen(
            ["unshare", "--uts", "--pid", "--mount", "--fork", "--kill-child", "--mount-proc"]
            + node,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait(self, timeout: float = 120) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) once the node's command ends."""
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        """Power the node off: SIGKILL its namespace's pid 1, and so everything in it."""
        self.proc.kill()
        self.proc.communicate(timeout=30)


class Share:
    """A folder (server) that nodes mount at one path (mount) with caches of cache seconds."""

    def __init__(self, root: Path, cache: float) -> None:
        self.server, self.mount, self.cache = root / "server", root / "share", cache
        self.server.mkdir()
        self.mount.mkdir()  # on the host it stays empty: only nodes see the share there
        self.nodes: list[Node] = []

    def node(self, host: str, argv: list[str], env: dict, delay: float = 0.0) -> Node:
        """Start argv on a new node named host."""
        node = Node(self, host, list(map(str, argv)), env, delay)
        self.nodes.append(node)
        return node

    def close(self) -> None:
        """Kill every node still running."""
        for node in self.nodes:
            if node.proc.poll() is None:
                node.kill()


# ------------------------------------------------------------------ the node (in its namespace)


def _relay(src: socket.socket, dst: socket.socket, delay: float) -> None:
    while data := src.recv(65536):
        time.sleep(delay)
        dst.sendall(data)
    dst.shutdown(socket.SHUT_WR)


def _mount(server: str, mount: str, cache: str, delay: float) -> subprocess.Popen:
    client, server_end = socket.socketpair()
    if delay > 0:  # sshfs <-> two relay threads <-> sftp-server: each request waits delay s
        near = server_end
        relay, server_end = socket.socketpair()
        threading.Thread(target=_relay, args=(near, relay, delay), daemon=True).start()
        threading.Thread(target=_relay, args=(relay, near, 0.0), daemon=True).start()
    subprocess.Popen([sftp_server()], stdin=server_end, stdout=server_end, close_fds=True)
    options = ["passive", "dcache_timeout=" + cache, "attr_timeout=" + cache]
    options += ["entry_timeout=" + cache, "negative_timeout=" + cache]
    argv = ["sshfs", "-f", *(x for o in options for x in ("-o", o)), ":" + server, mount]
    sshfs = subprocess.Popen(argv, stdin=client, stdout=client, close_fds=True)
    client.close()
    server_end.close()
    return sshfs


def main(argv: list[str]) -> int:
    """Be a node: set the hostname, mount the share, run the command; its exit status."""
    host, server, mount, cache, delay, sep, *command = argv
    assert sep == "--", argv
    socket.sethostname(host)
    sshfs = _mount(server, mount, cache, float(delay))
    end = time.monotonic() + 15
    while not os.path.ismount(mount):
        if sshfs.poll() is not None or time.monotonic() > end:
            print(f"node {host}: sshfs could not mount {server} at {mount}", file=sys.stderr)
            return NO_MOUNT
        time.sleep(0.05)
    child = subprocess.Popen(command)
    signal.signal(signal.SIGTERM, lambda *_: child.kill())
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
