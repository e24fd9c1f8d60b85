"""Linux TUN device (IFF_TUN | IFF_NO_PI): the inner side of the tunnel.

Packets are whole IP packets with no prefix header. The device is created
non-persistent, so closing the fd removes the interface; and deleting the
interface (`ip link del`) makes reads fail, which the pump treats as "stop".
Later offloads (IFF_VNET_HDR + TUNSETOFFLOAD, IFF_MULTI_QUEUE) hook in here.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct

TUNSETIFF = 0x400454CA
SIOCGIFMTU = 0x8921
SIOCSIFMTU = 0x8922
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFNAMSIZ = 16

DEFAULT_MTU = 1420          # same default as wireguard-go
MAX_PACKET = 65535          # largest IP packet a TUN read can return

# Errors that mean "the interface is gone". Not EIO: that is what writes get while the link is
# merely down (e.g. before wg-quick sets it up), and those packets are just dropped.
GONE_ERRNOS = frozenset({errno.EBADFD, errno.EBADF})


def check_ifname(name: str) -> None:
    """Reject names the kernel (or the UAPI socket path) would not accept."""
    if not name or len(name.encode()) >= IFNAMSIZ:
        raise ValueError(f"invalid interface name {name!r} (1-{IFNAMSIZ - 1} bytes)")
    if name in (".", "..") or any(c in name for c in "/:%") or any(c.isspace() for c in name):
        raise ValueError(f"invalid interface name {name!r}")


def _ifreq(name: str, payload: bytes) -> bytes:
    return struct.pack("16s", name.encode()) + payload.ljust(24, b"\0")


class TunDevice:
    """One TUN interface; non-blocking fd with batch read/write helpers."""

    def __init__(self, name: str, mtu: int = DEFAULT_MTU) -> None:
        check_ifname(name)
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            ifr = fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, struct.pack("H", IFF_TUN | IFF_NO_PI)))
            self.name = ifr[:IFNAMSIZ].rstrip(b"\0").decode()
            self.ifindex = socket.if_nametoindex(self.name)
            self.set_mtu(mtu)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self._buf = bytearray(MAX_PACKET)
        self._view = memoryview(self._buf)
        self.write_errors = 0

    def fileno(self) -> int:
        return self.fd

    def set_mtu(self, mtu: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s, SIOCSIFMTU, _ifreq(self.name, struct.pack("i", mtu)))

    def get_mtu(self) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            ifr = fcntl.ioctl(s, SIOCGIFMTU, _ifreq(self.name, b""))
        return struct.unpack_from("i", ifr, IFNAMSIZ)[0]

    def read_batch(self, budget: int) -> list[bytes]:
        """Up to `budget` packets; fewer if the queue drains. Raises OSError if the device is gone."""
        packets: list[bytes] = []
        readv, fd, bufs, view = os.readv, self.fd, [self._buf], self._view
        for _ in range(budget):
            try:
                n = readv(fd, bufs)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in GONE_ERRNOS:
                    raise
                break
            if n == 0:          # fd detached from a deleted device on some kernels
                raise OSError(errno.EBADFD, "TUN device is gone")
            packets.append(bytes(view[:n]))
        return packets

    def write_batch(self, packets: list[bytes]) -> None:
        write, fd = os.write, self.fd
        for packet in packets:
            try:
                write(fd, packet)
            except OSError as exc:
                if exc.errno in GONE_ERRNOS:
                    raise
                # Link down (EIO), a full queue or a packet the kernel rejects: drop it, like a NIC would.
                self.write_errors += 1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
