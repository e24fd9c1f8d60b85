"""The few IPv4/IPv6 header fields the tunnel reads (RFC 791, RFC 8200): one home for their offsets.

WireGuard routes by them (whitepaper §2, cryptokey routing): the destination picks the peer a
packet from the TUN is encrypted for, and the source of a decrypted packet must be one of the
sending peer's allowed IPs. Addresses are returned as packed bytes (4 or 16), which is what the
allowed-IPs table looks up. Pure functions over bytes; thread-safe.

The two hot paths of tunnel.py (the send loop's destination lookup, the receive fast path for
IPv4) inline `destination` and `v4_total_length` with the offsets named here: a function call per
packet measured 7 % of the send path and 2 % of the receive path. Everything else (IPv6, relaying,
anything unusual) goes through `parse`.
"""
from __future__ import annotations

__all__ = ["IPV4_MIN_HEADER", "IPV6_HEADER", "V4_SRC", "V4_DST", "V6_SRC", "V6_DST",
           "destination", "v4_total_length", "parse"]

#: Bytes of an IPv4 header without options.
IPV4_MIN_HEADER = 20
#: Bytes of the fixed IPv6 header (the payload length excludes it).
IPV6_HEADER = 40
#: Where the addresses sit, as slices of the packet.
V4_SRC, V4_DST = slice(12, 16), slice(16, 20)
V6_SRC, V6_DST = slice(8, 24), slice(24, 40)


def destination(packet: bytes) -> tuple[int, bytes] | None:
    """(IP version 4 or 6, destination address bytes) of a packet read from the TUN; None if it
    is too short for its header or of another version."""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= IPV4_MIN_HEADER:
        return 4, packet[16:20]
    if version == 6 and len(packet) >= IPV6_HEADER:
        return 6, packet[24:40]
    return None


def v4_total_length(packet: bytes) -> int:
    """The IPv4 total length field in bytes (header included); the packet must have 4 bytes."""
    return (packet[2] << 8) | packet[3]


def parse(packet: bytes) -> tuple[int, int, bytes, bytes] | None:
    """(version, total length in bytes, source bytes, destination bytes) of a complete IPv4/IPv6
    packet, which may carry trailing padding (len(packet) >= total length). None if it is not
    one: too short, another version, or a length field below the header or beyond the data."""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= IPV4_MIN_HEADER:
        length = (packet[2] << 8) | packet[3]
        if IPV4_MIN_HEADER <= length <= len(packet):
            return 4, length, packet[12:16], packet[16:20]
    elif version == 6 and len(packet) >= IPV6_HEADER:
        length = IPV6_HEADER + ((packet[4] << 8) | packet[5])
        if length <= len(packet):
            return 6, length, packet[8:24], packet[24:40]
    return None
