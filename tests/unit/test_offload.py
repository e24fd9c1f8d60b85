"""TUN offload helpers: TSO segmentation and GRO-style coalescing, checked against scapy."""
from __future__ import annotations

import os

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw, raw

from ravenvpn.device import offload


def valid_checksums(pkt: bytes) -> bool:
    """scapy recomputes every checksum when the fields are deleted: equal bytes = valid."""
    p = IP(pkt) if pkt[0] >> 4 == 4 else IPv6(pkt)
    q = p.copy()
    if IP in q:
        del q[IP].chksum
    for layer in (TCP, UDP):
        if layer in q:
            del q[layer].chksum
    return raw(q) == pkt


def super_packet(v6: bool, size: int, flags: str = "PA") -> tuple[bytes, int]:
    payload = os.urandom(size)
    ip = IPv6(src="fd00::1", dst="fd00::2") if v6 else IP(src="10.0.0.1", dst="10.0.0.2", id=100, flags="DF")
    pkt = raw(ip / TCP(sport=5201, dport=40000, seq=1000, ack=77, flags=flags,
                       options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]) / Raw(payload))
    return pkt, (40 if v6 else 20)


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("size", [1, 1388, 1389, 5000, 60000])
def test_tso_segments_are_valid_and_reassemble(v6: bool, size: int) -> None:
    pkt, l4 = super_packet(v6, size)
    mss = 1388
    # what the kernel hands a TUN reader: partial checksum (pseudo-header sum in the field)
    tcp_len = len(pkt) - l4
    buf = bytearray(pkt)
    buf[l4 + 16:l4 + 18] = offload.ones_sum(offload._pseudo_header(pkt, l4, tcp_len, 6)).to_bytes(2, "big")
    hdr = offload.VNET_HDR.pack(offload.F_NEEDS_CSUM, offload.GSO_TCPV6 if v6 else offload.GSO_TCPV4,
                                l4 + 32, mss, l4, 16)
    segments = offload.split_read(memoryview(hdr + bytes(buf)))
    assert len(segments) == max(1, -(-size // mss))
    data = b""
    for i, seg in enumerate(segments):
        assert valid_checksums(seg), i
        p = IPv6(seg) if v6 else IP(seg)
        assert p[TCP].seq == 1000 + i * mss
        assert ("P" in str(p[TCP].flags)) == (i == len(segments) - 1)
        if not v6:
            assert p[IP].id == 100 + i
        data += bytes(p[TCP].payload)
    assert data == pkt[l4 + 32:]


def test_partial_checksum_of_a_single_packet_is_completed() -> None:
    for pkt, l4, off in ((raw(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / Raw(b"abc")), 20, 6),
                         (raw(IP(src="10.0.0.1", dst="10.0.0.2") / TCP() / Raw(b"x" * 101)), 20, 16)):
        buf = bytearray(pkt)
        buf[l4 + off:l4 + off + 2] = offload.ones_sum(
            offload._pseudo_header(pkt, l4, len(pkt) - l4, pkt[9])).to_bytes(2, "big")
        hdr = offload.VNET_HDR.pack(offload.F_NEEDS_CSUM, 0, 0, 0, l4, off)
        (out,) = offload.split_read(memoryview(hdr + bytes(buf)))
        assert valid_checksums(out)


def segments_of(v6: bool, sizes: list[int], *, flags: str = "A") -> list[bytes]:
    out, seq = [], 5000
    for i, n in enumerate(sizes):
        ip = IPv6(src="fd00::1", dst="fd00::2") if v6 else IP(src="10.0.0.1", dst="10.0.0.2", id=7 + i, flags="DF")
        out.append(raw(ip / TCP(sport=5201, dport=40000, seq=seq, ack=9, flags=flags) / Raw(os.urandom(n))))
        seq += n
    return out


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_coalesce_merges_a_run_and_resegments_identically(v6: bool) -> None:
    segs = segments_of(v6, [1400] * 10 + [300])
    writes = offload.coalesce(segs)
    assert len(writes) == 1
    flags, gso_type, hdr_len, gso_size, cstart, coff = offload.VNET_HDR.unpack_from(writes[0])
    assert flags == offload.F_NEEDS_CSUM and gso_size == 1400 and coff == 16
    assert gso_type == (offload.GSO_TCPV6 if v6 else offload.GSO_TCPV4)
    again = offload.segment_tcp(memoryview(writes[0])[offload.VNET_HDR_LEN:], gso_size, cstart)
    assert again == segs


def test_coalesce_keeps_other_packets_and_order() -> None:
    segs = segments_of(False, [1400, 1400, 1400])
    other = raw(IP(src="10.0.0.9", dst="10.0.0.2") / UDP() / Raw(b"u"))
    syn = raw(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(flags="S"))
    writes = offload.coalesce([segs[0], segs[1], other, segs[2], syn])
    bodies = [w[offload.VNET_HDR_LEN:] for w in writes]
    assert len(writes) == 4 and bodies[1] == other and bodies[2] == segs[2] and bodies[3] == syn
    assert writes[2][:offload.VNET_HDR_LEN] == offload.PLAIN_HDR
    # out-of-order segments are not merged
    assert len(offload.coalesce([segs[1], segs[0]])) == 2


def test_a_short_or_pushed_segment_ends_a_run() -> None:
    segs = segments_of(False, [1400, 600, 1400])
    assert len(offload.coalesce(segs)) == 2
    pushed = segments_of(False, [1400, 1400], flags="PA") + segments_of(False, [1400])
    assert len(offload.coalesce(pushed)) >= 2


def test_coalesce_passes_runts_and_bogus_tcp_headers_through_without_raising() -> None:
    # Whatever a peer puts inside an authenticated packet must not take the pump down here.
    good = raw(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(flags="A") / Raw(b"x" * 100))
    bogus_offset = bytearray(good)
    bogus_offset[20 + 12] = 0x20    # TCP data offset 2 words: shorter than a TCP header
    packets = [b"", b"\x45", bytes(19), bytes(bogus_offset), bytes(bogus_offset), good]
    writes = offload.coalesce(packets)
    assert writes == [offload.PLAIN_HDR + p for p in packets]
