"""The liveness protocol on a real socket: one UDP socket and one thread per agent.

:class:`LivenessService` binds ``<private IP>:<port>`` (UDP, :data:`~.wire.LIVENESS_PORT` by default:
the node's InternalIP, where both the LAN messages and the CLAIMs out of the tunnel are addressed), feeds every datagram and a tick every few milliseconds to the
sans-I/O :class:`~.machine.Liveness`, sends what it returns and calls ``on_change`` (from its own
thread) whenever the :class:`~.machine.LivenessView` changes. It learns the arrival interface of
each datagram (``IP_PKTINFO``): a CLAIM counts only when it came out of the tunnel interface.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable

from ...device.udp import port_holders
from ...errors import RavenError
from .machine import DomainConfig, Liveness, LivenessView

__all__ = ["LivenessService"]

log = logging.getLogger("ravenvpn.liveness")
_MAX_WAIT = 0.05     # seconds: the longest sleep of the thread (the clock granularity of the protocol)
_PKTINFO = struct.Struct("=i4s4s")   # struct in_pktinfo: ifindex, spec_dst, addr
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)   # Linux <linux/in.h>; the socket module has it from 3.12


class LivenessService:
    """Runs :class:`~.machine.Liveness` for one node (see the module docstring).

    Args:
        config: the domain as the file says (:func:`ravenvpn.raven.plan.failover.liveness_config`).
        private_key: the node's WireGuard static key (32 bytes) if it has one: candidates need it.
        tunnel_interface: the name of the tunnel interface (CLAIMs are accepted only from it).
        on_change: called with the new view, from the service's thread, after every change.

    Raises:
        RavenError: the port cannot be bound (one line naming it).

    Thread-safety: :meth:`configure`, :meth:`view`, :meth:`announce`, :meth:`resign` and
    :meth:`close` may be called from any thread.
    """

    def __init__(self, config: DomainConfig, private_key: bytes | None, tunnel_interface: str,
                 on_change: Callable[[LivenessView], None]) -> None:
        self._lock = threading.Lock()
        self._machine = Liveness(config, private_key, time.monotonic())
        self._tunnel_interface = tunnel_interface
        self._on_change = on_change
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            self._sock.bind((config.address, config.port))
        except OSError as exc:
            self._sock.close()
            holders = port_holders(config.port) if exc.errno == errno.EADDRINUSE else ""
            held = f" (held by {holders})" if holders else ""
            raise RavenError(f"liveness UDP port {config.address}:{config.port}: {exc.strerror or exc}{held} "
                             "(--liveness-port picks another; every node of a domain must use the same)") from None
        self._sock.setblocking(False)
        self._view = self._machine.view()
        self._view_lock = threading.Lock()     # _check_view runs in the service's and the agent's thread
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="liveness", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ API
    def view(self) -> LivenessView:
        """Who is active now, as this node's liveness sees it."""
        with self._lock:
            return self._machine.view()

    def live_candidates(self) -> list[str]:
        """The other candidates of the domain that are alive now (node names)."""
        with self._lock:
            return sorted(n for n, st in self._machine.peer_states().items() if st.alive)

    def configure(self, config: DomainConfig) -> None:
        """Follow a new cluster file (candidates, addresses, remote gateways)."""
        with self._lock:
            if config != self._machine.config:
                self._machine.configure(config, time.monotonic())

    def announce(self) -> None:
        """Send CLAIMs now (the agent calls it once its routes through the tunnel are in place)."""
        with self._lock:
            self._machine.claim_now()
            out = self._machine.tick(time.monotonic())
        self._send(out)

    def resign(self) -> None:
        """Planned handover: tell the watchers and remote gateways we are going; never claim again."""
        with self._lock:
            out = self._machine.resign(time.monotonic())
        self._send(out)
        self._check_view()

    def close(self) -> None:
        """Stop the thread and close the socket. Idempotent."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        try:
            self._sock.close()
        except OSError:
            pass

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except (OSError, ValueError):
                if self._stop.is_set():
                    return          # closed under us
                log.exception("liveness: socket error (continuing)")
                time.sleep(_MAX_WAIT)
            except Exception:       # a bug must not silence us: the domain would think we died
                log.exception("liveness: unexpected error (continuing)")
                time.sleep(_MAX_WAIT)

    def _step(self) -> None:
        """One wake-up: wait for datagrams or the next deadline, handle them, tick, send, report."""
        with self._lock:
            wait = min(_MAX_WAIT, max(0.0, self._machine.next_deadline() - time.monotonic()))
        readable, _, _ = select.select([self._sock], [], [], wait)
        out = []
        if readable:
            out.extend(self._drain())
        with self._lock:
            out.extend(self._machine.tick(time.monotonic()))
        self._send(out)
        self._check_view()

    def _drain(self) -> list[tuple[bytes, tuple[str, int]]]:
        out = []
        for _ in range(64):
            try:
                data, anc, _flags, source = self._sock.recvmsg(256, socket.CMSG_SPACE(_PKTINFO.size))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            via_tunnel = False
            for level, kind, payload in anc:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(payload) >= _PKTINFO.size:
                    via_tunnel = _PKTINFO.unpack_from(payload)[0] == self._tunnel_index()
            with self._lock:
                out.extend(self._machine.receive(data, (source[0], source[1]), time.monotonic(), via_tunnel))
        return out

    def _tunnel_index(self) -> int:
        try:
            return socket.if_nametoindex(self._tunnel_interface)
        except OSError:
            return -1           # no tunnel interface: nothing arrives through it

    def _send(self, out: list[tuple[bytes, tuple[str, int]]]) -> None:
        with self._lock:
            remote = {c.address for _gw, cands in self._machine.config.remote for c in cands}
        tunnel = -1
        for data, addr in out:
            try:
                if addr[0] in remote:
                    # A CLAIM to another domain's gateway: through the tunnel interface or not at all.
                    # Routing alone would send it in clear on the underlay whenever the route into
                    # the tunnel is missing (at start, before the routes are in place), to a private
                    # address that means nothing (or another host) outside that domain.
                    if tunnel == -1:
                        tunnel = self._tunnel_index()
                    if tunnel == -1:
                        continue
                    pktinfo = _PKTINFO.pack(tunnel, bytes(4), bytes(4))   # out through this interface
                    self._sock.sendmsg([data], [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)], 0, addr)
                else:
                    self._sock.sendto(data, addr)
            except OSError as exc:
                # No route (the active gateway gone), a full buffer: liveness is best effort per datagram.
                if exc.errno not in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EAGAIN, errno.ENOBUFS,
                                     errno.EPERM, errno.ECONNREFUSED, errno.EINVAL):
                    log.debug("liveness send to %s: %s", addr[0], exc)

    def _check_view(self) -> None:
        with self._view_lock:
            with self._lock:
                view = self._machine.view()
            if view == self._view:
                return
            self._view = view
            try:
                self._on_change(view)
            except Exception:    # the agent's callback must not kill liveness
                log.exception("liveness callback failed")
