"""The WireGuard VPN driver: ravenvpn's own userspace device, embedded in the agent's process.

A :class:`~ravenvpn.raven.node.drivers.VpnDriver`. On an active gateway it runs one
:class:`~ravenvpn.device.daemon.Device` (TUN ``raven0``, UDP socket, packet pump, UAPI socket for
``wg``) in a thread of its own, with one WireGuard peer per remote gateway; on any other role it runs
none. Peers that stay across applies keep their sessions, and an endpoint learnt by roaming
(WireGuard whitepaper §2.1) is only overridden when the planned endpoint itself changes.
"""
from __future__ import annotations

import base64
import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ...errors import RavenError
from ..plan.nodeplan import NodePlan, Role
from ..plan.planner import WIREGUARD_OVERHEAD
from .links import underlay_mtu

if TYPE_CHECKING:
    from ...device.daemon import Device
    from ...protocol.tunnel import Tunnel

__all__ = ["WireGuardDriver", "VpnReport"]

log = logging.getLogger("ravenvpn.agent")
STOP_TIMEOUT = 5.0   # seconds to wait for the device's pump thread to end


@dataclass
class VpnReport:
    """What one :meth:`WireGuardDriver.apply` or :meth:`~WireGuardDriver.cleanup` changed.

    Peers are named by their remote gateway (``gw-cloud``); removed ones by their base64 public key.
    """

    created: bool = False           # the interface was created by this call
    removed: bool = False           # the interface was removed by this call
    peers_added: list[str] = field(default_factory=list)
    peers_removed: list[str] = field(default_factory=list)
    peers_changed: list[str] = field(default_factory=list)   # endpoint, allowed IPs or keepalive
    settings_changed: list[str] = field(default_factory=list)  # "listen port 4501", "mtu 1380"

    @property
    def changed(self) -> bool:
        """True when the call changed the interface or its peers."""
        return any((self.created, self.removed, self.peers_added, self.peers_removed, self.peers_changed,
                    self.settings_changed))

    def summary(self) -> str:
        """One line for the log: ``interface created, peers +2 -0 ~0``."""
        state = "created" if self.created else "removed" if self.removed else "kept"
        return (f"interface {state}, peers +{len(self.peers_added)} -{len(self.peers_removed)} "
                f"~{len(self.peers_changed)}")


class WireGuardDriver:
    """The tunnel interface of an active gateway, with its WireGuard peers.

    ``private_key`` (32 bytes) is the node's static key; it is needed only while the plan makes the
    node the active gateway (:meth:`apply` raises without it). ``busy_poll`` is passed to the device
    (seconds; None: from ``RAVENVPN_BUSY_POLL_US``).

    Not thread-safe by itself: one agent calls it, serialised. The device it runs is thread-safe for
    ``wg``/UAPI clients.
    """

    def __init__(self, interface: str, private_key: bytes | None = None, *, busy_poll: float | None = None) -> None:
        self.interface = interface
        self.private_key = private_key
        self.busy_poll = busy_poll
        self._device: Device | None = None
        self._thread: threading.Thread | None = None
        self._stopped_reason: str | None = None
        # The endpoint each peer was last *planned* with: a roamed endpoint is only overridden when
        # the plan's endpoint changes.
        self._endpoints: dict[bytes, tuple[str, int] | None] = {}

    # ----------------------------------------------------------------- contract
    def init(self) -> None:
        """Check the device settings from the environment now, not when the node first becomes the
        gateway.

        Raises:
            RavenError: ``RAVENVPN_BUSY_POLL_US`` is malformed (a UsageError naming it).
        """
        if self.busy_poll is None:
            from ...device.daemon import busy_poll_from_env
            self.busy_poll = busy_poll_from_env()

    def mtu(self) -> int:
        """The underlay MTU minus WireGuard's worst-case overhead (80 bytes: IPv6 + UDP + data header + tag).

        Raises:
            RavenError: the links cannot be listed.
        """
        return underlay_mtu(self.interface) - WIREGUARD_OVERHEAD

    def apply(self, plan: NodePlan) -> VpnReport:
        """Run the interface and its peers as ``plan`` says: created (then configured) when the plan's
        role is active gateway, reconfigured when it runs, removed when the role is any other.

        Raises:
            RavenError: no private key while the plan needs the interface; a busy or refused listen
                port; the MTU cannot be set.
            StartupError: the interface cannot be created; nothing is left behind.
        """
        if plan.role is not Role.ACTIVE_GATEWAY and not (plan.role is Role.STANDBY and plan.peers):
            return self.cleanup()    # a hot standby (failover) runs the interface with routes held back
        if self.private_key is None:
            raise RavenError(f"{self.interface}: node {plan.node_name} is the active gateway of {plan.gateway} "
                             "but the WireGuard driver has no private key")
        report = VpnReport()
        if self._device is None:
            self._open()
            report.created = True
            try:
                self._configure(plan, report)
            except BaseException:
                self.cleanup()
                raise
            log.info("%s is the %s of %s: interface %s up", plan.node_name,
                     "active gateway" if plan.role is Role.ACTIVE_GATEWAY else "hot standby", plan.gateway,
                     self.interface)
        else:
            self._configure(plan, report)
        return report

    def cleanup(self) -> VpnReport:
        """Stop the pump and remove the interface if one runs. Idempotent; never raises."""
        report = VpnReport()
        device, self._device = self._device, None
        if device is None:
            return report
        if device.pump is not None:
            device.pump.stop("ravenvpn up is stopping")
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT)
            self._thread = None
        device.close()
        self._endpoints.clear()
        report.removed = True
        return report

    @property
    def stopped(self) -> str | None:
        """Why the running interface stopped on its own (its pump thread ended), else None."""
        if self._device is None or self._thread is None or self._thread.is_alive():
            return None
        return self._stopped_reason or "the packet pump ended"

    # ------------------------------------------------------------------ device
    def _open(self) -> None:
        from ...device.daemon import Device    # the device layer, embedded as a library
        device = Device(self.interface, busy_poll=self.busy_poll)
        device.open()                           # StartupError: it closed what it opened
        self._device = device
        self._stopped_reason = None
        self._thread = threading.Thread(target=self._run, args=(device,), name=f"pump-{self.interface}",
                                        daemon=True)
        self._thread.start()

    def _run(self, device: Device) -> None:
        self._stopped_reason = device.run()

    @contextlib.contextmanager
    def _tunnel(self) -> Iterator[Tunnel]:
        """The running device's Tunnel, under the device's lock; the pump learns of the change on exit.

        The one place the driver reaches into the device.
        """
        device = self._device
        assert device is not None and device.pump is not None
        with device.lock:
            yield device.pump.tunnel
        device.config_changed()

    def _configure(self, plan: NodePlan, report: VpnReport) -> None:
        """Converge the running device to the plan; unchanged peers keep their sessions."""
        device = self._device
        assert device is not None and self.private_key is not None
        if device.listen_port != plan.listen_port:
            try:
                device.set_listen_port(plan.listen_port)
            except OSError as exc:
                raise RavenError(f"UDP port {plan.listen_port}: {exc.strerror}") from None
            report.settings_changed.append(f"listen port {plan.listen_port}")
        try:
            with IPRoute() as ipr:
                found = ipr.link_lookup(ifname=self.interface)
                if not found:
                    raise RavenError(f"interface {self.interface} disappeared")
                ipr.link("set", index=found[0], mtu=plan.mtu, state="up")
        except NetlinkError as exc:
            raise RavenError(f"cannot set MTU {plan.mtu} on {self.interface}: {exc}") from None
        with self._tunnel() as tunnel:
            if tunnel.mtu != plan.mtu:
                report.settings_changed.append(f"mtu {plan.mtu}")
            tunnel.mtu = plan.mtu
            tunnel.private_key = self.private_key
            tunnel.relay = plan.relay
            desired = {p.public_key: p for p in plan.peers}
            for key in [k for k in tunnel.peers if k not in desired]:
                tunnel.remove_peer(key)
                self._endpoints.pop(key, None)
                report.peers_removed.append(base64.b64encode(key).decode())
            for want in plan.peers:
                is_new = want.public_key not in tunnel.peers
                peer = tunnel.add_peer(want.public_key)
                changed = False
                # Only a changed planned endpoint overrides one learnt by roaming.
                if want.public_key not in self._endpoints or self._endpoints[want.public_key] != want.endpoint:
                    if want.endpoint is not None:
                        peer.endpoint = want.endpoint
                    self._endpoints[want.public_key] = want.endpoint
                    changed = True
                if set(tunnel.allowed_ips(peer)) != set(want.allowed_ips):
                    tunnel.clear_allowed_ips(peer)
                    for net in want.allowed_ips:
                        tunnel.add_allowed_ip(peer, net)
                    changed = True
                if peer.persistent_keepalive_interval != want.persistent_keepalive:
                    changed = True
                peer.persistent_keepalive_interval = want.persistent_keepalive
                if is_new:
                    report.peers_added.append(want.gateway)
                elif changed:
                    report.peers_changed.append(want.gateway)
