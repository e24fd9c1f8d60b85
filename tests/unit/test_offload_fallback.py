"""A kernel that refuses an offload costs a fallback, never data (issue 14 kind 10, field case N12).

Some kernels (6.6.44, 6.10.3, vendor kernels) accept IFF_VNET_HDR but refuse coalesced TUN writes
with EINVAL. As in the field case, the TUN fd is a pipe and os.write behaves like such a kernel:
every TCP payload byte must reach it, and after the first refusal nothing is coalesced any more.
"""
from __future__ import annotations

import errno
import io
import logging
import os
import socket
import struct

import pytest

from ravenvpn.device import offload, tun

SRC, DST = bytes([10, 244, 2, 10]), bytes([10, 244, 4, 10])
MSS = 1368


def segment(seq: int, payload: bytes) -> bytes:
    tcp = bytearray(struct.pack("!HHIIBBHHH", 45000, 10250, seq, 1, 5 << 4, 0x10, 502, 0, 0))
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 0x1234, 0x4000, 63, 6, 0, SRC, DST))
    ip[10:12] = offload.checksum(ip).to_bytes(2, "big")
    pseudo = SRC + DST + struct.pack("!BBH", 0, 6, 20 + len(payload))
    tcp[16:18] = offload.checksum(pseudo, tcp, payload).to_bytes(2, "big")
    return bytes(ip + tcp) + payload


class PickyKernel:
    """os.write for a pipe that refuses GSO writes: all of them, or those with a short tail."""

    def __init__(self, refuse_all: bool) -> None:
        self.refuse_all = refuse_all
        self.delivered = bytearray()
        self.refused = 0
        self.real_write = os.write

    def __call__(self, fd: int, data: bytes) -> int:
        _flags, gso_type, hdr_len, gso_size, _cs, _co = offload.VNET_HDR.unpack_from(data)
        body = data[offload.VNET_HDR_LEN:]
        if gso_type != offload.GSO_NONE:
            if self.refuse_all or (len(body) - hdr_len) % gso_size:
                self.refused += 1
                raise OSError(errno.EINVAL, "Invalid argument")
            self.delivered.extend(body[hdr_len:])
        else:
            self.delivered.extend(body[40:])
        return self.real_write(fd, data[:1])


@pytest.fixture
def device():
    dev = object.__new__(tun.TunDevice)     # no /dev/net/tun: only the write and read paths run
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    dev.fd, dev.offload, dev.write_errors, dev.offload_errors, dev.name = wfd, True, 0, 0, "fb0"
    yield dev, rfd
    os.close(rfd)
    os.close(wfd)


def drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except BlockingIOError:
        pass


@pytest.mark.parametrize("refuse_all", [False, True], ids=["short-tail", "every-gso-write"])
def test_a_refused_gso_write_is_written_segment_by_segment_and_coalescing_stops(
        device, refuse_all: bool, monkeypatch, caplog) -> None:
    dev, rfd = device
    kernel = PickyKernel(refuse_all)
    monkeypatch.setattr(os, "write", kernel)
    expected = bytearray()
    seq = 1
    with caplog.at_level(logging.WARNING, logger="ravenvpn.tun"):
        for batch in range(4):
            packets = []
            for i in range(10):
                payload = bytes([65 + batch]) * (MSS if i < 9 else 700)
                packets.append(segment(seq, payload))
                expected.extend(payload)
                seq += len(payload)
            dev.write_batch(packets)
            drain(rfd)
    assert kernel.delivered == expected          # no byte lost
    assert kernel.refused == 1                   # the first refusal turned coalescing off
    assert dev.coalescing is False and dev.write_errors == 0
    assert len([r for r in caplog.records if "refuses coalesced" in r.getMessage()]) == 1


def test_a_kernel_that_accepts_gso_writes_keeps_coalescing(device, monkeypatch) -> None:
    dev, rfd = device
    kernel = PickyKernel(refuse_all=False)
    monkeypatch.setattr(os, "write", kernel)
    dev.write_batch([segment(1 + i * MSS, b"x" * MSS) for i in range(8)])
    drain(rfd)
    assert kernel.refused == 0 and dev.coalescing is True and len(kernel.delivered) == 8 * MSS


def test_a_super_packet_read_that_cannot_be_split_turns_tso_reads_off(caplog) -> None:
    # A SOCK_SEQPACKET pair keeps message boundaries, as TUN reads do.
    theirs, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        ours.setblocking(False)
        dev = object.__new__(tun.TunDevice)
        dev.fd, dev.offload, dev.write_errors, dev.offload_errors, dev.name = ours.fileno(), True, 0, 0, "fb1"
        dev._reader = io.FileIO(ours.fileno(), "rb", closefd=False)
        dev.tso = True
        # GSO_UDP_L4 (5): not something we asked for or can split
        bogus = offload.VNET_HDR.pack(offload.F_NEEDS_CSUM, 5, 28, 1000, 20, 6) + bytes(3000)
        good = segment(1, b"y" * 100)
        theirs.send(bogus)
        theirs.send(offload.PLAIN_HDR + good)
        with caplog.at_level(logging.WARNING, logger="ravenvpn.tun"):
            packets = dev.read_batch(16)
        assert packets == [good]                 # what follows still comes through
        assert dev.offload_errors == 1 and dev.tso is False
        # (TUNSETOFFLOAD on a socket fails: the warning says so; on a TUN it turns TSO off)
        assert len([r for r in caplog.records if "offloads off" in r.getMessage()]) == 1
        theirs.send(bogus)
        dev.read_batch(16)
        assert len([r for r in caplog.records if "offloads off" in r.getMessage()]) == 1   # once
    finally:
        theirs.close()
        ours.close()
