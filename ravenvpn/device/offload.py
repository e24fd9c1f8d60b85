"""TUN offloads: the virtio-net header, TSO segmentation on read, TCP coalescing on write.

With IFF_VNET_HDR and TUNSETOFFLOAD(CSUM|TSO4|TSO6) the kernel hands the TUN reader whole
TCP super-packets (up to 64 KB) with a partial checksum, and accepts super-packets on
write. One syscall then moves dozens of segments, and the kernel's TCP stack on both
ends works on large buffers: that is where a userspace tunnel's CPU goes.

Everything on the wire stays ordinary MTU-sized packets with full checksums, so peers
without offloads (wireguard-go, the kernel) see no difference.

Checksums use the identity 2^16 = 1 (mod 0xFFFF): the ones' complement sum of 16-bit
words equals the big-endian integer of the bytes modulo 0xFFFF, which CPython computes
in C. This module is pure: bytes in, bytes out.
"""
from __future__ import annotations

import struct

VNET_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_HDR_LEN = VNET_HDR.size         # 10
F_NEEDS_CSUM = 1
GSO_NONE, GSO_TCPV4, GSO_TCPV6 = 0, 1, 4
GSO_ECN = 0x80
PLAIN_HDR = bytes(VNET_HDR_LEN)      # a complete packet, checksum already valid

_TCP_FIN, _TCP_PSH, _TCP_ACK, _TCP_CWR = 0x01, 0x08, 0x10, 0x80
_MAX_SUPER = 65535
_PROTO_TCP = 6


class OffloadError(ValueError):
    """A super-packet we cannot segment (dropped by the caller, counted)."""


def ones_sum(data: bytes | memoryview) -> int:
    """The 16-bit ones' complement sum of `data` (odd lengths padded), as 0..0xFFFE."""
    if len(data) & 1:
        data = bytes(data) + b"\x00"
    return int.from_bytes(data, "big") % 0xFFFF


def checksum(*parts: bytes | memoryview) -> int:
    """Internet checksum over the concatenation of parts (each but the last of even length)."""
    total = 0
    for part in parts:
        total += ones_sum(part)
    total %= 0xFFFF
    return 0xFFFF - total if total else 0xFFFF


def _pseudo_header(packet: bytes | memoryview, l4_offset: int, l4_length: int, proto: int) -> bytes:
    if packet[0] >> 4 == 4:
        return bytes(packet[12:20]) + struct.pack("!BBH", 0, proto, l4_length)
    return bytes(packet[8:40]) + struct.pack("!IxxxB", l4_length, proto)


def complete_checksum(packet: bytearray, csum_start: int, csum_offset: int) -> None:
    """Finish a partial checksum: the field holds the pseudo-header sum, the rest is ours to add."""
    where = csum_start + csum_offset
    if where + 2 > len(packet):
        raise OffloadError("checksum offset beyond the packet")
    packet[where:where + 2] = checksum(memoryview(packet)[csum_start:]).to_bytes(2, "big")


def split_read(data: memoryview) -> list[bytes]:
    """One TUN read (virtio header + packet) into ready-to-encrypt IP packets."""
    if len(data) <= VNET_HDR_LEN:
        return []
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(data)
    body = data[VNET_HDR_LEN:]
    if gso_type == GSO_NONE:
        if flags & F_NEEDS_CSUM:
            packet = bytearray(body)
            complete_checksum(packet, csum_start, csum_offset)
            return [bytes(packet)]
        return [bytes(body)]
    if gso_type & ~GSO_ECN not in (GSO_TCPV4, GSO_TCPV6) or not gso_size:
        raise OffloadError(f"unsupported GSO type {gso_type}")
    return segment_tcp(body, gso_size, csum_start)


def segment_tcp(packet: memoryview | bytes, mss: int, l4: int) -> list[bytes]:
    """Cut a TCP super-packet into MSS-sized segments with correct IP and TCP headers."""
    packet = memoryview(packet)
    v4 = packet[0] >> 4 == 4
    if l4 + 20 > len(packet):
        raise OffloadError("TCP header beyond the packet")
    tcp_hlen = (packet[l4 + 12] >> 4) * 4
    hlen = l4 + tcp_hlen
    payload = packet[hlen:]
    ip_template = bytearray(packet[:l4])
    tcp_template = bytearray(packet[l4:hlen])
    tcp_template[16:18] = b"\x00\x00"
    seq = int.from_bytes(tcp_template[4:8], "big")
    flags = tcp_template[13]
    ip_id = int.from_bytes(ip_template[4:6], "big") if v4 else 0
    segments: list[bytes] = []
    total = len(payload)
    for index, off in enumerate(range(0, total, mss)):
        chunk = payload[off:off + mss]
        tcp_len = tcp_hlen + len(chunk)
        ip = bytearray(ip_template)
        if v4:
            ip[2:4] = (l4 + tcp_len).to_bytes(2, "big")
            ip[4:6] = ((ip_id + index) & 0xFFFF).to_bytes(2, "big")
            ip[10:12] = b"\x00\x00"
            ip[10:12] = checksum(ip).to_bytes(2, "big")
        else:
            ip[4:6] = (l4 - 40 + tcp_len).to_bytes(2, "big")
        pseudo = _pseudo_header(ip, l4, tcp_len, _PROTO_TCP)
        tcp = bytearray(tcp_template)
        tcp[4:8] = ((seq + off) & 0xFFFFFFFF).to_bytes(4, "big")
        seg_flags = flags
        if off + mss < total:
            seg_flags &= ~(_TCP_FIN | _TCP_PSH)   # only the last segment ends or pushes
        if index:
            seg_flags &= ~_TCP_CWR                # CWR belongs to the first segment only
        tcp[13] = seg_flags
        tcp[16:18] = checksum(pseudo, tcp, chunk).to_bytes(2, "big")
        segments.append(bytes(ip) + bytes(tcp) + bytes(chunk))
    return segments


def _merge_layout(pkt: bytes) -> tuple[int, int] | None:
    """(TCP offset, header length) of a data segment that may start a merge, else None."""
    if len(pkt) < 40:   # shorter than any IPv4 + TCP header (also keeps a runt from raising IndexError)
        return None
    if pkt[0] == 0x45:  # IPv4 without options
        if pkt[9] != _PROTO_TCP or pkt[6] & 0x3F or pkt[7]:  # fragments
            return None
        l4 = 20
    elif pkt[0] >> 4 == 6:
        if len(pkt) < 60 or pkt[6] != _PROTO_TCP:
            return None
        l4 = 40
    else:
        return None
    tcp_hlen = (pkt[l4 + 12] >> 4) * 4
    if tcp_hlen < 20:
        return None   # a bogus data offset: the kernel would reject the merged super-packet
    flags = pkt[l4 + 13]
    hlen = l4 + tcp_hlen
    if flags & ~(_TCP_ACK | _TCP_PSH) or not flags & _TCP_ACK or len(pkt) <= hlen:
        return None   # SYN/FIN/RST/URG/ECE/CWR and pure ACKs go through alone
    return l4, hlen


def _header_mask(l4: int, hlen: int) -> int:
    """Header bits that must be equal for two segments to merge, as the kernel's GRO requires:
    all but the IP length (and IPv4 ID and checksum), the TCP sequence, PSH and checksum."""
    mask = bytearray(b"\xff" * hlen)
    if l4 == 20:
        mask[2:6] = bytes(4)
        mask[10:12] = bytes(2)
    else:
        mask[4:6] = bytes(2)
    mask[l4 + 4:l4 + 8] = bytes(4)
    mask[l4 + 13] &= ~_TCP_PSH & 0xFF
    mask[l4 + 16:l4 + 18] = bytes(2)
    return int.from_bytes(mask, "big")


_MASKS = {(l4, l4 + tcp_hlen): _header_mask(l4, l4 + tcp_hlen) for l4 in (20, 40) for tcp_hlen in range(20, 64, 4)}


def coalesce(packets: list[bytes]) -> list[bytes]:
    """Turn decrypted packets into TUN writes (virtio header + packet), merging runs of
    consecutive in-order TCP segments of one flow into GSO super-packets."""
    writes: list[bytes] = []
    append = writes.append
    from_bytes = int.from_bytes
    i, count = 0, len(packets)
    while i < count:
        first = packets[i]
        i += 1
        layout = _merge_layout(first) if i < count else None
        if layout is None:
            append(PLAIN_HDR + first)
            continue
        l4, hlen = layout
        mask = _MASKS[layout]
        # One integer compare per segment checks every header field GRO needs equal.
        key = from_bytes(first[:hlen], "big") & mask
        mss = len(first) - hlen
        seq = from_bytes(first[l4 + 4:l4 + 8], "big") + mss
        size = len(first)
        pushed = first[l4 + 13] & _TCP_PSH
        run = [first]
        while i < count and not pushed:
            pkt = packets[i]
            plen = len(pkt) - hlen
            if (plen <= 0 or plen > mss or size + plen > _MAX_SUPER
                    or from_bytes(pkt[:hlen], "big") & mask != key
                    or from_bytes(pkt[l4 + 4:l4 + 8], "big") != seq & 0xFFFFFFFF):
                break
            run.append(pkt)
            size += plen
            seq += plen
            i += 1
            pushed = pkt[l4 + 13] & _TCP_PSH
            if plen < mss:
                break  # a short segment ends a GSO run
        if len(run) == 1:
            append(PLAIN_HDR + first)
        else:
            append(_merge(run, l4, hlen, mss, bool(pushed), size))
    return writes


def _merge(run: list[bytes], l4: int, hlen: int, mss: int, pushed: bool, size: int) -> bytes:
    """One TUN write for a run of `size` bytes (headers once): virtio header, header, payloads."""
    first = run[0]
    body_len = size - hlen
    header = bytearray(first[:hlen])
    tcp_len = hlen - l4 + body_len
    if l4 == 20:
        header[2:4] = size.to_bytes(2, "big")
        header[10:12] = b"\x00\x00"
        header[10:12] = checksum(header[:20]).to_bytes(2, "big")
        gso_type = GSO_TCPV4
    else:
        header[4:6] = tcp_len.to_bytes(2, "big")
        gso_type = GSO_TCPV6
    if pushed:
        header[l4 + 13] |= _TCP_PSH
    # CHECKSUM_PARTIAL: the field carries the pseudo-header sum; the kernel adds the rest if it must.
    partial = ones_sum(_pseudo_header(header, l4, tcp_len, _PROTO_TCP))
    header[l4 + 16:l4 + 18] = (partial or 0xFFFF).to_bytes(2, "big")
    vnet = VNET_HDR.pack(F_NEEDS_CSUM, gso_type, hlen, mss, l4, 16)
    # one join: the super-packet is copied once
    return b"".join([vnet, header, *[p[hlen:] for p in run]])
