"""``ravenvpn down``: stop the agent that runs an interface, or clean up after one that died."""
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
from .records import DEFAULT_STATE_DIR, pid_path, state_path, status_path

__all__ = ["down"]


def down(interface: str = "raven0", state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
         timeout: float = 10.0) -> str:
    """Stop the agent running ``interface`` (SIGTERM; it cleans up itself), or clean up what an agent
    that died left: routes, rules and sysctls from its state file, its TUN device, its records.

    Returns one line saying which of the two happened. Waits up to ``timeout`` seconds (monotonic)
    for the agent to exit. An agent killed without cleaning up (SIGKILL, or a program that embeds
    one without handling SIGTERM) is cleaned up after as a dead one.

    Raises:
        RavenError: the agent did not exit within ``timeout``; the state file is unreadable.
    """
    sdir = Path(state_dir)
    pid = running_pid(sdir, interface)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while process_alive(pid):
            if time.monotonic() >= deadline:
                raise RavenError(f"ravenvpn up (pid {pid}) did not stop within {timeout:.0f} s")
            time.sleep(0.05)
        if not state_path(sdir, interface).exists():
            return f"stopped ravenvpn up (pid {pid})"
        # It died without its cleanup: do it here.
    report = Applier(interface, str(sdir)).cleanup()
    try:
        with IPRoute() as ipr:
            for link in ipr.get_links():
                # Only a TUN device of that name can be ours; anything else is left alone.
                info = link.get("IFLA_LINKINFO")
                kind = info.get("IFLA_INFO_KIND") if info else None
                if link.get("ifname") == interface and kind == "tun":
                    ipr.link("del", index=link["index"])
    except NetlinkError as exc:
        raise RavenError(f"cannot remove {interface}: {exc}") from None
    for path in (status_path(sdir, interface), pid_path(sdir, interface)):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    if pid is not None:
        return f"stopped ravenvpn up (pid {pid}), which left its routes: removed them: {report.summary()}"
    return f"cleaned up after a stopped ravenvpn up: {report.summary()}"
