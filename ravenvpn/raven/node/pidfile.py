"""The pid file of a running agent: ``<state dir>/<interface>.pid``, holding ``"PID STARTTIME"``.

``ravenvpn status`` and ``ravenvpn down`` find the agent of an interface through it, whichever
program runs that agent (``ravenvpn up`` or an embedding one). A pid file left by a killed agent may
name a pid the kernel has since given to an unrelated process; the process start time (field 22 of
``/proc/PID/stat``, clock ticks since boot) written next to the pid tells the two apart, so ``down``
never signals a stranger. Pid files of older versions hold the pid only; for those the process must
have ``ravenvpn`` in its command line, as before.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from ...errors import RavenError
from .records import pid_path

__all__ = ["claim", "release", "running_pid", "process_alive"]

# pid files claimed by agents of this process: a second Agent for the same interface in the same
# process is refused too, though the pid file names a live process (ours).
_claimed: set[Path] = set()
_claimed_lock = threading.Lock()


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (after the command name, which may hold spaces), None if gone."""
    try:
        line = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return line.rpartition(")")[2].split()


def process_alive(pid: int) -> bool:
    """True while process ``pid`` runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def _start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None and fields[0] != "Z" else None


def _is_ravenvpn(pid: int) -> bool:
    try:
        return b"ravenvpn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def running_pid(state_dir: str | Path, interface: str) -> int | None:
    """The pid of the agent that runs ``interface`` per its pid file, if that process still runs.

    None when there is no pid file, it is malformed, names this very process, or names a process
    that has exited or is not the one that wrote it (pid reused). Never raises for a missing or
    unreadable file.
    """
    try:
        fields = pid_path(state_dir, interface).read_text().split()
        pid = int(fields[0])
        recorded_start = int(fields[1]) if len(fields) > 1 else None
    except (OSError, ValueError, IndexError):
        return None
    if pid == os.getpid() or not process_alive(pid):
        return None
    if recorded_start is None:
        return pid if _is_ravenvpn(pid) else None
    return pid if _start_time(pid) == recorded_start else None


def claim(state_dir: str | Path, interface: str) -> None:
    """Write this process's pid file for ``interface``, creating the state directory (mode 0700).

    Thread-safe. Pair with :func:`release`.

    Raises:
        RavenError: another process, or another agent of this process, runs ``interface``; or the
            state directory cannot be written.
    """
    path = pid_path(state_dir, interface)
    with _claimed_lock:
        if path in _claimed:
            raise RavenError(f"an agent of this process is already running for {interface}")
        other = running_pid(state_dir, interface)
        if other is not None:
            raise RavenError(f"ravenvpn up is already running for {interface} (pid {other})")
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
            os.replace(tmp, path)
        except OSError as exc:
            raise RavenError(f"cannot write the pid file {path}: {exc.strerror or exc}") from None
        _claimed.add(path)


def release(state_dir: str | Path, interface: str) -> None:
    """Remove the pid file :func:`claim` wrote, if it still names this process; never raises. Thread-safe."""
    path = pid_path(state_dir, interface)
    with _claimed_lock:
        _claimed.discard(path)
        try:
            if int(path.read_text().split()[0]) == os.getpid():
                path.unlink()
        except (OSError, ValueError, IndexError):
            pass
