"""Sticky sockets: replies leave from the local address the peer sent to, as the kernel's WireGuard does.

A gateway with two addresses on one interface (or a peer that reaches it through an address of
another interface) must answer from the address the peer used, or the peer sees a new source,
roams to it, and a NAT or firewall in between may drop it. So every received datagram reports its
destination (IP_PKTINFO / IPV6_RECVPKTINFO) and the interface it came in on, and sends to that
endpoint carry the same source (a pktinfo control message).

But not overly sticky (the kernel's rules, drivers/net/wireguard/socket.c send4/send6):
- the source is dropped when that address goes away (RTM_DELADDR, or EINVAL from a send), and
  replies then leave from whatever the routing table picks;
- it is used only while the route back to the endpoint leaves through the interface the peer's
  packets came in on: when another route takes precedence, the routing table's source wins.
The route check is a netlink RTM_GETROUTE per endpoint, cached until a route or address changes.

Python 3.11's socket module has no IP_PKTINFO (8 on Linux); in_pktinfo and in6_pktinfo are built
with struct here.
"""
from __future__ import annotations

import io
import logging
import socket
import struct

log = logging.getLogger("ravenvpn.udp")

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
IN_PKTINFO = struct.Struct("=i4s4s")        # ipi_ifindex, ipi_spec_dst, ipi_addr
IN6_PKTINFO = struct.Struct("=16si")        # ipi6_addr, ipi6_ifindex
PKTINFO_CMSG_SPACE = socket.CMSG_SPACE(IN6_PKTINFO.size)   # the larger of the two

# rtnetlink
_NLMSG_HDR = struct.Struct("=IHHII")        # len, type, flags, seq, pid
_RTMSG = struct.Struct("=BBBBBBBBI")        # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_IFADDRMSG = struct.Struct("=BBBBi")        # family, prefixlen, flags, scope, index
_IFINFOMSG = struct.Struct("=BxHiII")       # family, type, index, flags, change
_RTATTR = struct.Struct("=HH")
_NLMSG_ERROR, _RTM_NEWLINK, _RTM_GETLINK, _RTM_NEWADDR, _RTM_DELADDR = 2, 16, 18, 20, 21
ARPHRD_NONE = 0xFFFE                        # the link type of TUN and WireGuard devices
_RTM_NEWROUTE, _RTM_DELROUTE, _RTM_GETROUTE = 24, 25, 26
_NLM_F_REQUEST = 1
_RTA_DST, _RTA_SRC, _RTA_OIF, _RTA_MARK = 1, 2, 4, 16
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_GROUPS = 0x10 | 0x40 | 0x100 | 0x400       # RTMGRP_IPV4_IFADDR, IPV4_ROUTE, IPV6_IFADDR, IPV6_ROUTE


def enable(sock: socket.socket, family: int) -> None:
    """Ask the kernel to report each datagram's destination address and interface."""
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)


def parse(level: int, kind: int, data: bytes) -> tuple[bytes, int] | None:
    """(local address, ifindex) from a received pktinfo control message, else None."""
    if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= IN_PKTINFO.size:
        ifindex, spec_dst, _addr = IN_PKTINFO.unpack_from(data)
        return spec_dst, ifindex
    if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= IN6_PKTINFO.size:
        addr, ifindex = IN6_PKTINFO.unpack_from(data)
        return addr, ifindex
    return None


def source_cmsg(address: bytes) -> tuple[int, int, bytes]:
    """The control message that makes a send leave from `address`; the interface is left to the
    routing table (ifindex 0), whose choice `RouteWatch.route_oif` has checked."""
    if len(address) == 4:
        return (socket.IPPROTO_IP, IP_PKTINFO, IN_PKTINFO.pack(0, address, bytes(4)))
    return (socket.IPPROTO_IPV6, IPV6_PKTINFO, IN6_PKTINFO.pack(address, 0))


def _attrs(data: bytes, offset: int, end: int):
    while offset + 4 <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < 4:
            return
        yield kind, data[offset + 4:offset + length]
        offset += (length + 3) & ~3


class RouteWatch:
    """Route lookups and address/route change events over rtnetlink (two raw sockets).

    Not thread-safe: used by the UDP transport under the device lock.
    """

    def __init__(self) -> None:
        self.events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                    socket.NETLINK_ROUTE)
        try:
            self.events.bind((0, _GROUPS))
            self.query = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
            self.query.settimeout(0.2)
        except BaseException:
            self.events.close()
            raise
        # FileIO.read returns None when nothing is pending, without the cost of an exception:
        # the check runs before every batch of sends.
        self._reader = io.FileIO(self.events.fileno(), "rb", closefd=False)
        self._seq = 0

    def changes(self) -> tuple[bool, list[bytes]]:
        """Drain pending events: (anything changed, local addresses that were deleted)."""
        changed = False
        deleted: list[bytes] = []
        while True:
            try:
                data = self._reader.read(65536)
            except OSError:         # ENOBUFS: events were lost; treat everything as changed
                changed = True
                continue
            if not data:
                return changed, deleted
            changed = True
            offset = 0
            while offset + _NLMSG_HDR.size <= len(data):
                length, kind, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data, offset)
                if length < _NLMSG_HDR.size:
                    break
                if kind == _RTM_DELADDR:
                    body = offset + _NLMSG_HDR.size + _IFADDRMSG.size
                    for attr, value in _attrs(data, body, offset + length):
                        if attr in (_IFA_LOCAL, _IFA_ADDRESS) and len(value) in (4, 16):
                            deleted.append(bytes(value))
                offset += (length + 3) & ~3

    def link_type(self, ifindex: int) -> int | None:
        """The ARPHRD_* type of interface `ifindex` (ARPHRD_NONE, 0xFFFE, for TUN and WireGuard
        devices), None if it cannot be had."""
        data = self._ask(_RTM_GETLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, ifindex, 0, 0), _RTM_NEWLINK)
        return None if data is None else _IFINFOMSG.unpack_from(data, _NLMSG_HDR.size)[1]

    def route_oif(self, destination: bytes, source: bytes | None, mark: int = 0) -> int | None:
        """The interface the kernel would send from `source` to `destination` through, for a socket
        with fwmark `mark` (as `ip route get DEST from SOURCE mark MARK`); None if there is no such
        route or the query fails."""
        family = socket.AF_INET if len(destination) == 4 else socket.AF_INET6
        bits = len(destination) * 8
        attrs = b""
        fields = [(_RTA_DST, destination)] + ([(_RTA_SRC, source)] if source else [])
        if mark:
            fields.append((_RTA_MARK, mark.to_bytes(4, "little")))
        for kind, value in fields:
            attrs += _RTATTR.pack(4 + len(value), kind) + value
        body = _RTMSG.pack(family, bits, bits if source else 0, 0, 0, 0, 0, 0, 0) + attrs
        data = self._ask(_RTM_GETROUTE, body, _RTM_NEWROUTE)   # None: no route (or the source is gone)
        if data is None:
            return None
        length = _NLMSG_HDR.unpack_from(data, 0)[0]
        for attr, value in _attrs(data, _NLMSG_HDR.size + _RTMSG.size, min(length, len(data))):
            if attr == _RTA_OIF and len(value) >= 4:
                return int.from_bytes(value[:4], "little")
        return None

    def _ask(self, request_kind: int, body: bytes, answer_kind: int) -> bytes | None:
        """One netlink request on the query socket; its answer if that is of ``answer_kind``, else
        None (an NLMSG_ERROR, or the socket failed: logged at debug)."""
        self._seq += 1
        request = _NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), request_kind, _NLM_F_REQUEST, self._seq, 0) + body
        try:
            self.query.send(request)
            while True:
                data = self.query.recv(65536)
                _length, kind, _flags, seq, _pid = _NLMSG_HDR.unpack_from(data, 0)
                if seq == self._seq:        # else an answer to a query that timed out earlier
                    return data if kind == answer_kind else None
        except OSError as exc:
            log.debug("netlink query %d failed: %s", request_kind, exc)
            return None

    def close(self) -> None:
        """Close both netlink sockets."""
        self._reader.close()
        self.events.close()
        self.query.close()
