"""The coalescer merges only what the kernel's GRO would: one test per header field it trusts.

Field case F07 (issue 14, kind 2): a merged super-packet is written with NEEDS_CSUM, which the
receiving stack takes as verified, so a segment whose checksum is wrong must never be part of one;
it is written alone with a plain virtio header (the kernel then drops it). The rules follow the
kernel's GRO (tcp_gro_receive, inet_gro_receive) and wireguard-go's tun/offload_linux.go.
"""
from __future__ import annotations

import os

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from scapy.packet import Raw, raw

from ravenvpn.device import offload

MSS = 1200


def flow(v6: bool = False, n: int = 4, sizes: list[int] | None = None, **per_segment) -> list[bytes]:
    """`n` in-order ACK segments of one flow with valid checksums; keyword lists override one
    field per segment, e.g. ttl=[64, 64, 63, 64] (a value of None keeps the default)."""
    sizes = sizes or [MSS] * n
    out, seq = [], 1000
    for i, size in enumerate(sizes):
        over = {k: v[i] for k, v in per_segment.items() if v[i] is not None}
        tcp_fields = {k: over.pop(k) for k in ("flags", "options", "window") if k in over}
        ip = (IPv6(src="fd00::1", dst="fd00::2", **over) if v6
              else IP(src="10.0.0.1", dst="10.0.0.2", id=over.pop("id", 40 + i), flags=over.pop("ipflags", "DF"), **over))
        tcp = TCP(sport=5201, dport=40000, seq=seq, ack=9, flags=tcp_fields.get("flags", "A"),
                  window=tcp_fields.get("window", 500), options=tcp_fields.get("options", []))
        out.append(raw(ip / tcp / Raw(os.urandom(size))))
        seq += size
    return out


def merged_writes(writes: list[bytes]) -> list[bytes]:
    return [w for w in writes if w[:offload.VNET_HDR_LEN] != offload.PLAIN_HDR]


def corrupt(pkt: bytes, at: int = -7) -> bytes:
    """Flip bits in the payload, leaving the checksum as it was (a bad bit on the far LAN)."""
    b = bytearray(pkt)
    b[at] ^= 0x24
    return bytes(b)


def bodies(writes: list[bytes]) -> list[bytes]:
    return [w[offload.VNET_HDR_LEN:] for w in writes]


def assert_alone(writes: list[bytes], pkt: bytes) -> None:
    """`pkt` is written exactly as it came, with a plain virtio header, and in no merge."""
    assert offload.PLAIN_HDR + pkt in writes
    for w in merged_writes(writes):
        assert pkt[-MSS // 2:] not in w


# -- checksums -----------------------------------------------------------------------------------

@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("where", [0, 3, 7], ids=["first", "middle", "last"])
def test_a_segment_with_a_bad_tcp_checksum_is_written_alone(v6: bool, where: int) -> None:
    segs = flow(v6, 8)
    segs[where] = corrupt(segs[where])
    writes = offload.coalesce(segs)
    assert_alone(writes, segs[where])
    # the good ones around it still merge, in order, and nothing is lost
    assert merged_writes(writes)
    assert len(writes) <= 4
    resegmented = []
    for w in writes:
        flags, gso, _hl, gso_size, cstart, _co = offload.VNET_HDR.unpack_from(w)
        body = memoryview(w)[offload.VNET_HDR_LEN:]
        resegmented += offload.segment_tcp(body, gso_size, cstart) if gso else [bytes(body)]
    assert [bytes(p)[-50:] for p in resegmented] == [p[-50:] for p in segs]


def test_two_bad_segments_and_the_field_case_shape() -> None:
    segs = flow(False, 6)
    segs[1], segs[4] = corrupt(segs[1]), corrupt(segs[4], at=-300)
    writes = offload.coalesce(segs)
    assert_alone(writes, segs[1])
    assert_alone(writes, segs[4])


def test_a_bad_checksum_is_found_with_an_odd_segment_size() -> None:
    segs = flow(False, sizes=[1201, 1201, 1201, 1201])
    segs[2] = corrupt(segs[2])
    writes = offload.coalesce(segs)
    assert_alone(writes, segs[2])
    assert offload.coalesce(flow(False, sizes=[1201, 1201, 1201])) != []
    assert len(offload.coalesce(flow(False, sizes=[1201, 1201, 1201]))) == 1


def test_an_odd_length_last_segment_with_a_valid_checksum_merges() -> None:
    segs = flow(False, sizes=[1200, 1200, 333])
    assert len(merged_writes(offload.coalesce(segs))) == 1
    segs[2] = corrupt(segs[2])
    assert_alone(offload.coalesce(segs), segs[2])


def test_a_bad_ipv4_header_checksum_is_not_laundered_by_a_merge() -> None:
    segs = flow(False, 4)
    bad = bytearray(segs[2])
    bad[10] ^= 0x01                     # the header checksum no longer matches
    segs[2] = bytes(bad)
    assert_alone(offload.coalesce(segs), segs[2])


def test_the_checksum_helpers_agree_with_scapy() -> None:
    for v6 in (False, True):
        for pkt in flow(v6, sizes=[1, 2, 1200, 1201]):
            assert offload.checksums_valid(pkt, 40 if v6 else 20)
            assert not offload.checksums_valid(corrupt(pkt, at=-1), 40 if v6 else 20)


def reference_sum(data: bytes) -> int:
    """The big-endian 16-bit word sum mod 0xFFFF, the slow obvious way (odd tail zero-padded)."""
    if len(data) & 1:
        data += b"\x00"
    return sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)) % 0xFFFF


def test_word_sum_agrees_with_the_word_by_word_sum() -> None:
    """word_sum (numpy over little-endian 32-bit words, then the 0-3 byte tail) is congruent to the
    big-endian word sum for every length and for views starting at any offset (unaligned buffers)."""
    cases = [b"", b"\x01", b"\x01\x02", b"\xff\xfe\xfd", b"\xff" * 4, b"\xff" * 5,
             b"\xff" * 65535, b"\xff" * 65536]      # all-ones: the largest sums, no overflow
    cases += [os.urandom(int.from_bytes(os.urandom(2), "big") % 9000) for _ in range(200)]
    for data in cases:
        assert offload.word_sum(data) % 0xFFFF == reference_sum(data), len(data)
        for offset in (1, 2, 3):
            view = memoryview(data)[offset:]
            assert offload.word_sum(view) % 0xFFFF == reference_sum(data[offset:]), (len(data), offset)
            assert offload.ones_sum(view) == reference_sum(data[offset:])


# -- IP header fields ------------------------------------------------------------------------------

def test_ipv4_options_are_never_merged() -> None:
    segs = [raw(IP(src="10.0.0.1", dst="10.0.0.2", options=[b"\x01\x01\x01\x00"]) /
                TCP(seq=1 + i * 100, flags="A") / Raw(b"x" * 100)) for i in range(3)]
    assert merged_writes(offload.coalesce(segs)) == []


@pytest.mark.parametrize("field, values", [
    ("tos", [0, 0, 0x10, 0]),           # DSCP differs
    ("tos", [2, 2, 3, 2]),              # ECN: a CE mark on one segment must reach the stack
    ("ttl", [64, 64, 63, 64]),
    ("ipflags", ["DF", "DF", 0, "DF"]),
])
def test_ipv4_fields_that_must_be_equal(field: str, values: list) -> None:
    segs = flow(False, 4, **{field: values})
    writes = offload.coalesce(segs)
    assert offload.PLAIN_HDR + segs[2] in writes or all(segs[2][-100:] not in w for w in merged_writes(writes))
    for w in merged_writes(writes):
        assert segs[2][-100:] not in w


@pytest.mark.parametrize("field, values", [
    ("tc", [0, 0, 0x10, 0]),
    ("tc", [2, 2, 3, 2]),               # ECN CE
    ("hlim", [64, 64, 63, 64]),
    ("fl", [7, 7, 8, 7]),               # flow label
])
def test_ipv6_fields_that_must_be_equal(field: str, values: list) -> None:
    segs = flow(True, 4, **{field: values})
    for w in merged_writes(offload.coalesce(segs)):
        assert segs[2][-100:] not in w


def test_ipv4_fragments_are_never_merged() -> None:
    more = flow(False, 3, ipflags=["MF", "MF", "MF"])
    assert merged_writes(offload.coalesce(more)) == []
    offset = flow(False, 3, frag=[0, 0, 0], ipflags=[0, 0, 0])
    offset = [bytes(p[:6]) + b"\x00\x10" + p[8:] for p in offset]   # fragment offset 16 (checksum left stale)
    assert merged_writes(offload.coalesce(offset)) == []


def test_ipv4_ids_must_count_up_without_df() -> None:
    # Without DF a receiver may use the ID; the kernel's resegmentation would renumber them.
    assert len(merged_writes(offload.coalesce(flow(False, 3, ipflags=[0, 0, 0], id=[5, 6, 7])))) == 1
    jumbled = flow(False, 3, ipflags=[0, 0, 0], id=[5, 9, 6])
    for w in merged_writes(offload.coalesce(jumbled)):
        assert jumbled[1][-100:] not in w
    # With DF the ID carries nothing (RFC 6864): any IDs merge, as in the kernel's GRO.
    assert len(merged_writes(offload.coalesce(flow(False, 3, id=[5, 9, 0])))) == 1


def test_a_length_field_that_is_not_the_packet_is_not_merged() -> None:
    for v6 in (False, True):
        segs = flow(v6, 3)
        padded = segs[1] + b"\x00" * 6                  # trailing bytes beyond the IP length
        writes = offload.coalesce([segs[0], padded, segs[2]])
        for w in merged_writes(writes):
            assert padded[-200:-6] not in w
        assert offload.PLAIN_HDR + padded in writes


def test_ipv6_extension_headers_are_never_merged() -> None:
    segs = [raw(IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrDestOpt() /
                TCP(seq=1 + i * 100, flags="A") / Raw(b"x" * 100)) for i in range(3)]
    assert merged_writes(offload.coalesce(segs)) == []


# -- TCP header fields -----------------------------------------------------------------------------

@pytest.mark.parametrize("flags", ["S", "SA", "FA", "RA", "UA", "EA", "CA", "A" + "N"])
def test_tcp_flags_other_than_ack_and_psh_go_alone(flags: str) -> None:
    segs = flow(False, 4, flags=["A", "A", flags, "A"])
    writes = offload.coalesce(segs)
    assert offload.PLAIN_HDR + segs[2] in writes


def test_psh_ends_a_run_and_is_kept() -> None:
    segs = flow(False, 4, flags=["A", "PA", "A", "A"])
    writes = offload.coalesce(segs)
    first = writes[0]
    assert offload.VNET_HDR.unpack_from(first)[1] == offload.GSO_TCPV4
    assert first[offload.VNET_HDR_LEN + 20 + 13] & 0x08
    assert segs[2][-100:] not in first


def test_tcp_options_must_be_equal() -> None:
    ts = [[("NOP", None), ("NOP", None), ("Timestamp", (t, 1))] for t in (5, 5, 6, 6)]
    segs = flow(False, 4, options=ts)
    writes = offload.coalesce(segs)
    assert len(merged_writes(writes)) == 2          # [0, 1] and [2, 3]
    for w in merged_writes(writes):
        assert not (segs[1][-100:] in w and segs[2][-100:] in w)
    # a different option length is a different header layout
    segs = flow(False, 3, options=[[], [("NOP", None)] * 4, []])
    assert all(segs[1][-100:] not in w for w in merged_writes(offload.coalesce(segs)))


def test_window_and_ack_must_be_equal() -> None:
    segs = flow(False, 4, window=[500, 500, 501, 501])
    assert all(not (segs[1][-100:] in w and segs[2][-100:] in w) for w in merged_writes(offload.coalesce(segs)))
