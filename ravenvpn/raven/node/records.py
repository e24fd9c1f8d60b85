"""Where a running node keeps its records: one home for the state directory's file names.

A node run by ``ravenvpn up`` or by an embedding :class:`~ravenvpn.raven.node.agent.Agent` keeps, per
tunnel interface, up to four files under its state directory (``/run/ravenvpn`` by default, mode 0700):

- ``<interface>.state.json``: exactly which routes, rules and sysctls the route driver installed or
  changed (:mod:`.applier`), written *before* each change, so ``ravenvpn down`` in another process
  can undo them and nothing else;
- ``<interface>.device.json``: the identity of the tunnel device the VPN driver created
  (:class:`DeviceRecord`), so ``down`` removes that device and never another one of the same name;
- ``<interface>.pid``: which process runs the agent (:mod:`.pidfile`);
- ``<interface>.status.json``: the node's role, peers and routes (:mod:`.statusfile`), read by
  ``ravenvpn status``.

``ravenvpn down`` acts on these records only: with none it changes nothing.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_STATE_DIR", "state_path", "pid_path", "status_path", "device_path", "record_paths",
           "DeviceRecord", "current_netns"]

DEFAULT_STATE_DIR = "/run/ravenvpn"


def state_path(state_dir: str | Path, interface: str) -> Path:
    """The route driver's record of what it installed: ``<state_dir>/<interface>.state.json``."""
    return Path(state_dir) / f"{interface}.state.json"


def pid_path(state_dir: str | Path, interface: str) -> Path:
    """The running agent's pid file: ``<state_dir>/<interface>.pid``."""
    return Path(state_dir) / f"{interface}.pid"


def status_path(state_dir: str | Path, interface: str) -> Path:
    """The node's status file: ``<state_dir>/<interface>.status.json``."""
    return Path(state_dir) / f"{interface}.status.json"


def direct_status_path(state_dir: str | Path, interface: str) -> Path:
    """The direct-path status file (holepunch.py): ``<state_dir>/<interface>.direct.json``."""
    return Path(state_dir) / f"{interface}.direct.json"


def device_path(state_dir: str | Path, interface: str) -> Path:
    """The VPN driver's record of the device it created: ``<state_dir>/<interface>.device.json``."""
    return Path(state_dir) / f"{interface}.device.json"


def record_paths(state_dir: str | Path, interface: str) -> list[Path]:
    """Every record file of ``interface`` that exists now (state, device, status, direct status, pid file)."""
    return [p for p in (state_path(state_dir, interface), device_path(state_dir, interface),
                        status_path(state_dir, interface), direct_status_path(state_dir, interface),
                        pid_path(state_dir, interface)) if p.exists()]


def current_netns() -> int | None:
    """The inode of this process's network namespace (what tells two namespaces apart), None if unknown."""
    try:
        return os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return None


@dataclass(frozen=True)
class DeviceRecord:
    """What makes a network device *this* device and no other one of the same name.

    Interface indexes are handed out in increasing order per network namespace and not reused until
    they wrap around, so ``ifindex`` alone tells a device from a later one of the same name; the TUN
    details (``IFLA_TUN_*``: owner, group, type, flags, persistence) from the kernel's link info must
    match as well, and the network namespace (``netns``, inode) too.
    """

    ifname: str
    ifindex: int
    kind: str                        # IFLA_INFO_KIND, "tun"
    tun: tuple[tuple[str, int], ...]  # sorted IFLA_TUN_* attributes, e.g. (("IFLA_TUN_PERSIST", 0), ...)
    netns: int | None                # inode of the network namespace it lives in
    pid: int                         # the process that created it

    @classmethod
    def from_link(cls, link: Any, pid: int | None = None) -> DeviceRecord:
        """The record of a link as pyroute2's ``IPRoute.get_links`` returns it (in this namespace)."""
        info = link.get("IFLA_LINKINFO")
        kind = (info.get("IFLA_INFO_KIND") if info else None) or ""
        data = info.get("IFLA_INFO_DATA") if info else None
        tun: list[tuple[str, int]] = []
        for attr in (data.get("attrs") if data is not None else None) or []:
            name, value = attr[0], attr[1]
            # The queue counts change while the device lives; the rest is fixed at creation.
            if name.startswith("IFLA_TUN_") and name not in ("IFLA_TUN_NUM_QUEUES", "IFLA_TUN_NUM_DISABLED_QUEUES"):
                tun.append((name, int(value)))
        return cls(link.get("ifname") or link.get_attr("IFLA_IFNAME"), int(link["index"]), kind,
                   tuple(sorted(tun)), current_netns(), os.getpid() if pid is None else pid)

    def same_device(self, other: DeviceRecord) -> bool:
        """True when ``other`` (read from the kernel now) is the device this record describes."""
        return (self.ifname, self.ifindex, self.kind, self.tun, self.netns) == \
            (other.ifname, other.ifindex, other.kind, other.tun, other.netns)

    def describe(self) -> str:
        """``raven0 (ifindex 7, tun)``: how messages name the device."""
        return f"{self.ifname} (ifindex {self.ifindex}, {self.kind or 'unknown kind'})"

    def write(self, path: str | Path) -> None:
        """Replace the record at ``path`` atomically.

        Raises:
            OSError: the file cannot be written.
        """
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: str | Path) -> DeviceRecord | None:
        """The record at ``path``; None when there is none or it is malformed (then nothing is ours)."""
        try:
            d = json.loads(Path(path).read_text())
            return cls(str(d["ifname"]), int(d["ifindex"]), str(d["kind"]),
                       tuple((str(k), int(v)) for k, v in d["tun"]), d.get("netns"), int(d["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
