"""Dual-stack UDP transport: one AF_INET and one AF_INET6 (V6ONLY) socket on the same port.

Endpoints handed to and taken from the core are the socket module's address tuples:
(ip, port) with an IPv4 or IPv6 literal without brackets, or (ip, port, 0, scope id) for a
link-local IPv6 address, whose scope (an interface index) says which link to use; sendto
takes both as they are. The socket is picked by family.

Rebinding (listen_port / fwmark changes from the UAPI thread) opens the new
sockets first and only then retires the old ones; the pump unregisters and
closes retired sockets itself, so an fd is never closed under its epoll.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import os
import select
import socket
import sys
import time

from . import sticky

#: (ip, port), or (ip, port, flowinfo 0, scope id) for a link-local IPv6 address (see above).
Endpoint = tuple[str, int] | tuple[str, int, int, int]

DEFAULT_PORT = 4500
SOCKET_BUFFER = 7 << 20     # wireguard-go asks for 7 MiB as well
MAX_DATAGRAM = 65535
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
SO_MARK = getattr(socket, "SO_MARK", 36)
SOL_IP = getattr(socket, "SOL_IP", 0)
IP_TTL = getattr(socket, "IP_TTL", 2)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
# UDP segmentation offloads (Linux >= 4.18 / 5.0): one sendmsg carries a run of equal-size
# datagrams, one recvmsg returns many coalesced ones. Far fewer syscalls per packet, which is
# what a Python dataplane pays for most; the datagrams on the wire are unchanged.
UDP_SEGMENT = 103
UDP_GRO = 104
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
# What a GSO send fails with, and what that means (see UdpTransport._send_failed):
# - the kernel has no UDP GSO at all: off for every destination;
_GSO_UNSUPPORTED = frozenset({errno.ENOPROTOOPT, errno.EOPNOTSUPP})
# - the path to this destination cannot take it: a route MTU below the segment size (EMSGSIZE on
#   kernels >= 6.14, EINVAL before), or a device without checksum offload (EIO). Those datagrams
#   go one by one (the kernel fragments them if it must); other destinations keep GSO.
_GSO_PATH_REFUSED = frozenset({errno.EMSGSIZE, errno.EINVAL, errno.EIO})
GSO_RETRY_AFTER = 30.0          # seconds before GSO is tried again toward such a destination
_BUSY = frozenset({errno.EAGAIN, errno.ENOBUFS})
_UNREACHABLE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN})
_FORBIDDEN = frozenset({errno.EPERM, errno.EACCES})
BACKOFF_WAIT = 0.001            # seconds to wait for buffer space before one retry
BACKOFF_BUDGET = 0.005          # most a single batch may spend waiting for buffer space
MAX_LEARNED = 1 << 16           # sticky sources remembered (endpoints that sent to us)
_RECV_CMSG_SPACE = socket.CMSG_SPACE(4) + sticky.PKTINFO_CMSG_SPACE

log = logging.getLogger("ravenvpn.udp")


def normalise_endpoint(host: str, port: int, flowinfo: int = 0, scope_id: int = 0) -> Endpoint:
    """One spelling per address for the core, from a socket address or a parsed UAPI endpoint:
    ::ffff:a.b.c.d becomes a.b.c.d; a link-local IPv6 address keeps `scope_id` (the index of the
    interface it is on; (ip, port, 0, scope_id)), any other address drops it, and the flow label.
    A ``%zone`` suffix on `host` is dropped (pass its index as `scope_id`)."""
    host = host.split("%", 1)[0]
    if ":" in host:
        address = ipaddress.IPv6Address(host)
        mapped = address.ipv4_mapped
        if mapped is not None:
            return (str(mapped), port)
        if scope_id and address.is_link_local:
            return (host, port, 0, scope_id)
    return (host, port)


def _tune(sock: socket.socket, fwmark: int) -> None:
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except OSError:     # needs CAP_NET_ADMIN; fall back to what rmem_max allows
            sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)
    if fwmark:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, fwmark)
    try:
        sock.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
    except OSError:
        pass  # older kernel: recvmsg then simply returns one datagram at a time
    try:
        sticky.enable(sock, sock.family)
    except OSError as exc:
        log.info("no packet info on UDP sockets (%s): replies leave from the routing table's source",
                 exc.strerror or exc)


def port_holders(port: int) -> str:
    """Who holds UDP ``port`` in this network namespace, for the message of a busy port:
    ``python3 (pid 812)``, ``charon (pid 77), python3 (pid 812)``, ``no process we can see (a kernel
    WireGuard interface ...?)`` for a socket no visible process has open (a kernel socket), or ""
    when nothing is bound there or /proc cannot be read. Reads /proc/net/udp{,6} (this thread's namespace) and the
    processes' fd links; never raises."""
    inodes: set[str] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table, encoding="ascii") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # sl local_address rem_address st tx_queue:rx_queue tr:tm retrnsmt uid timeout inode ...
            if len(fields) > 9 and int(fields[1].rpartition(":")[2], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return ""
    targets = {f"socket:[{inode}]" for inode in inodes}
    holders: list[str] = []
    try:
        pids = [d for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        pids = []
    for pid in pids:
        if not targets:
            break
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue            # gone meanwhile, or not ours to look at
        found = set()
        for fd in fds:
            try:
                found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass            # closed meanwhile (the listing's own fd, in our own process)
        hit = targets & found
        if hit:
            targets -= hit
            try:
                with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
                    name = f.read().strip()
            except OSError:
                name = "a process"
            holders.append(f"{name} (pid {pid})")
    if targets:
        # A socket no visible process has open: the kernel's own (kernel WireGuard, a VXLAN or FOU
        # port), or a process of another PID namespace.
        holders.append("no process we can see (a kernel WireGuard interface or other in-kernel tunnel?)")
    return ", ".join(holders)


def _open(family: int, port: int, fwmark: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        _tune(sock, fwmark)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    except BaseException:
        sock.close()
        raise
    return sock


def _open_pair(port: int, fwmark: int) -> tuple[socket.socket, socket.socket | None]:
    """Both sockets on one port; for an ephemeral port retry until the v6 side also gets it."""
    for _ in range(10):
        v4 = _open(socket.AF_INET, port, fwmark)
        actual = v4.getsockname()[1]
        try:
            return v4, _open(socket.AF_INET6, actual, fwmark)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE and port == 0:
                v4.close()
                continue
            # No IPv6 here (disabled, or the address is taken by someone else): carry on v4-only.
            log.info("IPv6 UDP socket unavailable on port %d: %s", actual, exc.strerror or exc)
            return v4, None
    raise OSError(errno.EADDRINUSE, "could not find a port free on both IPv4 and IPv6")


class UdpTransport:
    """The outer side of the tunnel. Not thread-safe: callers hold the device lock.

    Send errors each get a deliberate answer (counted in `error_counts` by kind, and in
    `send_errors` as datagrams lost):
    - EMSGSIZE/EINVAL/EIO on a GSO send: the path to that destination cannot take GSO (a smaller
      path MTU); these datagrams are sent again one by one (the kernel fragments them), and that
      destination goes without GSO for GSO_RETRY_AFTER seconds. Except EMSGSIZE where the path
      leaves through another tunnel device: dropped (fragments would feed a routing loop between
      tunnels). ENOPROTOOPT/EOPNOTSUPP: no GSO in this kernel, off for good.
    - EAGAIN/ENOBUFS: the socket or device queue is full: wait up to BACKOFF_WAIT once and retry
      (at most BACKOFF_BUDGET per batch), else drop the rest of that burst like a full NIC queue.
    - ENETUNREACH/EHOSTUNREACH: no route right now: counted, the peer is kept (routes come back).
    - EPERM/EACCES: a firewall rule refuses it: counted, logged once.
    - EINVAL on a send with a sticky source: that address is gone; dropped, the send retried.
    """

    def __init__(self) -> None:
        self.port = 0
        self.fwmark = 0
        self.v4: socket.socket | None = None
        self.v6: socket.socket | None = None
        self.generation = 0                 # bumped on every rebind so the pump re-registers
        self.retired: list[socket.socket] = []
        self.send_errors = 0                # datagrams not sent, all causes
        self.error_counts: dict[str, int] = {}   # send errors by kind: emsgsize, busy, unreachable, ...
        # Switched off for good if the kernel refuses it; RAVENVPN_UDP_GSO=0 turns it off (A/B benchmarks).
        self.gso = os.environ.get("RAVENVPN_UDP_GSO", "1") != "0"
        self._no_gso: dict[Endpoint, float] = {}     # destination -> monotonic time to try GSO again
        self._logged: set[str] = set()
        self._backoff_spent = 0.0
        # Sticky sources (sticky.py): the local address and interface each endpoint last sent to,
        # and the control messages sends to it carry ([] = let the routing table choose).
        self._learned: dict[Endpoint, tuple[bytes, int]] = {}
        self._cmsgs: dict[Endpoint, list[tuple[int, int, bytes]]] = {}
        self._routes: sticky.RouteWatch | None = None
        self._routes_failed = False

    @property
    def sockets(self) -> list[socket.socket]:
        """The open sockets: IPv4, and IPv6 where available."""
        return [s for s in (self.v4, self.v6) if s is not None]

    def bind_default(self) -> None:
        """The port used before any listen_port is configured: 4500, else an ephemeral one."""
        try:
            self.bind(DEFAULT_PORT)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            self.bind(0)
            holders = port_holders(DEFAULT_PORT)
            log.info("UDP port %d is busy%s; listening on port %d instead", DEFAULT_PORT,
                     f" (held by {holders})" if holders else "", self.port)

    def bind(self, port: int) -> None:
        """Listen on `port` (0 = ephemeral). On failure the old sockets stay in place."""
        if self.v4 is not None and port == self.port and port != 0:
            return
        v4, v6 = _open_pair(port, self.fwmark)
        self._swap(v4, v6)
        self.port = v4.getsockname()[1]

    def set_fwmark(self, mark: int) -> None:
        """Mark every datagram sent with SO_MARK `mark` (0 = none). OSError if refused."""
        for sock in self.sockets:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        self.fwmark = mark
        self._cmsgs.clear()     # the mark selects routes: check them again

    def _swap(self, v4: socket.socket, v6: socket.socket | None) -> None:
        self.retired.extend(self.sockets)
        self.v4, self.v6 = v4, v6
        self.generation += 1

    def take_retired(self) -> list[socket.socket]:
        """Sockets replaced by a rebind, for the pump to unregister and close (once)."""
        retired, self.retired = self.retired, []
        return retired

    # -- receive --

    def recv_batch(self, sock: socket.socket, budget: int) -> list[tuple[bytes, Endpoint]]:
        """Up to about `budget` datagrams; a GRO read may return many at once."""
        datagrams: list[tuple[bytes, Endpoint]] = []
        append = datagrams.append
        recv = sock.recvmsg
        v6 = sock is self.v6
        learned = self._learned
        pktinfo = sticky.parse
        errors = 0
        while len(datagrams) < budget:
            try:
                # recvmsg hands back bytes: slicing those copies each datagram once, no views.
                data, ancillary, _flags, addr = recv(MAX_DATAGRAM, _RECV_CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                # ICMP errors surface as ECONNREFUSED etc. on the next recv; they are not fatal.
                # An error that repeats (a closed socket) must not spin here with the lock held.
                log.debug("UDP receive error: %s", exc)
                errors += 1
                if errors >= budget:
                    break
                continue
            if v6:
                addr = normalise_endpoint(*addr)
            n = len(data)
            segment = n
            for level, kind, value in ancillary:
                if level == socket.SOL_UDP and kind == UDP_GRO:
                    segment = int.from_bytes(value[:4], "little") or n
                else:
                    local = pktinfo(level, kind, value)
                    if local is not None and learned.get(addr) != local:
                        self._learn(addr, local)
            if segment >= n:
                append((data, addr))
            else:
                for off in range(0, n, segment):
                    append((data[off:off + segment], addr))
        return datagrams

    def _learn(self, endpoint: Endpoint, local: tuple[bytes, int]) -> None:
        """The peer at `endpoint` sent to a (new) local address: replies leave from it.

        Learned before authentication (it costs nothing to keep), so bounded: datagrams from many
        forged sources evict the oldest entries, and a peer evicted that way is answered from the
        routing table's source until its next datagram."""
        learned, cmsgs = self._learned, self._cmsgs
        learned.pop(endpoint, None)
        if len(learned) >= MAX_LEARNED:
            oldest = next(iter(learned))
            del learned[oldest]
            cmsgs.pop(oldest, None)
        learned[endpoint] = local
        cmsgs.pop(endpoint, None)     # checked against the routing table on the next send
        if len(cmsgs) >= MAX_LEARNED:
            cmsgs.clear()             # a cache: entries come back on the next send

    # -- sticky sources --

    def _cmsg_for(self, endpoint: Endpoint) -> list[tuple[int, int, bytes]]:
        """Control messages for sends to `endpoint`: its sticky source if the route back leaves
        through the interface its packets came in on, else none."""
        local = self._learned.get(endpoint)
        cmsg: list[tuple[int, int, bytes]] = []
        if local is not None:
            routes = self._route_watch()
            if routes is not None:
                address, ifindex = local
                try:
                    destination = ipaddress.ip_address(endpoint[0]).packed
                except ValueError:
                    destination = b""
                if (len(destination) == len(address)
                        and routes.route_oif(destination, address, self.fwmark) == ifindex):
                    cmsg = [sticky.source_cmsg(address)]
        self._cmsgs[endpoint] = cmsg
        return cmsg

    def _route_watch(self) -> sticky.RouteWatch | None:
        if self._routes is None and not self._routes_failed:
            try:
                self._routes = sticky.RouteWatch()
            except OSError as exc:
                self._routes_failed = True
                log.info("cannot watch routes (%s): replies leave from the routing table's source",
                         exc.strerror or exc)
        return self._routes

    def _check_routes(self) -> None:
        """Forget sources of deleted addresses; after any route or address change, check every
        sticky source against the routing table again (lazily, on the next send). Called before
        every batch of sends, as the kernel checks on every send: an empty check is one read."""
        routes = self._routes
        if routes is None:
            return
        changed, deleted = routes.changes()
        if not changed:
            return
        self._cmsgs.clear()
        if deleted:
            gone = set(deleted)
            for endpoint in [e for e, (address, _ifindex) in self._learned.items() if address in gone]:
                del self._learned[endpoint]

    def _through_tunnel(self, endpoint: Endpoint) -> bool:
        """Whether the route toward `endpoint` leaves through a TUN or WireGuard device."""
        routes = self._route_watch()
        if routes is None:
            return False
        try:
            destination = ipaddress.ip_address(endpoint[0]).packed
        except ValueError:
            return False
        oif = routes.route_oif(destination, None, self.fwmark)
        return oif is not None and routes.link_type(oif) == sticky.ARPHRD_NONE

    def forget_source(self, endpoint: Endpoint) -> None:
        """Send to `endpoint` from whatever the routing table picks until it sends to us again."""
        self._learned.pop(endpoint, None)
        self._cmsgs[endpoint] = []

    # -- send --

    def _begin_batch(self) -> None:
        self._backoff_spent = 0.0
        if self._routes is not None:
            self._check_routes()

    def send_batch(self, datagrams: list[tuple[bytes, Endpoint]]) -> None:
        """Send single datagrams in order (handshakes, keepalives, one-packet batches); runs of data
        messages come as bursts (send_bursts)."""
        self._begin_batch()
        v4, v6 = self.v4, self.v6
        cmsgs = self._cmsgs
        for payload, endpoint in datagrams:
            sock = v6 if ":" in endpoint[0] else v4
            if sock is None:
                self.send_errors += 1
                continue
            cmsg = cmsgs.get(endpoint)
            if cmsg is None:
                cmsg = self._cmsg_for(endpoint)
            try:
                if cmsg:
                    sock.sendmsg([payload], cmsg, 0, endpoint)
                else:
                    sock.sendto(payload, endpoint)
            except OSError as exc:
                self._send_failed(sock, memoryview(payload), len(payload), endpoint, exc)

    def send_with_ttl(self, datagrams: list[tuple[bytes, Endpoint]], ttl: int) -> None:
        """Send single datagrams with IP TTL (IPv6 hop limit) ``ttl``: an ``IP_TTL``
        (``IPV6_HOPLIMIT``) control message per sendmsg (ip(7), ipv6(7)), beside the sticky source's;
        the socket's own TTL stays as it is. For NAT openers (Device.send_underlay), never data.

        Raises:
            ValueError: ``ttl`` is outside 1..255 (the kernel would refuse it with EINVAL).
        """
        if not 1 <= ttl <= 255:
            raise ValueError(f"TTL {ttl} is outside 1..255")
        value = ttl.to_bytes(4, sys.byteorder)         # a C int
        self._begin_batch()
        for payload, endpoint in datagrams:
            v6 = ":" in endpoint[0]
            sock = self.v6 if v6 else self.v4
            if sock is None:
                self.send_errors += 1
                continue
            cmsg = self._cmsgs.get(endpoint)
            if cmsg is None:
                cmsg = self._cmsg_for(endpoint)
            limit = (socket.IPPROTO_IPV6, IPV6_HOPLIMIT, value) if v6 else (SOL_IP, IP_TTL, value)
            try:
                sock.sendmsg([payload], [*cmsg, limit], 0, endpoint)
            except OSError as exc:
                self._send_failed(sock, memoryview(payload), len(payload), endpoint, exc)

    def send_bursts(self, bursts: list[tuple[memoryview, int, Endpoint]]) -> None:
        """Send runs of equal-size datagrams laid out back to back: one GSO sendmsg per
        GSO_MAX_SEGMENTS of them (or one sendto each, without GSO)."""
        self._begin_batch()
        cmsgs, no_gso = self._cmsgs, self._no_gso
        for buffer, size, endpoint in bursts:
            sock = self.v6 if ":" in endpoint[0] else self.v4
            if sock is None:
                self.send_errors += -(-len(buffer) // size)
                continue
            gso = self.gso
            if no_gso and endpoint in no_gso:
                if time.monotonic() < no_gso[endpoint]:
                    gso = False
                else:
                    del no_gso[endpoint]    # try again: the path MTU may have grown
            cmsg = cmsgs.get(endpoint)
            if cmsg is None:
                cmsg = self._cmsg_for(endpoint)
            step = size * min(GSO_MAX_SEGMENTS, max(1, GSO_MAX_BYTES // size)) if gso else size
            total = len(buffer)
            off = 0
            while off < total:
                chunk = buffer[off:off + step]
                try:
                    if len(chunk) <= size:
                        if cmsg:
                            sock.sendmsg([chunk], cmsg, 0, endpoint)
                        else:
                            sock.sendto(chunk, endpoint)
                    else:
                        sock.sendmsg([chunk], [(socket.SOL_UDP, UDP_SEGMENT, size.to_bytes(2, "little")), *cmsg],
                                     0, endpoint)
                except OSError as exc:
                    if not self._send_failed(sock, chunk, size, endpoint, exc):
                        break       # the rest of this burst would fail the same way
                    if not self.gso or endpoint in no_gso:
                        step = size
                    cmsg = cmsgs.get(endpoint) or []
                off += len(chunk)

    def _send_failed(self, sock: socket.socket, chunk: memoryview, size: int, endpoint: Endpoint,
                     exc: OSError) -> bool:
        """Answer a failed send of `chunk` (datagrams of `size` bytes); may send it again.
        Returns False if the rest of this destination's burst should not be tried."""
        code = exc.errno
        count = -(-len(chunk) // size)
        cmsg = self._cmsgs.get(endpoint)
        if code == errno.EINVAL and cmsg:
            # The sticky source is no longer ours (or not usable toward this endpoint).
            self._count("einval_source")
            self.forget_source(endpoint)
            return self._resend(sock, chunk, size, endpoint)
        if count > 1 and code in _GSO_PATH_REFUSED | _GSO_UNSUPPORTED:
            if code in _GSO_UNSUPPORTED:
                self.gso = False
                self._log_once("gso", logging.INFO, "UDP GSO unavailable (%s); sending datagrams one by one",
                               exc.strerror or exc)
            elif code == errno.EMSGSIZE and self._through_tunnel(endpoint):
                # The path leaves through another tunnel (a TUN or WireGuard device) whose MTU leaves
                # no room for ours: fragmenting would let a routing loop between two tunnels grow
                # without end (netns.sh's routing-loop check). Dropped, as a full-size packet
                # that does not fit a link is; that tunnel's MTU must be set below ours.
                self.send_errors += count
                self._count("emsgsize_tunnel")
                self._log_once(f"gso-tunnel {endpoint[0]}", logging.WARNING,
                               "UDP datagrams toward %s do not fit the tunnel device on the path (%s); "
                               "dropped: lower that tunnel's MTU", endpoint[0], exc.strerror or exc)
                return True
            else:
                self._no_gso[endpoint] = time.monotonic() + GSO_RETRY_AFTER
                self._count("gso_path_refused")
                self._log_once(f"gso-path {endpoint[0]}", logging.INFO,
                               "UDP GSO toward %s refused (%s: path MTU below the datagram size?); sending "
                               "its datagrams one by one", endpoint[0], exc.strerror or exc)
            return self._resend(sock, chunk, size, endpoint)
        if code in _BUSY:
            self._count("busy")
            if self._backoff_spent < BACKOFF_BUDGET:
                started = time.monotonic()
                if code == errno.EAGAIN:
                    poller = select.poll()
                    poller.register(sock, select.POLLOUT)
                    poller.poll(BACKOFF_WAIT * 1000)
                else:
                    time.sleep(BACKOFF_WAIT)    # ENOBUFS: a device queue; the socket cannot tell us when
                self._backoff_spent += time.monotonic() - started
                try:
                    self._send_plain(sock, chunk, size, endpoint)
                    return True
                except OSError:
                    pass
            self.send_errors += count
            return False
        self.send_errors += count
        if code in _UNREACHABLE:
            self._count("unreachable")
            log.debug("UDP send to %s:%d: %s (peer kept)", endpoint[0], endpoint[1], exc.strerror)
            return False
        if code in _FORBIDDEN:
            self._count("forbidden")
            self._log_once("forbidden", logging.WARNING, "UDP send to %s:%d refused (%s): a firewall rule? "
                           "(logged once; see error counts)", endpoint[0], endpoint[1], exc.strerror or exc)
            return False
        self._count(errno.errorcode.get(code or 0, "other").lower())
        log.debug("UDP send to %s:%d failed: %s", endpoint[0], endpoint[1], exc)
        return True

    def _send_plain(self, sock: socket.socket, chunk: memoryview, size: int, endpoint: Endpoint) -> None:
        """Send `chunk` again, GSO if it was a GSO chunk and GSO still applies, with the current source."""
        cmsg = self._cmsgs.get(endpoint) or []
        if len(chunk) > size:
            sock.sendmsg([chunk], [(socket.SOL_UDP, UDP_SEGMENT, size.to_bytes(2, "little")), *cmsg], 0, endpoint)
        elif cmsg:
            sock.sendmsg([chunk], cmsg, 0, endpoint)
        else:
            sock.sendto(chunk, endpoint)

    def _resend(self, sock: socket.socket, chunk: memoryview, size: int, endpoint: Endpoint) -> bool:
        """Send `chunk` again after a fallback: one by one if GSO no longer applies."""
        gso = self.gso and endpoint not in self._no_gso
        pieces = [chunk] if gso or len(chunk) <= size else [chunk[off:off + size] for off in range(0, len(chunk), size)]
        for piece in pieces:
            try:
                self._send_plain(sock, piece, size, endpoint)
            except OSError as exc:
                if exc.errno in _GSO_PATH_REFUSED | _GSO_UNSUPPORTED and len(piece) > size:
                    self._no_gso[endpoint] = time.monotonic() + GSO_RETRY_AFTER
                    return self._resend(sock, piece, size, endpoint)
                self.send_errors += -(-len(piece) // size)
                self._count(errno.errorcode.get(exc.errno or 0, "other").lower())
                if exc.errno in _UNREACHABLE | _FORBIDDEN:
                    return False
        return True

    def _count(self, kind: str) -> None:
        self.error_counts[kind] = self.error_counts.get(kind, 0) + 1

    def _log_once(self, key: str, level: int, message: str, *args) -> None:
        if key not in self._logged and len(self._logged) < 1000:
            self._logged.add(key)
            log.log(level, message, *args)

    def close(self) -> None:
        """Close every socket, retired ones and the route watch included."""
        for sock in self.sockets + self.take_retired():
            sock.close()
        self.v4 = self.v6 = None
        if self._routes is not None:
            self._routes.close()
            self._routes = None
