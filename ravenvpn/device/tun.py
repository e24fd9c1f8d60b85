"""Linux TUN device (IFF_TUN | IFF_NO_PI): the inner side of the tunnel.

Packets are whole IP packets with no prefix header. The device is created
non-persistent, so closing the fd removes the interface; and deleting the
interface (`ip link del`) makes reads fail, which the pump treats as "stop".
With offloads (the default), every read and write carries a virtio-net header and the
kernel exchanges TCP super-packets with us: see offload.py for why and how.
"""
from __future__ import annotations

import errno
import fcntl
import io
import logging
import os
import socket
import struct

from . import offload

log = logging.getLogger("ravenvpn.tun")

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_VNET_HDR = 0x4000
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04
SIOCGIFMTU = 0x8921
SIOCSIFMTU = 0x8922
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFNAMSIZ = 16

DEFAULT_MTU = 1420          # same default as wireguard-go
MAX_PACKET = 65535          # largest IP packet a TUN read can return
# RAVENVPN_TUN_OFFLOAD (for A/B benchmarks): "full" = TSO reads + coalesced writes, "rx" = coalesced
# writes only (the kernel segments and checksums what we read), "0" = plain packets.
# "rx" is the default because it measured fastest: on 2 cores, TCP 550-610 Mbit/s against 470-520
# for plain packets and 330-380 for "full", where checksumming each segment in Python costs more
# than the read syscalls TSO saves.
OFFLOAD_MODE = os.environ.get("RAVENVPN_TUN_OFFLOAD", "rx")

# Errors that mean "the interface is gone". Not EIO: that is what writes get while the link is
# merely down (e.g. before wg-quick sets it up), and those packets are just dropped.
GONE_ERRNOS = frozenset({errno.EBADFD, errno.EBADF})


def check_ifname(name: str) -> None:
    """Reject names the kernel (or the UAPI socket path) would not accept.

    Raises:
        ValueError: empty, 16 bytes or longer, "." or "..", or holding "/", ":", "%" or whitespace.
    """
    if not name or len(name.encode()) >= IFNAMSIZ:
        raise ValueError(f"invalid interface name {name!r} (1-{IFNAMSIZ - 1} bytes)")
    if name in (".", "..") or any(c in name for c in "/:%") or any(c.isspace() for c in name):
        raise ValueError(f"invalid interface name {name!r}")


def _ifreq(name: str, payload: bytes) -> bytes:
    return struct.pack("16s", name.encode()) + payload.ljust(24, b"\0")


class TunDevice:
    """One TUN interface; non-blocking fd with batch read/write helpers."""

    def __init__(self, name: str, mtu: int = DEFAULT_MTU, offload_mode: str | None = None) -> None:
        check_ifname(name)
        mode = OFFLOAD_MODE if offload_mode is None else offload_mode
        want_offload = mode != "0"
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if want_offload else 0)
            ifr = fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, struct.pack("H", flags)))
            self.name = ifr[:IFNAMSIZ].rstrip(b"\0").decode()
            self.ifindex = socket.if_nametoindex(self.name)
            self.set_mtu(mtu)
            self.offload = want_offload
            if want_offload:
                self.tso = self._enable_offload(fd, tso=mode == "full")
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self._reader = io.FileIO(fd, "rb", closefd=False)
        self.write_errors = 0
        self.offload_errors = 0
        self.offload_fallbacks = 0      # refused GSO writes that were written again segment by segment

    @staticmethod
    def _enable_offload(fd: int, tso: bool) -> bool:
        """Virtio headers are on (IFF_VNET_HDR); ask for checksum and TSO offloads on top.
        Returns whether TSO reads are on."""
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", offload.VNET_HDR_LEN))
        if not tso:
            return False  # writes may still carry GSO super-packets; reads stay plain
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
        except OSError as exc:
            # Still correct with headers and no offloads: the kernel then sends plain packets.
            log.info("TUN offloads unavailable: %s", exc.strerror or exc)
            return False
        return True

    def _tso_refused(self, exc: Exception) -> None:
        """A super-packet we cannot segment came from the kernel: ask for plain packets from now
        on (the kernel then segments for us), so one lost read is the whole price."""
        if not self.tso:
            return
        self.tso = False
        try:
            fcntl.ioctl(self.fd, TUNSETOFFLOAD, 0)
        except OSError as err:
            log.warning("%s: cannot turn TUN offloads off: %s", self.name, err.strerror or err)
            return
        log.warning("%s: cannot split a super-packet read from the TUN (%s); TSO reads turned off", self.name, exc)

    def fileno(self) -> int:
        """The TUN fd (non-blocking), for epoll."""
        return self.fd

    def set_mtu(self, mtu: int) -> None:
        """Set the interface's MTU (bytes; SIOCSIFMTU). OSError if the kernel refuses it."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s, SIOCSIFMTU, _ifreq(self.name, struct.pack("i", mtu)))

    def get_mtu(self) -> int:
        """The interface's MTU in bytes (SIOCGIFMTU)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            ifr = fcntl.ioctl(s, SIOCGIFMTU, _ifreq(self.name, b""))
        return struct.unpack_from("i", ifr, IFNAMSIZ)[0]

    def read_batch(self, budget: int) -> list[bytes]:
        """Up to about `budget` packets (a TSO read yields many); fewer if the queue drains.

        Raises:
            OSError: the device is gone (EBADF/EBADFD), or was closed under this read.
        """
        packets: list[bytes] = []
        # FileIO.read returns None on EAGAIN instead of raising: every wake-up ends that way, and an
        # exception is a noticeable cost on the latency path of a single packet.
        read, size = self._reader.read, MAX_PACKET + offload.VNET_HDR_LEN
        vnet = self.offload
        plain, hdr_len, split = offload.PLAIN_HDR, offload.VNET_HDR_LEN, offload.split_read
        while len(packets) < budget:
            try:
                data = read(size)
            except OSError as exc:
                if exc.errno in GONE_ERRNOS:
                    raise
                break
            except ValueError:  # the reader was closed under us (close() racing a last read)
                raise OSError(errno.EBADF, "TUN device is closed") from None
            if data is None:    # drained
                break
            if not data:        # fd detached from a deleted device on some kernels
                raise OSError(errno.EBADFD, "TUN device is gone")
            if not vnet:
                packets.append(data)
            elif len(data) <= hdr_len:
                continue                        # a header and nothing else: no packet
            elif data[:hdr_len] == plain:
                packets.append(data[hdr_len:])  # the usual case unless TSO is on: a complete packet
            else:
                try:
                    packets.extend(split(memoryview(data)))
                except (offload.OffloadError, IndexError, ValueError) as exc:
                    self.offload_errors += 1
                    self._tso_refused(exc)
        return packets

    # Class-level defaults: also what a TunDevice built without __init__ (tests, tools) starts with.
    coalescing = True       # merge TCP segments into GSO writes; off for good once the kernel refuses one
    tso = False             # TSO reads asked for (TUNSETOFFLOAD); off for good if we cannot split what comes

    def write_batch(self, packets: list[bytes]) -> None:
        """Write decrypted packets to the TUN: coalesced into GSO writes where offloads allow.

        Some kernels accept IFF_VNET_HDR yet refuse GSO writes with EINVAL (6.6.44 and 6.10.3 for a
        short last segment, vendor kernels for every one). Then the refused super-packet is cut back
        into its segments and written one by one, and coalescing stays off for this device: the
        refusal costs one fallback, never data. Raises OSError only if the device is gone.
        """
        write, fd = os.write, self.fd
        if not self.offload:
            writes = packets
        elif self.coalescing:
            writes = offload.coalesce(packets)
        else:
            plain = offload.PLAIN_HDR
            writes = [plain + p for p in packets]
        for packet in writes:
            try:
                write(fd, packet)
            except OSError as exc:
                if exc.errno in GONE_ERRNOS:
                    raise
                if exc.errno == errno.EINVAL and self.offload and packet[1] != offload.GSO_NONE:
                    self._gso_write_refused(packet, exc)
                    continue
                # Link down (EIO), a full queue or a packet the kernel rejects: drop it, like a NIC would.
                self.write_errors += 1

    def _gso_write_refused(self, packet: bytes, exc: OSError) -> None:
        """The kernel refused a coalesced write: write its segments singly, stop coalescing."""
        if self.coalescing:
            self.coalescing = False
            log.warning("%s: the kernel refuses coalesced TUN writes (%s); writing packets one by one "
                        "from now on", self.name, exc.strerror or exc)
        try:
            segments = offload.split_read(memoryview(packet))
        except (offload.OffloadError, IndexError, ValueError):
            self.write_errors += 1
            return
        self.offload_fallbacks = getattr(self, "offload_fallbacks", 0) + 1
        write, fd, plain = os.write, self.fd, offload.PLAIN_HDR
        for segment in segments:
            try:
                write(fd, plain + segment)
            except OSError as err:
                if err.errno in GONE_ERRNOS:
                    raise
                self.write_errors += 1

    def close(self) -> None:
        """Close the fd (idempotent); the device is non-persistent, so the interface goes too."""
        if self.fd >= 0:
            self._reader.close()    # closefd=False: marks the reader closed, the fd is closed below
            os.close(self.fd)
            self.fd = -1
