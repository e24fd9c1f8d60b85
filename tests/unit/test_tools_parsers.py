"""The output parsers of the test support (tools/traffic.py, tools/wg.py), on real outputs, without root.

Every sample below was printed by the real tool (iputils ping, iperf 3.12, wg with wireguard-go) in
namespaces of tools/node.py; the iperf3 reports keep only their ``end`` sums, which is all the parser reads.
The namespace tests run the same parsers on live output.
"""

from __future__ import annotations

import pytest

from tools.traffic import iperf3_summary, parse_ping
from tools.wg import parse_wg_dump

PING_OK = """\
PING 198.18.0.2 (198.18.0.2) 56(84) bytes of data.
64 bytes from 198.18.0.2: icmp_seq=1 ttl=64 time=0.039 ms
64 bytes from 198.18.0.2: icmp_seq=2 ttl=64 time=0.059 ms
64 bytes from 198.18.0.2: icmp_seq=3 ttl=64 time=0.038 ms

--- 198.18.0.2 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 405ms
rtt min/avg/max/mdev = 0.038/0.045/0.059/0.009 ms
"""

PING6_OK = """\
PING fd00:18::2(fd00:18::2) 56 data bytes
64 bytes from fd00:18::2: icmp_seq=1 ttl=64 time=0.061 ms
64 bytes from fd00:18::2: icmp_seq=2 ttl=64 time=0.068 ms
64 bytes from fd00:18::2: icmp_seq=3 ttl=64 time=0.060 ms

--- fd00:18::2 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 408ms
rtt min/avg/max/mdev = 0.060/0.063/0.068/0.003 ms
"""

PING_PARTIAL = """\
PING 198.18.0.2 (198.18.0.2) 56(84) bytes of data.
64 bytes from 198.18.0.2: icmp_seq=2 ttl=64 time=0.033 ms
64 bytes from 198.18.0.2: icmp_seq=4 ttl=64 time=0.029 ms

--- 198.18.0.2 ping statistics ---
4 packets transmitted, 2 received, 50% packet loss, time 611ms
rtt min/avg/max/mdev = 0.029/0.031/0.033/0.002 ms
"""

PING_LOST = """\
PING 198.18.0.99 (198.18.0.99) 56(84) bytes of data.

--- 198.18.0.99 ping statistics ---
2 packets transmitted, 0 received, 100% packet loss, time 200ms

"""

PING_UNREACHABLE = """\
PING 198.18.0.77 (198.18.0.77) 56(84) bytes of data.
From 198.18.0.1 icmp_seq=1 Destination Host Unreachable
From 198.18.0.1 icmp_seq=2 Destination Host Unreachable
From 198.18.0.1 icmp_seq=3 Destination Host Unreachable
From 198.18.0.1 icmp_seq=4 Destination Host Unreachable
From 198.18.0.1 icmp_seq=5 Destination Host Unreachable

--- 198.18.0.77 ping statistics ---
5 packets transmitted, 0 received, +5 errors, 100% packet loss, time 2061ms
pipe 5
"""


def test_ping_all_replies() -> None:
    r = parse_ping("198.18.0.2", PING_OK)
    assert (r.transmitted, r.received, r.loss_pct) == (3, 3, 0.0)
    assert r.seqs == [1, 2, 3] and r.rtts == [0.039, 0.059, 0.038]
    assert (r.rtt_min, r.rtt_avg, r.rtt_max) == (0.038, 0.045, 0.059)
    assert r.ok and r.output == PING_OK
    assert str(r) == "ping 198.18.0.2: 3/3 received, 0% loss, rtt min/avg/max 0.038/0.045/0.059 ms"


def test_ping_ipv6() -> None:
    r = parse_ping("fd00:18::2", PING6_OK)
    assert r.received == 3 and r.rtts == [0.061, 0.068, 0.060] and r.rtt_avg == 0.063


def test_ping_some_replies_lost() -> None:
    r = parse_ping("198.18.0.2", PING_PARTIAL)
    assert (r.transmitted, r.received, r.loss_pct) == (4, 2, 50.0)
    assert r.seqs == [2, 4] and r.rtts == [0.033, 0.029]  # each RTT stays with its sequence number
    assert r.ok


@pytest.mark.parametrize("output", [PING_LOST, PING_UNREACHABLE], ids=["silent", "unreachable"])
def test_ping_no_reply(output: str) -> None:
    r = parse_ping("198.18.0.99", output)
    assert r.received == 0 and r.loss_pct == 100.0 and not r.ok
    assert r.seqs == [] and r.rtts == []  # "From ... Destination Host Unreachable" is not a reply
    assert (r.rtt_min, r.rtt_avg, r.rtt_max) == (None, None, None)
    assert str(r).endswith("100% loss, no replies")


def test_ping_without_statistics_is_an_error() -> None:
    with pytest.raises(ValueError, match="no statistics line"):
        parse_ping("203.0.113.1", "")


IPERF_TCP = {"end": {
    "sum_sent": {"start": 0, "end": 1.000138, "seconds": 1.000138, "bytes": 66191360,
                 "bits_per_second": 529457814.82155466, "retransmits": 8044, "sender": True},
    "sum_received": {"start": 0, "end": 1.006866, "seconds": 1.006866, "bytes": 62976992,
                     "bits_per_second": 500380324.6906738, "sender": True},
}}

IPERF_UDP = {"end": {
    "sum": {"start": 0, "end": 1.004095, "seconds": 1.004095, "bytes": 1248984, "bits_per_second": 9991412.39502983,
            "jitter_ms": 0.11149193487739269, "lost_packets": 0, "packets": 913, "lost_percent": 0, "sender": True},
    "sum_sent": {"start": 0, "end": 1.000046, "seconds": 1.000046, "bytes": 1248984,
                 "bits_per_second": 9991412.39502983, "jitter_ms": 0, "lost_packets": 0, "packets": 913,
                 "lost_percent": 0, "sender": True},
    "sum_received": {"start": 0, "end": 1.004095, "seconds": 1.004095, "bytes": 1248984,
                     "bits_per_second": 9951122.15477619, "jitter_ms": 0.11149193487739269, "lost_packets": 0,
                     "packets": 913, "lost_percent": 0, "sender": False},
}}


def test_iperf3_tcp_figures_are_the_receivers() -> None:
    s = iperf3_summary(IPERF_TCP, udp=False, seconds=1)
    assert s == {
        "bits_per_second": 500380324.6906738, "sent_bps": 529457814.82155466,
        "sent_bytes": 66191360, "received_bytes": 62976992, "retransmits": 8044,
        "lost_percent": None, "jitter_ms": None, "seconds": 1.006866,
    }


def test_iperf3_udp_loss_and_jitter_from_the_sum() -> None:
    s = iperf3_summary(IPERF_UDP, udp=True, seconds=1)
    assert s["bits_per_second"] == 9951122.15477619 and s["sent_bps"] == 9991412.39502983
    assert s["sent_bytes"] == s["received_bytes"] == 1248984
    assert s["lost_percent"] == 0.0 and s["jitter_ms"] == 0.11149193487739269
    assert s["retransmits"] is None and s["seconds"] == 1.004095


def test_iperf3_report_without_end_counts_zero() -> None:
    s = iperf3_summary({}, udp=False, seconds=3)
    assert s["bits_per_second"] == 0.0 and s["received_bytes"] == 0 and s["seconds"] == 3.0


WG_DUMP = (
    "aMowe/eZ91sqkeaVi2eV5GCqYknHJcitRcoESnLB4m4=\tpS8LrfPvJn7wra+Qgs0NnP9yzzMkgEhs4YlsXOLW9mg=\t51820\toff\n"
    "LIPKjEfkg14wA+NSIHj5S139kPwe5PMNeinp3z579Xo=\tM17Y0Gg+hSakpkn95a87YsZrxEYOjlan1A7kSsBDXvY=\t"
    "198.18.0.2:51821\t10.99.0.2/32,fd99::2/128\t1796026749\t348\t404\toff\n"
)
#: as `wg` prints a peer never heard from and an interface with a fwmark
WG_DUMP_FWMARK = (
    "aMowe/eZ91sqkeaVi2eV5GCqYknHJcitRcoESnLB4m4=\tpS8LrfPvJn7wra+Qgs0NnP9yzzMkgEhs4YlsXOLW9mg=\t40200\t0xca6c\n"
    "LIPKjEfkg14wA+NSIHj5S139kPwe5PMNeinp3z579Xo=\t(none)\t(none)\t(none)\t0\t0\t0\t25\n"
)


def test_wg_dump_interface_and_peer() -> None:
    d = parse_wg_dump(WG_DUMP)
    assert d.public_key == "pS8LrfPvJn7wra+Qgs0NnP9yzzMkgEhs4YlsXOLW9mg=" and d.listen_port == 51820
    assert d.fwmark is None
    (peer,) = d.peers.values()
    assert peer.public_key == "LIPKjEfkg14wA+NSIHj5S139kPwe5PMNeinp3z579Xo="
    assert peer.preshared_key == "M17Y0Gg+hSakpkn95a87YsZrxEYOjlan1A7kSsBDXvY="
    assert peer.endpoint == "198.18.0.2:51821" and peer.allowed_ips == ["10.99.0.2/32", "fd99::2/128"]
    assert (peer.latest_handshake, peer.rx_bytes, peer.tx_bytes) == (1796026749, 348, 404)
    assert peer.persistent_keepalive is None


def test_wg_dump_none_fields_and_fwmark() -> None:
    d = parse_wg_dump(WG_DUMP_FWMARK)
    assert d.fwmark == 51820 and d.listen_port == 40200
    peer = d.peers["LIPKjEfkg14wA+NSIHj5S139kPwe5PMNeinp3z579Xo="]
    assert peer.preshared_key is None and peer.endpoint is None and peer.allowed_ips == []
    assert peer.latest_handshake == 0 and peer.persistent_keepalive == 25


@pytest.mark.parametrize("output", ["", "\n", "key\tkey\t51820\n", WG_DUMP.replace("\t348\t404\toff", "")],
                         ids=["empty", "blank", "short-interface", "short-peer"])
def test_wg_dump_malformed_is_a_value_error(output: str) -> None:
    with pytest.raises(ValueError):
        parse_wg_dump(output)
