"""TTL-limited NAT openers: the hop count from ICMP answers, the openers' TTLs, their timing in the
pair state machine, the discovery's error-queue reading on loopback, and a Device sending an opener
with a TTL from its tunnel socket (read back with IP_RECVTTL)."""
from __future__ import annotations

import socket
import struct
import sys
import time

import pytest

from ravenvpn.device.device import Device
from ravenvpn.device.udp import UdpTransport
from ravenvpn.raven.node.hops import (IP_RECVERR, SOL_IP, HopFinder, IcmpError, discover_hops, hop_count,
                                      opener_ttls, parse_error)
from ravenvpn.raven.node.punch import PairMachine, PairState, Timing

FAR = "198.51.100.3"
EXCEEDED = 11
UNREACH = 3
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)


def err(icmp_type: int, offender: str) -> IcmpError:
    return IcmpError(icmp_type, 3 if icmp_type == UNREACH else 0, offender)


# --------------------------------------------------------------------------- hop count, TTLs
def test_the_target_answering_gives_the_hop_count() -> None:
    answers = [(1, err(EXCEEDED, "192.168.1.1")), (2, err(EXCEEDED, "198.51.100.253")),
               (3, err(EXCEEDED, "198.51.100.252")), (4, err(UNREACH, FAR)), (5, err(UNREACH, FAR))]
    assert hop_count(answers, FAR) == 4
    assert hop_count(reversed(answers), FAR) == 4     # answers come in any order


def test_a_silent_target_is_one_past_the_farthest_expiry() -> None:
    # a home router's input firewall: the target answers nothing, the routers before it do
    assert hop_count([(1, err(EXCEEDED, "192.168.1.1")), (3, err(EXCEEDED, "198.51.100.252"))], FAR) == 4
    # flat WAN behind a silent router: only the local NAT answers -> the NATs are neighbours
    assert hop_count([(1, err(EXCEEDED, "192.168.1.1"))], FAR) == 2
    assert hop_count([], FAR) is None
    # a router's own "unreachable" says nothing about where the target is
    assert hop_count([(3, err(UNREACH, "198.51.100.252"))], FAR) is None


def test_openers_pass_the_local_nat_and_die_before_the_far_one() -> None:
    assert opener_ttls(4) == (2, 3)
    assert opener_ttls(3) == (2,)
    assert opener_ttls(2) == () and opener_ttls(1) == () and opener_ttls(None) == ()


def test_parse_error_reads_sock_extended_err_and_the_offender() -> None:
    offender = struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton("198.51.100.253"))
    data = struct.pack("=IBBBBII", 113, 2, EXCEEDED, 0, 0, 0, 0) + offender
    assert parse_error([(SOL_IP, IP_RECVERR, data)]) == IcmpError(EXCEEDED, 0, "198.51.100.253")
    local = struct.pack("=IBBBBII", 90, 1, 0, 0, 0, 1400, 0)      # SO_EE_ORIGIN_LOCAL (EMSGSIZE)
    assert parse_error([(SOL_IP, IP_RECVERR, local)]) is None
    assert parse_error([(SOL_IP, IP_RECVERR, b"short")]) is None
    assert parse_error([]) is None


# ------------------------------------------------------------------------------ state machine
def punching(initiator: bool, start: float = 0.5) -> tuple[PairMachine, list[object]]:
    m = PairMachine("gw-b", 0.0, initiator=initiator, timing=Timing())
    first = m.on_intro(1, (FAR, 4500), start, 0.0)
    return m, [first]


def test_the_responder_opens_its_nat_with_ttl_limited_openers_before_the_first_initiation() -> None:
    b, (intro,) = punching(initiator=False)
    assert intro.discover == FAR and not intro.open_ttls and not intro.open_nat    # type: ignore[attr-defined]
    # while H is unknown nothing leaves (an unlimited opener could be the poisoning packet)
    assert not b.tick(0.2).open_ttls and not b.tick(0.2).open_nat
    early = b.on_hops(FAR, 4, 0.25)
    assert early.open_ttls == (2, 3) and not early.open_nat     # 0.25 s before the initiator starts
    sent = []
    for i in range(200):
        a = b.tick(0.25 + i * 0.05)
        assert not a.open_nat and not a.initiate
        if a.open_ttls:
            sent.append(a.open_ttls)
    assert sent == [(2, 3)] * len(Timing().initiations)    # repeated on the schedule, never unlimited
    assert b.snapshot(1.0)["hops"] == 4


def test_the_initiator_keeps_its_schedule_and_only_learns_the_hops() -> None:
    a, (intro,) = punching(initiator=True)
    assert intro.discover == FAR                            # type: ignore[attr-defined]
    assert not a.tick(0.4).initiate
    assert not a.on_hops(FAR, 4, 0.3).open_ttls
    assert a.tick(0.5).initiate                             # at the common start, as before
    assert a.hops == 4


def test_neighbouring_nats_keep_unlimited_openers() -> None:
    b, _ = punching(initiator=False, start=0.0)
    assert not b.on_hops(FAR, 2, 0.0).open_ttls
    a = b.tick(0.0)
    assert a.open_nat and not a.open_ttls


def test_a_known_hop_count_opens_at_once_on_the_next_round_and_a_new_address_is_probed_again() -> None:
    b, _ = punching(initiator=False)
    b.on_hops(FAR, 4, 0.1)
    b.on_hops(FAR, 9, 0.1)                                  # a late duplicate changes nothing
    assert b.hops == 4
    now = b.start + b.timing.window + 0.1
    b.tick(now)
    assert b.state is PairState.RELAYED
    now = b.next_round
    again = b.on_intro(2, (FAR, 4501), now + 0.5, now)      # same address, NAT rebound port
    assert again.open_ttls == (2, 3) and again.discover is None
    b.tick(b.start + b.timing.window + 0.1)
    now = b.next_round
    moved = b.on_intro(3, ("203.0.113.9", 4500), now + 0.5, now)
    assert moved.discover == "203.0.113.9" and not moved.open_ttls and b.hops is None
    assert not b.on_hops(FAR, 4, now).open_ttls             # an answer for the old address is ignored


def test_no_answer_is_asked_again_next_round() -> None:
    b, _ = punching(initiator=False)
    b.on_hops(FAR, None, 0.1)
    b.tick(b.start + b.timing.window + 0.1)
    now = b.next_round
    assert b.on_intro(2, (FAR, 4500), now + 0.5, now).discover == FAR


def test_hop_finder_discovers_once_per_address_in_a_worker() -> None:
    calls: list[str] = []

    def fake(host: str) -> int | None:
        calls.append(host)
        return {FAR: 4}.get(host)

    finder = HopFinder(fake)
    finder.request(FAR)
    finder.request("203.0.113.9")
    done: list[tuple[str, int | None]] = []
    deadline = time.monotonic() + 5
    while len(done) < 2 and time.monotonic() < deadline:
        done += finder.finished()
        time.sleep(0.01)
    assert sorted(done, key=str) == [("198.51.100.3", 4), ("203.0.113.9", None)]
    finder.request(FAR)                                     # known: answered without probing
    assert finder.finished() == [(FAR, 4)]
    assert calls.count(FAR) == 1
    finder.request("203.0.113.9")                           # nothing answered: tried again
    deadline = time.monotonic() + 5
    while calls.count("203.0.113.9") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls.count("203.0.113.9") == 2


# ------------------------------------------------------------------------------- real sockets
def test_discovery_reads_the_error_queue_on_loopback() -> None:
    # 127.0.0.1 is hop 1 and answers every probe with port unreachable (nothing listens on 33435)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        listener.bind(("127.0.0.1", 33435))
    except OSError:
        pytest.skip("port 33435 is busy on this host")
    listener.close()
    assert discover_hops("127.0.0.1", timeout=1.0) == 1


def test_an_ipv6_target_is_not_probed() -> None:
    assert discover_hops("::1", timeout=0.1) is None


def test_send_underlay_sets_the_ttl_of_that_datagram_only() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(SOL_IP, IP_RECVTTL, 1)
    receiver.settimeout(2)
    udp = UdpTransport()
    udp.bind(0)
    device = Device("rvttl0", uapi=False, udp=udp)
    try:
        dest = receiver.getsockname()

        def arrived() -> tuple[int, int, int | None]:
            data, ancdata, _flags, source = receiver.recvmsg(64, socket.CMSG_SPACE(4))
            ttl = next((int.from_bytes(d[:4], sys.byteorder)
                        for level, kind, d in ancdata if level == SOL_IP and kind == socket.IP_TTL), None)
            return len(data), source[1], ttl

        device.send_underlay([(b"", dest)], ttl=3)
        assert arrived() == (0, udp.port, 3)                # from the tunnel's own port, TTL 3
        device.send_underlay([(b"x", dest)])
        size, port, ttl = arrived()
        assert (size, port) == (1, udp.port) and ttl is not None and ttl > 3   # the socket's default again
        with pytest.raises(ValueError):
            device.send_underlay([(b"", dest)], ttl=0)
    finally:
        device.close()
        receiver.close()
