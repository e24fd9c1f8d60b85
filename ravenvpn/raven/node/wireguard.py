"""The WireGuard VPN driver: ravenvpn's own userspace device, embedded in the agent's process.

A :class:`~ravenvpn.raven.node.drivers.VpnDriver`. On an active gateway it runs one
:class:`~ravenvpn.device.device.Device` (TUN ``raven0``, UDP socket, packet pump, UAPI socket for
``wg``) in a thread the device owns, with one WireGuard peer per remote gateway; on any other role it runs
none. Peers that stay across applies keep their sessions, and an endpoint learnt by roaming
(WireGuard whitepaper §2.1) is only overridden when the planned endpoint itself changes.

A relay change is make-before-break (issue 14, kind 9: relayed traffic loses at most 3 s): when the
plan moves relayed prefixes (NAT<->NAT) to a relay peer that has no session yet, they stay on the
previous relay's peer, which still forwards them, until the new relay has answered a handshake and
:data:`RELAY_HOLD` has passed. A relay whose tunnel comes up with the same cluster edit (its node just
became Ready) is often not listening yet when the edges first call it, and a lost initiation is only
retried after REKEY_TIMEOUT (whitepaper §6.4); the hold outlasts every edge's retry, so the new relay
can reach both ends when the edges move to it.
"""
from __future__ import annotations

import base64
import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ...device.device import Device
from ...device.udp import port_holders
from ...errors import RavenError, StartupError
from ...protocol.constants import REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX
from ..cluster.addresses import IPNetwork
from ..plan.nodeplan import NodePlan, Role
from ..plan.planner import WIREGUARD_OVERHEAD
from .holepunch import DirectPaths
from .links import UnderlayPath, underlay_path
from .records import DeviceRecord, device_path

if TYPE_CHECKING:
    from ...protocol.tunnel import Tunnel

__all__ = ["WireGuardDriver", "VpnReport"]

log = logging.getLogger("ravenvpn.agent")
#: Bytes: the smallest tunnel MTU a derived one may be, IPv6's minimum link MTU (RFC 8200 §5).
MIN_TUNNEL_MTU = 1280
#: Seconds (monotonic) relayed prefixes stay on the previous relay's peer after the plan moved them to a
#: relay peer without a session: a lost first initiation of every edge is retried (REKEY_TIMEOUT plus
#: jitter, whitepaper §6.4) and every agent has re-read the cluster file (a 0.5 s poll) within it.
RELAY_HOLD = REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX + 1.0
#: Seconds between checks whether a held relay move may complete.
_HOLD_CHECK = 0.1


@dataclass
class _Hold:
    """Relayed prefix kept on ``old`` (a peer's public key) although the plan routes it to ``new``."""

    old: bytes
    new: bytes
    since: float            # time.monotonic() when the move was first held


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
    (seconds; None: from ``RAVENVPN_BUSY_POLL_US``). With ``state_dir``, the identity of the device
    it creates is recorded there (:class:`~ravenvpn.raven.node.records.DeviceRecord`) while it runs, so
    ``ravenvpn down`` in another process can remove that device and no other.

    One agent calls it, serialised; a timer thread of its own completes held relay moves (see the
    module doc), under the driver's lock. The device it runs is thread-safe for ``wg``/UAPI clients.
    """

    def __init__(self, interface: str, private_key: bytes | None = None, *, busy_poll: float | None = None,
                 state_dir: str | os.PathLike[str] | None = None) -> None:
        self.interface = interface
        self.private_key = private_key
        self.busy_poll = busy_poll
        self.record_path: Path | None = device_path(state_dir, interface) if state_dir is not None else None
        self.state_dir = state_dir
        self.direct: DirectPaths | None = None   # direct edge<->edge paths (holepunch.py) while the device runs
        self._device: Device | None = None
        # The endpoint each peer was last *planned* with: a roamed endpoint is only overridden when
        # the plan's endpoint changes.
        self._endpoints: dict[bytes, tuple[str, int] | None] = {}
        self._mtu_decision: tuple[UnderlayPath, int] | None = None   # the last one made
        self._mtu_untold: tuple[int, int, str] | None = None      # (mtu, log level, why) not yet logged
        self._lock = threading.RLock()       # apply/cleanup vs. the hold timer
        self._plan: NodePlan | None = None   # the last plan applied (the hold timer re-applies its peers)
        self._holds: dict[IPNetwork, _Hold] = {}
        self._hold_timer: threading.Timer | None = None

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

    def mtu(self, endpoints: Iterable[tuple[str, int]] = ()) -> int:
        """The tunnel MTU in bytes for the paths its packets take: the underlay path toward the
        peers' ``endpoints`` (the planned (ip, port) pairs), the smallest of them; the default
        route's while no peer has one (a peer under NAT calls in; see
        :func:`~ravenvpn.raven.node.links.underlay_path`); minus WireGuard's worst-case overhead
        (80 bytes: IPv6 + UDP + data header + tag).

        Never below MIN_TUNNEL_MTU (1280): a smaller underlay gets a warning, and the kernel
        fragments the outer UDP datagrams. Which link decided it is logged by :meth:`apply` when an
        interface gets this MTU (not here: a node without an interface, or one whose start fails,
        has nothing to say about it).

        Raises:
            RavenError: the links and routes cannot be read.
        """
        path = underlay_path(self.interface, {ip for ip, _ in endpoints})
        mtu = path.mtu - WIREGUARD_OVERHEAD
        if mtu < MIN_TUNNEL_MTU:
            why = (logging.WARNING, f"{self.interface}: the underlay is too small for WireGuard: "
                   f"{path.describe()} leaves {mtu} bytes, below IPv6's minimum; using MTU {MIN_TUNNEL_MTU} "
                   "(outer packets will be fragmented)")
            mtu = MIN_TUNNEL_MTU
        else:
            why = (logging.INFO, f"{self.interface}: MTU {mtu} from {path.describe()} minus "
                   f"{WIREGUARD_OVERHEAD} bytes of WireGuard overhead")
        if self._mtu_decision != (path, mtu):
            self._mtu_decision = (path, mtu)
            self._mtu_untold = (mtu, *why)
        return mtu

    def _tell_mtu(self, plan: NodePlan) -> None:
        """Log why the interface has its MTU, once per decision, when the plan used the derived one."""
        if self._mtu_untold is not None and self._mtu_untold[0] == plan.mtu:
            _, level, message = self._mtu_untold
            log.log(level, "%s", message)
            self._mtu_untold = None

    def apply(self, plan: NodePlan) -> VpnReport:
        """Run the interface and its peers as ``plan`` says: created (then configured) when the plan's
        role is active gateway, reconfigured when it runs, removed when the role is any other.

        Raises:
            RavenError: no private key while the plan needs the interface; a busy or refused listen
                port (the message names ``--port``); the MTU cannot be set.
            StartupError: the interface cannot be created, or its UDP port is busy; nothing is left
                behind.
        """
        with self._lock:
            return self._apply(plan)

    def _apply(self, plan: NodePlan) -> VpnReport:
        if plan.role is not Role.ACTIVE_GATEWAY and not (plan.role is Role.STANDBY and plan.peers):
            return self.cleanup()    # a hot standby (failover) runs the interface with routes held back
        if self.private_key is None:
            raise RavenError(f"{self.interface}: node {plan.node_name} is the active gateway of {plan.gateway} "
                             "but the WireGuard driver has no private key")
        report = VpnReport()
        if self._device is None:
            self._forget_stale_record()
            self._open(plan)
            report.created = True
            try:
                self._record()
                self._configure(plan, report)
            except BaseException:
                self.cleanup()
                raise
            # The device logged "interface ... up (MTU, port)" itself: this line says why.
            log.info("%s is the %s of %s", plan.node_name,
                     "active gateway" if plan.role is Role.ACTIVE_GATEWAY else "hot standby", plan.gateway)
        else:
            self._configure(plan, report)
        self._tell_mtu(plan)
        if self.direct is not None and plan.direct is not None:
            self.direct.start()
        return report

    def cleanup(self) -> VpnReport:
        """Stop the pump and remove the interface if one runs. Idempotent; never raises."""
        with self._lock:
            return self._cleanup()

    def _cleanup(self) -> VpnReport:
        report = VpnReport()
        if self.direct is not None:
            self.direct.stop()
            self.direct = None
        self._plan = None
        self._holds.clear()
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        device, self._device = self._device, None
        if device is None:
            self._forget_stale_record()
            return report
        device.stop("ravenvpn up is stopping")
        device.close()
        self._endpoints.clear()
        if self.record_path is not None:
            try:
                self.record_path.unlink()
            except OSError:
                pass
        report.removed = True
        return report

    def refusals(self) -> dict[str, tuple[str, float]]:
        """Peers whose last handshake initiation the interface refused, as base64 public key ->
        (reason, wall-clock seconds): what ``ravenvpn status`` shows (see
        :meth:`~ravenvpn.device.device.Device.refusals`). Empty when no interface runs. Cheap: one
        counter read while nothing was refused."""
        if self._device is None:
            return {}
        return {base64.b64encode(key).decode(): refusal for key, refusal in self._device.refusals().items()}

    @property
    def stopped(self) -> str | None:
        """Why the running interface stopped on its own (its pump thread ended), else None."""
        if self._device is None or self._device.running:
            return None
        return self._device.stop_reason or "the packet pump ended"

    # ------------------------------------------------------------------ device
    def _open(self, plan: NodePlan) -> None:
        device = Device(self.interface, busy_poll=self.busy_poll or 0.0)
        try:
            # Exactly the planned port and MTU from the start: no fallback to an ephemeral port when it
            # is busy (remote gateways would not find us there), and a first log line that is true.
            device.open(listen_port=plan.listen_port, mtu=plan.mtu)   # StartupError: it closed what it opened
        except StartupError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(_busy_port(plan.listen_port)) from None
            raise
        self._device = device
        device.start()                          # the pump, in a thread the device owns

    def _forget_stale_record(self) -> None:
        """A record left by an earlier process of this interface (a crash): remove its device if it is
        still that one (only then), then the record."""
        if self.record_path is None or not self.record_path.exists():
            return
        from .down import remove_recorded_device
        try:
            result = remove_recorded_device(self.interface, self.record_path.parent)
        except RavenError as exc:
            log.warning("%s", exc)
            return
        if result:
            log.info("an earlier ravenvpn up's device: %s", result)

    def _record(self) -> None:
        """Write the created device's identity (ifindex, TUN details) for ``ravenvpn down``."""
        if self.record_path is None or self._device is None:
            return
        try:
            with IPRoute() as ipr:
                # By name: the device was created under it a moment ago and holds it while it lives.
                link = ipr.get_links(ipr.link_lookup(ifname=self.interface)[0])[0]
            self.record_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            DeviceRecord.from_link(link).write(self.record_path)
        except (NetlinkError, OSError, IndexError) as exc:
            raise RavenError(f"cannot record interface {self.interface} in {self.record_path}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None

    @contextlib.contextmanager
    def _tunnel(self, wake: bool = True) -> Iterator[Tunnel]:
        """The running device's Tunnel, under the device's lock; the pump learns of the change on exit
        (unless not ``wake``: a look or a change that needs no action of the pump).

        The one place the driver reaches into the device.

        Raises:
            RavenError: no device runs (it was cleaned up meanwhile).
        """
        device = self._device
        if device is None:
            raise RavenError(f"{self.interface}: no device runs")
        if wake:
            with device.configure() as tunnel:
                yield tunnel
        else:
            with device.lock:
                yield device.tunnel

    def _send_underlay(self, datagrams: list[tuple[bytes, tuple[str, int]]], ttl: int | None = None) -> None:
        """Send datagrams from the tunnel's own UDP port (so through its NAT mapping), with IP TTL
        ``ttl`` when given."""
        device = self._device
        if device is not None:
            device.send_underlay(datagrams, ttl=ttl)

    def _direct_paths(self, plan: NodePlan) -> DirectPaths | None:
        """The direct-path manager (holepunch.py) following ``plan``; made on first need. Called
        with the device lock held."""
        if self.direct is None and plan.direct is not None and self.private_key is not None:
            self.direct = DirectPaths(self.interface, self.private_key, self._tunnel, state_dir=self.state_dir,
                                      underlay=self._send_underlay)
        if self.direct is not None:
            self.direct.update(plan.direct)
        return self.direct

    def _configure(self, plan: NodePlan, report: VpnReport) -> None:
        """Converge the running device to the plan; unchanged peers keep their sessions."""
        device = self._device
        assert device is not None and self.private_key is not None
        if device.listen_port != plan.listen_port:
            try:
                device.set_listen_port(plan.listen_port)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise RavenError(_busy_port(plan.listen_port)) from None
                raise RavenError(f"--port {plan.listen_port}: UDP port {plan.listen_port}: {exc.strerror}") from None
            report.settings_changed.append(f"listen port {plan.listen_port}")
        try:
            with IPRoute() as ipr:
                found = ipr.link_lookup(ifname=self.interface)
                if not found:
                    raise RavenError(f"interface {self.interface} disappeared")
                ipr.link("set", index=found[0], mtu=plan.mtu, state="up")
        except NetlinkError as exc:
            raise RavenError(f"--mtu {plan.mtu}: cannot set MTU {plan.mtu} on {self.interface}: {exc}") from None
        with self._tunnel() as tunnel:
            if tunnel.mtu != plan.mtu:
                report.settings_changed.append(f"mtu {plan.mtu}")
            tunnel.mtu = plan.mtu
            tunnel.private_key = self.private_key
            tunnel.relay = plan.relay
            self._direct_paths(plan)
            self._configure_peers(tunnel, plan, report)
        self._plan = plan
        self._schedule_hold_check()

    def _configure_peers(self, tunnel: Tunnel, plan: NodePlan, report: VpnReport, now: float | None = None) -> None:
        """The peers of ``plan`` on ``tunnel`` (under the device lock), relay moves held (module doc);
        ``now`` is time.monotonic() (a parameter for tests)."""
        desired = {p.public_key: p for p in plan.peers}
        allowed = self._hold_relay_moves(tunnel, plan, time.monotonic() if now is None else now)
        direct = self.direct        # direct edge<->edge paths: their peers and moved prefixes (holepunch.py)
        if direct is not None:
            allowed = {p.public_key: set(direct.allowed_ips(p, allowed[p.public_key])) for p in plan.peers}
        managed = direct.managed_keys() if direct is not None else set()
        for key in [k for k in tunnel.peers if k not in desired and k not in managed]:
            tunnel.remove_peer(key)
            self._endpoints.pop(key, None)
            report.peers_removed.append(base64.b64encode(key).decode())
        for want in plan.peers:
            is_new = want.public_key not in tunnel.peers
            peer = tunnel.add_peer(want.public_key)
            changed = False
            # Only a changed planned endpoint overrides one learnt by roaming. A peer removed behind
            # our back (`wg set ... remove`, the remedy for a refused peer) comes back new: set it.
            if (is_new or want.public_key not in self._endpoints
                    or self._endpoints[want.public_key] != want.endpoint):
                if want.endpoint is not None:
                    peer.endpoint = want.endpoint
                self._endpoints[want.public_key] = want.endpoint
                changed = True
            if set(tunnel.allowed_ips(peer)) != allowed[want.public_key]:
                tunnel.clear_allowed_ips(peer)
                for net in sorted(allowed[want.public_key], key=lambda n: (n.version, n)):
                    tunnel.add_allowed_ip(peer, net)
                changed = True
            if peer.persistent_keepalive_interval != want.persistent_keepalive:
                changed = True
            peer.persistent_keepalive_interval = want.persistent_keepalive
            if is_new:
                report.peers_added.append(want.gateway)
            elif changed:
                report.peers_changed.append(want.gateway)
        if direct is not None:
            direct.converge(tunnel)

    def _hold_relay_moves(self, tunnel: Tunnel, plan: NodePlan, now: float) -> dict[bytes, set[IPNetwork]]:
        """The allowed IPs to give each planned peer: the plan's, except prefixes whose move from another
        gateway's peer to a relay peer without a session is held on the peer that has them now (module
        doc). A move between two peers of one gateway (a failover) is never held."""
        allowed = {p.public_key: set(p.allowed_ips) for p in plan.peers}
        gateway_of = {p.public_key: p.gateway for p in plan.peers}
        owner = {net: key for key, peer in tunnel.peers.items() if key in allowed
                 for net in tunnel.allowed_ips(peer)}
        holds: dict[IPNetwork, _Hold] = {}
        for want in plan.peers:
            if not want.relays_for:
                continue
            new = tunnel.peers.get(want.public_key)
            answered = new is not None and new.current is not None
            for net in want.allowed_ips:
                hold = self._holds.get(net)
                if hold is None or hold.new != want.public_key or hold.old not in allowed:
                    old = owner.get(net)
                    if answered or old is None or gateway_of[old] == want.gateway:
                        continue
                    hold = _Hold(old, want.public_key, now)
                    log.info("%s: relay change: %s stays on the previous relay's peer until %s has a "
                             "session (at least %.1fs)", self.interface, net, want.gateway, RELAY_HOLD)
                elif answered and now - hold.since >= RELAY_HOLD:
                    log.info("%s: relay change: %s moves to %s", self.interface, net, want.gateway)
                    continue
                holds[net] = hold
                allowed[want.public_key].discard(net)
                allowed[hold.old].add(net)
        self._holds = holds
        return allowed

    def _schedule_hold_check(self) -> None:
        """While a relay move is held, check every _HOLD_CHECK seconds whether it may complete."""
        if not self._holds or self._hold_timer is not None:
            return
        timer = threading.Timer(_HOLD_CHECK, self._check_holds)
        timer.daemon = True
        timer.name = f"{self.interface}-relay-hold"
        self._hold_timer = timer
        timer.start()

    def _check_holds(self) -> None:
        with self._lock:
            self._hold_timer = None
            if self._device is None or self._plan is None or not self._holds:
                return
            now = time.monotonic()
            with self._tunnel() as tunnel:
                # Cheap until a move is due: the whole peer set is only walked then (many peers, one lock).
                if any(now - hold.since >= RELAY_HOLD and (peer := tunnel.peers.get(hold.new)) is not None
                       and peer.current is not None for hold in self._holds.values()):
                    self._configure_peers(tunnel, self._plan, VpnReport(), now)
            self._schedule_hold_check()


def _busy_port(port: int) -> str:
    """The one line for a busy ``--port``, naming who holds it when /proc tells (IPsec's NAT-T, charon,
    also uses 4500), else the likely culprits."""
    holders = port_holders(port)
    return (f"--port {port}: UDP port {port} is in use "
            f"{f'by {holders}' if holders else '(by another ravenvpn or WireGuard?)'}; pick another with --port")
