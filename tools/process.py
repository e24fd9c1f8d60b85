"""Commands and processes for the namespace test infrastructure.

Running a setup command on the host side, waiting for a condition, and finding, identifying and killing
the processes that live in a namespace. :mod:`tools.node` builds nodes on these; :mod:`tools.wg` uses them
to follow WireGuard daemons. Processes are found through the nsfs inodes of their namespaces, and a
(pid, start time) pair identifies a process despite pid reuse.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence, TypeVar

__all__ = [
    "CommandError",
    "wait_for",
    "run_host",
    "proc_start_time",
    "ns_inode",
    "pids_in_namespaces",
    "kill_pids",
    "process_alive",
    "process_cmdline",
]

T = TypeVar("T")


class CommandError(subprocess.CalledProcessError):
    """A command in a node failed; unlike CalledProcessError, str() shows stdout and stderr (debugging!)."""

    def __str__(self) -> str:
        cmd = self.cmd if isinstance(self.cmd, str) else " ".join(map(str, self.cmd))
        out = (self.stdout or "").strip() if isinstance(self.stdout, str) else self.stdout
        err = (self.stderr or "").strip() if isinstance(self.stderr, str) else self.stderr
        return f"command {cmd!r} exited {self.returncode}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that value.

    Real networks settle asynchronously (links come up, daemons create sockets, handshakes complete), so
    tests wait for conditions instead of sleeping fixed amounts. Raises TimeoutError naming ``message``.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # predicate may race with the thing it observes
            last_exc = exc
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {message}{extra}")
        time.sleep(interval)


def run_host(cmd: Sequence[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a setup command in the test's own namespaces (only ever used on our own netns/mount files).

    Raises CommandError when ``check`` and the command exits non-zero.
    """
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise CommandError(proc.returncode, list(cmd), proc.stdout, proc.stderr)
    return proc


def proc_start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of ``pid``; with the pid it identifies a process despite pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name is in parentheses and may contain spaces: split after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def ns_inode(path: str | os.PathLike[str]) -> int | None:
    """Inode of ``path`` (for a namespace file: the namespace's identity), None if it does not exist."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pids_in_namespaces(net_ino: int | None, mnt_ino: int | None) -> list[int]:
    """Pids of processes living in the given network or mount namespace (identified by nsfs inode)."""
    me = os.getpid()
    found: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == me:
            continue
        for kind, ino in (("net", net_ino), ("mnt", mnt_ino)):
            if ino is not None and ns_inode(f"/proc/{pid}/ns/{kind}") == ino:
                found.append(pid)
                break
    return found


def kill_pids(pids: Sequence[int], term_timeout: float = 3.0) -> None:
    """SIGTERM, wait, then SIGKILL: daemons get a chance to clean up (e.g. remove their UAPI socket)."""
    alive = list(pids)
    for sig, grace in ((signal.SIGTERM, term_timeout), (signal.SIGKILL, 3.0)):
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if process_alive(p)]
            if alive:
                time.sleep(0.02)
        if not alive:
            return


def process_alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (a zombie no longer holds any namespace)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def process_cmdline(pid: int) -> list[str]:
    """The argv of ``pid`` (empty when it is gone), e.g. to tell which daemon serves which interface."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []
