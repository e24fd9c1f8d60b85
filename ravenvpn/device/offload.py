"""TUN offloads: the virtio-net header, TSO segmentation on read, TCP coalescing on write.

With IFF_VNET_HDR and TUNSETOFFLOAD(CSUM|TSO4|TSO6) the kernel hands the TUN reader whole
TCP super-packets (up to 64 KB) with a partial checksum, and accepts super-packets on
write. One syscall then moves dozens of segments, and the kernel's TCP stack on both
ends works on large buffers: that is where a userspace tunnel's CPU goes.

Everything on the wire stays ordinary MTU-sized packets with full checksums, so peers
without offloads (wireguard-go, the kernel) see no difference.

Checksums use the identity 2^16 = 1 (mod 0xFFFF): the ones' complement sum of 16-bit
words equals the big-endian integer of the bytes modulo 0xFFFF; `word_sum` computes it
with numpy over 32-bit words. This module is pure: bytes in, bytes out.
"""
from __future__ import annotations

import struct

import numpy

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
    return word_sum(data) % 0xFFFF


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
    """Finish a partial checksum: the field holds the pseudo-header sum, the rest is ours to add.

    Raises:
        OffloadError: the checksum offset lies beyond the packet.
    """
    where = csum_start + csum_offset
    if where + 2 > len(packet):
        raise OffloadError("checksum offset beyond the packet")
    packet[where:where + 2] = checksum(memoryview(packet)[csum_start:]).to_bytes(2, "big")


def split_read(data: memoryview) -> list[bytes]:
    """One TUN read (virtio header + packet) into ready-to-encrypt IP packets.

    Raises:
        OffloadError: a GSO type other than TCPv4/v6 (or no segment size), or a bad layout.
    """
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
    """Cut a TCP super-packet into MSS-sized segments with correct IP and TCP headers.

    Raises:
        OffloadError: the TCP header at `l4` lies beyond the packet.
    """
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
    """(TCP offset, header length) of a data segment that may start a merge, else None.

    Only what the kernel's GRO would merge qualifies (wireguard-go's tun/offload_linux.go applies the
    same rules): IPv4 without options and not a fragment, IPv6 with TCP as the next header (no
    extension headers), a length field that matches the packet, a TCP header of 20-60 bytes, flags
    exactly ACK or ACK|PSH (SYN/FIN/RST/URG/ECE/CWR go alone), and a payload.
    """
    size = len(pkt)
    if size < 40:   # shorter than any IPv4 + TCP header (also keeps a runt from raising IndexError)
        return None
    if pkt[0] == 0x45:  # IPv4 without options
        if pkt[9] != _PROTO_TCP or pkt[6] & 0x3F or pkt[7]:   # MF or a fragment offset
            return None
        if (pkt[2] << 8 | pkt[3]) != size:
            return None   # trailing bytes (or a lying length) would become payload of the merge
        l4 = 20
    elif pkt[0] >> 4 == 6:
        if size < 60 or pkt[6] != _PROTO_TCP or (pkt[4] << 8 | pkt[5]) != size - 40:
            return None
        l4 = 40
    else:
        return None
    tcp_hlen = (pkt[l4 + 12] >> 4) * 4
    if tcp_hlen < 20:
        return None   # a bogus data offset: the kernel would reject the merged super-packet
    flags = pkt[l4 + 13]
    hlen = l4 + tcp_hlen
    if flags & ~(_TCP_ACK | _TCP_PSH) or not flags & _TCP_ACK or size <= hlen:
        return None   # SYN/FIN/RST/URG/ECE/CWR and pure ACKs go through alone
    return l4, hlen


def _header_mask(l4: int, hlen: int) -> int:
    """Header bits that must be equal for two segments to merge, as the kernel's GRO requires:
    all but the IP length (and IPv4 ID and checksum), the TCP sequence, PSH and checksum. So the
    ToS/traffic class (ECN included), the IPv6 flow label, DF and the reserved bit, TTL/hop limit,
    addresses, ports, ACK number, the other flags, window, urgent pointer and every TCP option
    byte (timestamps included) are equal in every segment of a merge."""
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


_NUMPY_MIN = 768     # bytes: crossover measured at 512-1024 (int 1.1-2.2 us, numpy 1.5-1.6 us)


def word_sum(data: bytes | memoryview) -> int:
    """A non-negative int congruent mod 0xFFFF to the sum of `data`'s big-endian 16-bit words (an
    odd last byte is the high half of a zero-padded word): `ones_sum` without the final fold.

    The bulk is summed by numpy as little-endian 32-bit words, ten times faster than
    `int.from_bytes` and `mod_ffff` over a 64 KB super-packet (5.9 against 55 us measured): a 32-bit
    word is two 16-bit words (2^16 = 1 mod 0xFFFF), and a little-endian word is its big-endian
    self with the bytes swapped, which is a multiplication by 2^8 mod 0xFFFF (RFC 1071's byte
    order independence), so the big-endian sum is 2^8 times the little-endian one. The last 0-3
    bytes are added as an int: the bulk is a multiple of 4 bytes long, so it sits word-aligned.
    A 64 KB buffer sums to below 2^46: no overflow in numpy's uint64. Below `_NUMPY_MIN` bytes
    (headers, pseudo-headers) the int itself is cheaper than numpy's call overhead (~2 us).
    """
    if len(data) < _NUMPY_MIN:
        value = int.from_bytes(data, "big")
        return value << 8 if len(data) & 1 else value
    bulk = len(data) & ~3
    total = 0
    if bulk:
        total = int(numpy.frombuffer(data, dtype="<u4", count=bulk >> 2).sum(dtype=numpy.uint64)) << 8
    if bulk < len(data):
        tail = int.from_bytes(data[bulk:], "big")
        total += tail << 8 if len(data) & 1 else tail
    return total


def checksums_valid(pkt: bytes, l4: int) -> bool:
    """True if the IPv4 header checksum (if any) and the TCP checksum of `pkt` verify.

    A merged super-packet goes to the kernel with NEEDS_CSUM (CHECKSUM_PARTIAL), which the
    receiving stack takes as verified, and its IPv4 header checksum is recomputed: a segment
    corrupted on the far LAN would be laundered. So segments are verified before they join a
    merge, as wireguard-go does (checksumValid); one that fails is written alone, unchanged, and
    the kernel drops it. Sums use 2^16 = 1 (mod 0xFFFF): a valid packet sums to 0 mod 0xFFFF, and
    word-aligned parts may be summed separately.
    """
    from_bytes = int.from_bytes
    tcp_len = len(pkt) - l4
    if l4 == 20:
        if from_bytes(pkt[:20], "big") % 0xFFFF:
            return False
        pseudo = from_bytes(pkt[12:20], "big")
    else:
        pseudo = from_bytes(pkt[8:40], "big")
    return (pseudo + _PROTO_TCP + tcp_len + word_sum(memoryview(pkt)[l4:])) % 0xFFFF == 0


def coalesce(packets: list[bytes], verify_each: bool = False) -> list[bytes]:
    """Turn decrypted packets into TUN writes (virtio header + packet), merging runs of
    consecutive in-order TCP segments of one flow into GSO super-packets.

    Every segment of a merge passes the header rules of `_merge_layout` and `_header_mask`, and
    its checksums verify; anything else is written alone with a plain virtio header (flags 0), so
    the kernel verifies it as it would any packet. Order is kept. Never raises on bad input.

    The checksums of a run are verified together, in one sum over the merged payload and the
    headers (`_run_checksums_valid`): a single corrupted segment always fails that sum (two
    corrupted segments cancel out with probability 2^-16, TCP's own odds), and the run is then
    done again with `verify_each`, each segment checked alone (`checksums_valid`), so exactly the
    bad ones go alone. One sum costs a third of the per-segment checks.
    """
    writes: list[bytes] = []
    append = writes.append
    from_bytes = int.from_bytes
    valid = checksums_valid
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
        head = from_bytes(first[:hlen], "big")
        key = head & mask
        heads = head      # sum of every segment's headers, for the run's checksum
        mss = len(first) - hlen
        seq = from_bytes(first[l4 + 4:l4 + 8], "big") + mss
        # Without DF the IPv4 ID matters (fragments are reassembled by it): the kernel's
        # segmentation gives segment k the ID first + k, so only such runs may merge.
        ip_id = from_bytes(first[4:6], "big") if l4 == 20 and not first[6] & 0x40 else -1
        size = len(first)
        pushed = first[l4 + 13] & _TCP_PSH
        run = [first]
        bad = None
        while i < count and not pushed:
            pkt = packets[i]
            plen = len(pkt) - hlen
            if plen <= 0 or plen > mss or size + plen > _MAX_SUPER:
                break
            head = from_bytes(pkt[:hlen], "big")
            if (head & mask != key
                    or from_bytes(pkt[l4 + 4:l4 + 8], "big") != seq & 0xFFFFFFFF
                    or (l4 == 20 and (pkt[2] << 8 | pkt[3]) != len(pkt))
                    or (l4 == 40 and (pkt[4] << 8 | pkt[5]) != len(pkt) - 40)
                    or (ip_id >= 0 and from_bytes(pkt[4:6], "big") != (ip_id + len(run)) & 0xFFFF)):
                break
            if verify_each:
                if len(run) == 1 and not valid(first, l4):
                    break         # the first is corrupt: it goes alone, `pkt` may start the next run
                if not valid(pkt, l4):
                    bad = pkt     # ends the run and goes alone, right after it
                    i += 1
                    break
            run.append(pkt)
            heads += head
            size += plen
            seq += plen
            i += 1
            pushed = pkt[l4 + 13] & _TCP_PSH
            if plen < mss:
                break  # a short segment ends a GSO run
        if len(run) == 1:
            append(PLAIN_HDR + first)
        elif verify_each:
            append(_merge(run, l4, hlen, mss, bool(pushed), size))
        elif mss & 1:
            # Odd segments would sit at odd offsets of the merged payload: check them one by one.
            writes.extend(coalesce(run, verify_each=True))
        else:
            merged = _merge(run, l4, hlen, mss, bool(pushed), size)
            if _run_checksums_valid(merged, first, len(run), heads, l4, hlen):
                append(merged)
            else:
                writes.extend(coalesce(run, verify_each=True))
        if bad is not None:
            append(PLAIN_HDR + bad)
    return writes


def _run_checksums_valid(merged: bytes, first: bytes, count: int, heads: int, l4: int, hlen: int) -> bool:
    """Whether the `count` segments merged into `merged` all had valid checksums, as one sum.

    `heads` is the sum (as integers) of the segments' first `hlen` bytes. Segment k is valid when
    its TCP header + payload + pseudo-header (addresses, protocol, TCP length) sum to 0 mod 0xFFFF
    (and, for IPv4, its IP header does too); summed over the run, the payloads are the merged
    payload (even `mss`: every payload starts word-aligned), the addresses are the same in every
    segment, and the TCP lengths add up to the payload plus `count` TCP headers.
    """
    payload_offset = VNET_HDR_LEN + hlen
    payload_len = len(merged) - payload_offset
    payload = word_sum(memoryview(merged)[payload_offset:])
    if l4 == 20:
        # IPv4: `heads` holds the IP headers (each sums to 0 when valid) and the TCP headers.
        addresses = int.from_bytes(first[12:20], "big")
        rest = heads + count * (addresses + _PROTO_TCP + hlen - l4) + payload_len
    else:
        # IPv6: `heads` holds the whole IP header; the pseudo-header has its addresses but not its
        # first 8 bytes, whose words are the same in every segment except the payload length,
        # which equals the TCP length the pseudo-header adds: they cancel.
        fixed = int.from_bytes(first[0:4], "big") + int.from_bytes(first[6:8], "big")
        rest = heads + count * (_PROTO_TCP - fixed)
    return (payload + rest) % 0xFFFF == 0


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
