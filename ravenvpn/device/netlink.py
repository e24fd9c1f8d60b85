"""Watch rtnetlink link events for our interface: MTU changes, deletion, moves between namespaces.

A raw NETLINK_ROUTE socket subscribed to RTMGRP_LINK is enough here and keeps the
daemon's start-up free of pyroute2's import cost.

Moves: `ip link set wg0 netns ns1` is how kernel WireGuard users keep the UDP socket in the
namespace the interface was born in (https://www.wireguard.com/netns/), and the kernel's
selftest (netns.sh) does it first thing. The move sends an RTM_DELLINK for our ifindex in the
old namespace, which must not be taken for a deletion. The message alone does not decide it: the
TUN fd does. A deleted device has detached our fd (ioctls fail with EBADFD); a moved one still
answers, and TUNGETDEVNETNS hands out its current namespace. The monitor then re-opens its socket
in that namespace and looks the ifindex up again by name, because the number may change with the
move and the old namespace may give it to another link (netns.sh creates the next wg0 there).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import select
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Callable, TypeVar

log = logging.getLogger("ravenvpn.netlink")

RTMGRP_LINK = 1
RTM_NEWLINK = 16
RTM_DELLINK = 17
IFLA_MTU = 4
NLMSG_HDR = struct.Struct("=IHHII")          # len, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")         # family, type, index, flags, change
RTATTR = struct.Struct("=HH")

TUNGETIFF = 0x800454D2                       # _IOR('T', 210, unsigned int): the device's current name
TUNGETDEVNETNS = 0x54E3                      # _IO('T', 227): fd of the device's current netns (Linux 5.2)
SIOCGIFMTU = 0x8921
CLONE_NEWNET = 0x40000000
# What the TUN fd's ioctls say once the device is gone (tun_get() finds no device).
GONE_ERRNOS = frozenset({errno.EBADFD, errno.EBADF, errno.ENODEV})

T = TypeVar("T")


@dataclass
class LinkEvent:
    """What happened to the watched link: `deleted`, or its MTU (bytes) if the event carried one.

    `moved`: the link went to another network namespace (the monitor now watches it there).
    """
    deleted: bool
    mtu: int | None
    moved: bool = False


def _align(n: int) -> int:
    return (n + 3) & ~3


def _open_link_socket() -> socket.socket:
    """A non-blocking rtnetlink socket in the calling thread's netns, joined to RTMGRP_LINK."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                         socket.NETLINK_ROUTE)
    try:
        sock.bind((0, RTMGRP_LINK))
    except BaseException:
        sock.close()
        raise
    return sock


def _in_netns(ns_fd: int, fn: Callable[[], T]) -> T:
    """Run `fn` in a short-lived thread that has joined the network namespace `ns_fd`.

    A thread may switch its own network namespace (setns(2)) without touching the rest of the
    process; sockets it creates stay in that namespace after it ends. Python 3.11 has no
    os.setns, hence ctypes. Raises OSError if setns fails, or whatever `fn` raises.
    """
    result: dict[str, object] = {}

    def target() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(ns_fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns: {os.strerror(err)}")
            result["value"] = fn()
        except BaseException as exc:        # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="ravenvpn-netns", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]


def _ns_inode_here() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


class LinkMonitor:
    """Follows one link's rtnetlink events; `read_events()` returns what happened to it.

    `ifindex` is the link's index in the calling thread's namespace; `tun_fd` the TUN fd that
    owns the link. With `tun_fd`, a move to another namespace is followed (see the module
    docstring); without it every RTM_DELLINK of `ifindex` counts as a deletion.

    `fileno()` is an epoll fd that stays the same across moves (the socket inside it changes),
    so the caller registers it once. Not thread-safe: one thread reads events.
    Raises OSError if the netlink socket cannot be opened.
    """

    def __init__(self, ifindex: int, tun_fd: int | None = None) -> None:
        self.ifindex = ifindex
        self.tun_fd = tun_fd
        self._epoll = select.epoll()
        try:
            self.sock = _open_link_socket()
            self._epoll.register(self.sock.fileno(), select.EPOLLIN)
        except BaseException:
            self._epoll.close()
            raise
        self.netns_inode = _ns_inode_here()

    def fileno(self) -> int:
        """An fd that becomes readable when link events wait (an epoll fd, so the pump's registration
        survives the monitor re-opening its netlink socket in another namespace)."""
        return self._epoll.fileno()

    def read_events(self) -> list[LinkEvent]:
        """Every pending event about the watched link (others are read and dropped); never blocks."""
        events: list[LinkEvent] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return events
            except OSError:         # ENOBUFS: we missed events, perhaps a move: ask the TUN fd
                events.append(self._locate(after_delete=False) or LinkEvent(deleted=False, mtu=None))
                continue
            for msg_type, mtu in self._parse(data):
                if msg_type != RTM_DELLINK:
                    events.append(LinkEvent(deleted=False, mtu=mtu))
                    continue
                event = self._locate(after_delete=True)
                if event is None:
                    continue
                events.append(event)
                if event.deleted:
                    return events
                break       # moved: the rest of `data` is about the old namespace

    def _parse(self, data: bytes) -> list[tuple[int, int | None]]:
        """(message type, MTU or None) of each link message about our ifindex in `data`."""
        found = []
        offset = 0
        while offset + NLMSG_HDR.size <= len(data):
            length, msg_type, _flags, _seq, _pid = NLMSG_HDR.unpack_from(data, offset)
            if length < NLMSG_HDR.size:
                break
            body = offset + NLMSG_HDR.size
            if msg_type in (RTM_NEWLINK, RTM_DELLINK) and length >= NLMSG_HDR.size + IFINFOMSG.size:
                _family, _type, index, _flags2, _change = IFINFOMSG.unpack_from(data, body)
                if index == self.ifindex:
                    found.append((msg_type, self._find_mtu(data, body + IFINFOMSG.size, offset + length)))
            offset += _align(length)
        return found

    def _locate(self, after_delete: bool) -> LinkEvent | None:
        """Ask the TUN fd where the link is now.

        Returns LinkEvent(deleted=True) if it is gone, a `moved` event (with its MTU there) if it
        now lives in another namespace, None if nothing changed. Without a TUN fd (or on a kernel
        without TUNGETDEVNETNS) an RTM_DELLINK is taken at its word.
        """
        if self.tun_fd is None:
            return LinkEvent(deleted=True, mtu=None) if after_delete else None
        try:
            # Both ioctls take the RTNL lock, so a move still in progress is finished first.
            name = fcntl.ioctl(self.tun_fd, TUNGETIFF, bytes(40))[:16].split(b"\0", 1)[0].decode()
            ns_fd = fcntl.ioctl(self.tun_fd, TUNGETDEVNETNS)
        except OSError as exc:
            if exc.errno in GONE_ERRNOS:
                return LinkEvent(deleted=True, mtu=None)
            log.warning("cannot ask the TUN device where it is (%s)", exc.strerror or exc)
            return LinkEvent(deleted=True, mtu=None) if after_delete else None
        try:
            inode = os.fstat(ns_fd).st_ino
            if inode == self.netns_inode:
                # Still here (or back already): its index may have changed on the way. Looked up
                # in that namespace, which need not be this thread's (after an earlier move).
                self.ifindex = _in_netns(ns_fd, lambda: socket.if_nametoindex(name))
                return None
            return self._follow(ns_fd, inode, name)
        except OSError as exc:
            # A link we cannot follow any more still works; only its MTU changes go unseen.
            log.warning("interface %s moved, but cannot watch it in its new namespace: %s",
                        name, exc.strerror or exc)
            return LinkEvent(deleted=False, mtu=None, moved=True)
        finally:
            os.close(ns_fd)

    def _follow(self, ns_fd: int, inode: int, name: str) -> LinkEvent:
        """Re-open the watch in namespace `ns_fd`: new socket, index and MTU looked up there."""
        def open_there() -> tuple[socket.socket, int, int]:
            sock = _open_link_socket()
            try:
                index = socket.if_nametoindex(name)
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as probe:
                    ifreq = fcntl.ioctl(probe, SIOCGIFMTU, struct.pack("16si20x", name.encode(), 0))
                mtu = struct.unpack_from("16si", ifreq)[1]
            except BaseException:
                sock.close()
                raise
            return sock, index, mtu

        sock, index, mtu = _in_netns(ns_fd, open_there)
        self._epoll.unregister(self.sock.fileno())
        self.sock.close()
        self.sock, self.ifindex, self.netns_inode = sock, index, inode
        self._epoll.register(sock.fileno(), select.EPOLLIN)
        log.info("interface %s moved to another network namespace (now ifindex %d); the UDP socket "
                 "stays where the interface was created", name, index)
        return LinkEvent(deleted=False, mtu=mtu, moved=True)

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
        """Close the netlink socket and the epoll fd. Not idempotent: call once."""
        self.sock.close()
        self._epoll.close()
