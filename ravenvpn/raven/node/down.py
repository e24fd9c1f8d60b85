"""``ravenvpn down``: stop the agent that runs an interface, or clean up what one that died recorded.

It acts on the records under the state directory only (:mod:`.records`): the pid file names the agent
to stop; the state file the routes, rules and sysctls to undo; the device record the tunnel device to
remove, which is removed only when the device of that name is still the one recorded (same ifindex,
kind and TUN details, same network namespace). With no records it changes nothing: a ``raven0`` that
``wireguard-go``, ``ravenvpn-wg`` or anything else made is never touched.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ...errors import RavenError
from .applier import Applier
from .pidfile import process_alive, running_pid
from .records import (DEFAULT_STATE_DIR, DeviceRecord, device_path, direct_status_path, pid_path, record_paths,
                      state_path, status_path)

__all__ = ["down", "remove_recorded_device"]


def remove_recorded_device(interface: str, state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR) -> str | None:
    """Delete the device recorded in ``<interface>.device.json`` if the device of that name is still
    that one; forget the record either way.

    Returns what happened to the device, for a message: None when nothing was recorded or the device
    went away with its process (a TUN device is removed with its last file descriptor).

    Raises:
        RavenError: the links cannot be listed or the device cannot be deleted.
    """
    path = device_path(state_dir, interface)
    record = DeviceRecord.read(path)
    if record is None:
        _unlink(path)
        return None
    try:
        with IPRoute() as ipr:
            links = ipr.get_links(ifname=interface) if _exists(ipr, interface) else []
            if not links:
                result = None
            else:
                now = DeviceRecord.from_link(links[0])
                if record.same_device(now):
                    ipr.link("del", index=now.ifindex)
                    result = f"removed {record.describe()}"
                else:
                    result = (f"left {now.describe()} alone: it is not the device ravenvpn up created "
                              f"({record.describe()})")
    except NetlinkError as exc:
        raise RavenError(f"cannot remove {interface}: {exc}") from None
    _unlink(path)
    return result


def recorded_device_present(record: DeviceRecord) -> bool:
    """Whether the device ``record`` names is still in the kernel (the same device: name, ifindex,
    kind). A TUN goes with its process, so after ``kill -9`` of ``up`` it is usually gone. True when
    the links cannot be listed (unknown: better named than hidden)."""
    try:
        with IPRoute() as ipr:
            links = ipr.get_links(ifname=record.ifname) if _exists(ipr, record.ifname) else []
    except NetlinkError:
        return True
    return bool(links) and record.same_device(DeviceRecord.from_link(links[0]))


def _exists(ipr: IPRoute, interface: str) -> bool:
    return bool(ipr.link_lookup(ifname=interface))


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def down(interface: str = "raven0", state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
         timeout: float = 10.0) -> str:
    """Stop the agent running ``interface`` (SIGTERM; it cleans up itself), or undo what the records of
    an agent that died name: its routes, rules and sysctls, its device, its records.

    Returns one line saying which happened, or ``nothing to stop for <interface>`` when no agent runs
    and none left records (idempotent, like ``systemctl stop``). Waits up to ``timeout`` seconds
    (monotonic) for the agent to exit. An agent killed without cleaning up (SIGKILL, or a program
    that embeds one without handling SIGTERM) is cleaned up after as a dead one.

    Raises:
        RavenError: the agent did not exit within ``timeout``; the state directory or a record cannot
            be read; the kernel refused a change.
    """
    sdir = Path(state_dir)
    pid = running_pid(sdir, interface)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except PermissionError:
            raise RavenError(f"cannot stop ravenvpn up (pid {pid}): permission denied") from None
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while process_alive(pid):
            if time.monotonic() >= deadline:
                raise RavenError(f"ravenvpn up (pid {pid}) did not stop within {timeout:.0f} s")
            time.sleep(0.05)
        if not state_path(sdir, interface).exists() and not device_path(sdir, interface).exists():
            for path in (status_path(sdir, interface), direct_status_path(sdir, interface),
                         pid_path(sdir, interface)):
                _unlink(path)
            return f"stopped ravenvpn up (pid {pid})"
        # It died without its cleanup: do it here.
    try:
        left = record_paths(sdir, interface)
    except PermissionError:
        raise RavenError(f"cannot read the state directory {sdir}: permission denied") from None
    if not left:
        return f"nothing to stop for {interface}: ravenvpn up is not running and left no records in {sdir}"
    dead_pid = pid if pid is not None else _recorded_pid(sdir, interface)
    try:
        report = Applier(interface, str(sdir)).cleanup()
    except NetlinkError as exc:
        raise RavenError(f"cannot undo the routes of {interface}: {exc}") from None
    device = remove_recorded_device(interface, sdir)
    for path in (status_path(sdir, interface), direct_status_path(sdir, interface), pid_path(sdir, interface)):
        _unlink(path)
    what = report.summary() + (f"; {device}" if device else "")
    if pid is not None:
        return f"stopped ravenvpn up (pid {pid}), which left its routes: removed them: {what}"
    who = f"ravenvpn up (pid {dead_pid})" if dead_pid else "ravenvpn up"
    return f"cleaned up after {who} on {interface}, which stopped without cleaning up: {what}"


def _recorded_pid(state_dir: Path, interface: str) -> int | None:
    try:
        return int(pid_path(state_dir, interface).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
