"""Watch rtnetlink link events for our interface: MTU changes and deletion.

A raw NETLINK_ROUTE socket subscribed to RTMGRP_LINK is enough here and keeps the
daemon's start-up free of pyroute2's import cost.
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

RTMGRP_LINK = 1
RTM_NEWLINK = 16
RTM_DELLINK = 17
IFLA_MTU = 4
NLMSG_HDR = struct.Struct("=IHHII")          # len, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")         # family, type, index, flags, change
RTATTR = struct.Struct("=HH")


@dataclass
class LinkEvent:
    deleted: bool
    mtu: int | None


def _align(n: int) -> int:
    return (n + 3) & ~3


class LinkMonitor:
    """Non-blocking socket; `read_events()` returns what happened to `ifindex`."""

    def __init__(self, ifindex: int) -> None:
        self.ifindex = ifindex
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        try:
            self.sock.bind((0, RTMGRP_LINK))
        except BaseException:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_events(self) -> list[LinkEvent]:
        events: list[LinkEvent] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return events
            except OSError:         # ENOBUFS: we missed events; the caller re-checks the link itself
                events.append(LinkEvent(deleted=False, mtu=None))
                continue
            events.extend(self._parse(data))

    def _parse(self, data: bytes) -> list[LinkEvent]:
        events = []
        offset = 0
        while offset + NLMSG_HDR.size <= len(data):
            length, msg_type, _flags, _seq, _pid = NLMSG_HDR.unpack_from(data, offset)
            if length < NLMSG_HDR.size:
                break
            body = offset + NLMSG_HDR.size
            if msg_type in (RTM_NEWLINK, RTM_DELLINK) and length >= NLMSG_HDR.size + IFINFOMSG.size:
                _family, _type, index, _flags2, _change = IFINFOMSG.unpack_from(data, body)
                if index == self.ifindex:
                    mtu = self._find_mtu(data, body + IFINFOMSG.size, offset + length)
                    events.append(LinkEvent(deleted=msg_type == RTM_DELLINK, mtu=mtu))
            offset += _align(length)
        return events

    @staticmethod
    def _find_mtu(data: bytes, start: int, end: int) -> int | None:
        while start + RTATTR.size <= end:
            rta_len, rta_type = RTATTR.unpack_from(data, start)
            if rta_len < RTATTR.size:
                break
            if rta_type == IFLA_MTU and rta_len >= RTATTR.size + 4:
                return struct.unpack_from("=I", data, start + RTATTR.size)[0]
            start += _align(rta_len)
        return None

    def close(self) -> None:
        self.sock.close()
