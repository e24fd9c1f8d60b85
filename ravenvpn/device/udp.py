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
import socket

#: (ip, port), or (ip, port, flowinfo 0, scope id) for a link-local IPv6 address (see above).
Endpoint = tuple[str, int] | tuple[str, int, int, int]

DEFAULT_PORT = 4500
SOCKET_BUFFER = 7 << 20     # wireguard-go asks for 7 MiB as well
MAX_DATAGRAM = 65535
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
SO_MARK = getattr(socket, "SO_MARK", 36)
# UDP segmentation offloads (Linux >= 4.18 / 5.0): one sendmsg carries a run of equal-size
# datagrams, one recvmsg returns many coalesced ones. Far fewer syscalls per packet, which is
# what a Python dataplane pays for most; the datagrams on the wire are unchanged.
UDP_SEGMENT = 103
UDP_GRO = 104
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
# What a GSO send fails with where the path cannot segment (no checksum offload, old kernel).
_GSO_REFUSED = (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP)
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)

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
    """The outer side of the tunnel. Not thread-safe: callers hold the device lock."""

    def __init__(self) -> None:
        self.port = 0
        self.fwmark = 0
        self.v4: socket.socket | None = None
        self.v6: socket.socket | None = None
        self.generation = 0                 # bumped on every rebind so the pump re-registers
        self.retired: list[socket.socket] = []
        self.send_errors = 0
        # Switched off for good if the kernel refuses it; RAVENVPN_UDP_GSO=0 turns it off (A/B benchmarks).
        self.gso = os.environ.get("RAVENVPN_UDP_GSO", "1") != "0"

    @property
    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.v4, self.v6) if s is not None]

    def bind_default(self) -> None:
        """The port used before any listen_port is configured: 4500, else an ephemeral one."""
        try:
            self.bind(DEFAULT_PORT)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            self.bind(0)
            log.info("UDP port %d is busy; listening on port %d instead", DEFAULT_PORT, self.port)

    def bind(self, port: int) -> None:
        """Listen on `port` (0 = ephemeral). On failure the old sockets stay in place."""
        if self.v4 is not None and port == self.port and port != 0:
            return
        v4, v6 = _open_pair(port, self.fwmark)
        self._swap(v4, v6)
        self.port = v4.getsockname()[1]

    def set_fwmark(self, mark: int) -> None:
        for sock in self.sockets:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        self.fwmark = mark

    def _swap(self, v4: socket.socket, v6: socket.socket | None) -> None:
        self.retired.extend(self.sockets)
        self.v4, self.v6 = v4, v6
        self.generation += 1

    def take_retired(self) -> list[socket.socket]:
        retired, self.retired = self.retired, []
        return retired

    def recv_batch(self, sock: socket.socket, budget: int) -> list[tuple[bytes, Endpoint]]:
        """Up to about `budget` datagrams; a GRO read may return many at once."""
        datagrams: list[tuple[bytes, Endpoint]] = []
        append = datagrams.append
        recv = sock.recvmsg
        v6 = sock is self.v6
        errors = 0
        while len(datagrams) < budget:
            try:
                # recvmsg hands back bytes: slicing those copies each datagram once, no views.
                data, ancillary, _flags, addr = recv(MAX_DATAGRAM, _GRO_CMSG_SPACE)
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
            if segment >= n:
                append((data, addr))
            else:
                for off in range(0, n, segment):
                    append((data[off:off + segment], addr))
        return datagrams

    def send_batch(self, datagrams: list[tuple[bytes, Endpoint]]) -> None:
        """Send single datagrams in order (handshakes, keepalives, one-packet batches); runs of data
        messages come as bursts (send_bursts)."""
        v4, v6 = self.v4, self.v6
        for payload, endpoint in datagrams:
            sock = v6 if ":" in endpoint[0] else v4
            if sock is None:
                self.send_errors += 1
                continue
            try:
                sock.sendto(payload, endpoint)
            except OSError as exc:
                # Full buffers, unreachable networks: drop like any lossy link; the core retries.
                self.send_errors += 1
                log.debug("UDP send to %s:%d failed: %s", endpoint[0], endpoint[1], exc)

    def send_bursts(self, bursts: list[tuple[memoryview, int, Endpoint]]) -> None:
        """Send runs of equal-size datagrams laid out back to back: one GSO sendmsg per
        GSO_MAX_SEGMENTS of them (or one sendto each, without GSO)."""
        for buffer, size, endpoint in bursts:
            sock = self.v6 if ":" in endpoint[0] else self.v4
            if sock is None:
                self.send_errors += -(-len(buffer) // size)
                continue
            step = size * min(GSO_MAX_SEGMENTS, max(1, GSO_MAX_BYTES // size)) if self.gso else size
            total = len(buffer)
            off = 0
            while off < total:
                chunk = buffer[off:off + step]
                try:
                    if len(chunk) <= size:
                        sock.sendto(chunk, endpoint)
                    else:
                        sock.sendmsg([chunk], [(socket.SOL_UDP, UDP_SEGMENT, size.to_bytes(2, "little"))], 0, endpoint)
                except OSError as exc:
                    if len(chunk) > size and exc.errno in _GSO_REFUSED:
                        log.info("UDP GSO unavailable (%s); sending datagrams one by one", exc.strerror or exc)
                        self.gso = False
                        step = size
                        continue
                    self.send_errors += -(-len(chunk) // size)
                    log.debug("UDP send to %s:%d failed: %s", endpoint[0], endpoint[1], exc)
                off += len(chunk)

    def close(self) -> None:
        for sock in self.sockets + self.take_retired():
            sock.close()
        self.v4 = self.v6 = None
