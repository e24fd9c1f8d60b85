"""The time seam (Clock, timer scale), the timer rules of timers.py, the index table, the IP-header
helper and the drop counters. Pure: no root, no namespaces."""
from __future__ import annotations

import ipaddress
import os

import pytest

from ravenvpn.protocol import constants as C
from ravenvpn.protocol import ipheader, timers
from ravenvpn.protocol.clock import Clock, parse_test_clock
from ravenvpn.protocol.counters import Counter
from ravenvpn.protocol.index import IndexTable
from ravenvpn.protocol.tunnel import Tunnel
from tests.unit.protocol_harness import Net, icmp


def handshakes(net: Net) -> int:
    return sum(1 for _, d in net.wire if d[0] == 1)


def scaled_net(scale: float) -> Net:
    net = Net()
    for side in (net.a, net.b):
        side.tunnel.timers = timers.Timers.scaled(scale)
    return net


def test_timer_scale_multiplies_every_protocol_duration() -> None:
    t = timers.Timers.scaled(0.05)
    assert t.rekey_after_time == pytest.approx(6.0) and t.reject_after_time == pytest.approx(9.0)
    assert t.rekey_timeout == pytest.approx(0.25) and t.keepalive_timeout == pytest.approx(0.5)
    assert t.zero_keys_after == pytest.approx(27.0) and t.cookie_refresh_time == pytest.approx(6.0)
    assert timers.Timers() == timers.Timers.scaled(1.0)
    assert Tunnel(timer_scale=0.05).timers == t
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            Tunnel(timer_scale=bad)


def test_scaled_tunnel_rekeys_after_the_scaled_rekey_after_time() -> None:
    """What the interop rekey test relies on: with scale 0.05 the initiator rekeys after ~6 s of use."""
    net = scaled_net(0.05)
    net.send(net.a)
    first = net.pa.current
    for _ in range(5):                  # 5 s: no rekey yet
        net.advance(1.0)
        net.send(net.a)
        net.send(net.b)
    assert net.pa.current is first and handshakes(net) == 1
    for _ in range(3):                  # past 6 s: the next send rekeys
        net.advance(1.0)
        net.send(net.a)
        net.send(net.b)
    assert net.pa.current is not first and handshakes(net) == 2
    assert len(net.b.delivered) == 9 and len(net.a.delivered) == 8


def test_unscaled_tunnel_does_not_rekey_in_the_same_time() -> None:
    net = Net()
    net.send(net.a)
    first = net.pa.current
    for _ in range(8):
        net.advance(1.0)
        net.send(net.a)
        net.send(net.b)
    assert net.pa.current is first and handshakes(net) == 1


def test_wall_offset_makes_a_restarted_peer_go_back_in_time() -> None:
    """A restarted initiator whose wall clock is an hour behind sends an older TAI64N timestamp:
    the responder, which remembers the newest one, refuses it as a replay (whitepaper §5.1)."""
    net = Net()
    net.send(net.a)
    assert handshakes(net) == 1
    # "restart" A: a fresh Tunnel with the same key, its wall clock an hour behind
    restarted = Tunnel(clock=Clock(wall=net.a.tunnel.clock.wall, wall_offset_ns=-3600 * 10**9))
    restarted.private_key = net.a.private
    peer = restarted.add_peer(net.b.tunnel.public_key)
    peer.endpoint = net.b.underlay
    restarted.add_allowed_ip(peer, ipaddress.ip_network(f"{net.b.inner}/32"))
    out = restarted.send_packets([icmp(net.a.inner, net.b.inner)], net.now + 1)
    (initiation, _), = out.datagrams()
    reply = net.b.tunnel.receive_datagrams([(initiation, net.a.underlay)], net.now + 1)
    assert reply.datagrams() == [] and net.b.tunnel.stats[Counter.RX_HANDSHAKE_REPLAY] == 1
    # the same restart with its clock ahead is accepted (the real one may still be within the
    # 16 ms granularity of the first timestamp)
    restarted.clock = Clock(wall_offset_ns=10**9)
    peer.initiation_allowed_at = None
    out = restarted.send_packets([icmp(net.a.inner, net.b.inner)], net.now + 2)
    reply = net.b.tunnel.receive_datagrams([(out.datagrams()[0][0], net.a.underlay)], net.now + 2)
    assert [len(d) for d, _ in reply.datagrams()] == [C.RESPONSE_SIZE]


def test_clock_wall_ns_adds_the_offset() -> None:
    clock = Clock(monotonic=lambda: 5.0, wall=lambda: 1_000, wall_offset_ns=-400)
    assert clock.wall_ns() == 600 and clock.monotonic() == 5.0


@pytest.mark.parametrize("spec,expected", [
    ("", (1.0, 0)),
    ("scale=0.05", (0.05, 0)),
    ("wall-offset=-3600", (1.0, -3600 * 10**9)),
    ("scale=0.5, wall-offset=1.5", (0.5, 1_500_000_000)),
])
def test_parse_test_clock(spec: str, expected: tuple[float, int]) -> None:
    assert parse_test_clock(spec) == expected


@pytest.mark.parametrize("spec", ["scale", "scale=x", "scale=0", "scale=-1", "scale=11", "speed=2",
                                  "wall-offset=nan", "scale=inf"])
def test_parse_test_clock_rejects_bad_specs_in_one_line(spec: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_test_clock(spec)
    assert str(info.value).startswith("--test-clock: ") and "\n" not in str(info.value)


# ---- the hooks: each rule on its own ------------------------------------------------------------

class _Rng:
    def uniform(self, a: float, b: float) -> float:
        return b


def test_hooks_arm_and_cancel_the_deadlines() -> None:
    net = Net()
    peer, t = net.pa, timers.Timers()
    timers.data_sent(peer, 100.0, t, _Rng())  # type: ignore[arg-type]
    assert peer.new_handshake_at == pytest.approx(100 + C.KEEPALIVE_TIMEOUT + C.REKEY_TIMEOUT + C.REKEY_TIMEOUT_JITTER_MAX)
    timers.data_sent(peer, 200.0, t, _Rng())  # type: ignore[arg-type]
    assert peer.new_handshake_at < 200, "an armed new-handshake timer is not pushed back"
    timers.any_authenticated_packet_received(peer)
    assert peer.new_handshake_at is None
    timers.data_received(peer, 100.0, t)
    assert peer.send_keepalive_at == 100 + C.KEEPALIVE_TIMEOUT and not peer.need_another_keepalive
    timers.data_received(peer, 101.0, t)
    assert peer.send_keepalive_at == 100 + C.KEEPALIVE_TIMEOUT and peer.need_another_keepalive
    timers.any_authenticated_packet_sent(peer)
    assert peer.send_keepalive_at is None
    timers.any_authenticated_packet_traversal(peer, 100.0)
    assert peer.persistent_keepalive_at is None             # no interval configured
    peer.persistent_keepalive_interval = 25
    timers.any_authenticated_packet_traversal(peer, 100.0)
    assert peer.persistent_keepalive_at == 125
    timers.handshake_initiated(peer, 100.0, t, _Rng())  # type: ignore[arg-type]
    assert peer.retransmit_handshake_at == pytest.approx(100 + C.REKEY_TIMEOUT + C.REKEY_TIMEOUT_JITTER_MAX)
    peer.handshake_attempts = 3
    timers.handshake_complete(peer, 1234)
    assert peer.retransmit_handshake_at is None and peer.handshake_attempts == 0
    assert peer.last_handshake_time_ns == 1234
    timers.session_derived(peer, 100.0, t)
    assert peer.zero_keys_at == 100 + 3 * C.REJECT_AFTER_TIME


def test_expired_zero_key_material_erases_the_sessions() -> None:
    net = Net()
    net.send(net.a)
    assert net.pa.current is not None and net.pa.zero_keys_at is not None
    net.advance(3 * C.REJECT_AFTER_TIME + 1, step=10)
    assert net.pa.keypairs() == [] and net.pb.keypairs() == []
    assert net.pa.zero_keys_at is None


# ---- index table, IP header helper, counters ----------------------------------------------------

def test_index_table_gives_unique_nonzero_indices_and_releases_only_its_owner() -> None:
    draws = iter([bytes(4), (7).to_bytes(4, "little"), (7).to_bytes(4, "little"), (9).to_bytes(4, "little")])
    table: IndexTable[str] = IndexTable(lambda n: next(draws))
    assert table.new("a") == 7          # zero is never handed out
    assert table.new("b") == 9          # nor one in use
    table.release(7, "b")
    assert table.get(7) == "a"
    table.set(7, "session")
    table.release(7, "a")
    assert table.get(7) == "session"
    table.discard(7)
    assert table.get(7) is None and len(table) == 1 and 9 in table


def test_ipheader_parse_and_destination() -> None:
    v4 = icmp("10.0.0.1", "10.0.0.2", b"x" * 10)
    assert ipheader.destination(v4) == (4, bytes([10, 0, 0, 2]))
    assert ipheader.parse(v4 + bytes(6)) == (4, len(v4), bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    assert ipheader.v4_total_length(v4) == len(v4)
    v6 = icmp("fd00::1", "fd00::2")
    version, length, src, dst = ipheader.parse(v6)  # type: ignore[misc]
    assert (version, length) == (6, len(v6)) and dst == ipaddress.IPv6Address("fd00::2").packed
    assert ipheader.destination(v6) == (6, ipaddress.IPv6Address("fd00::2").packed)
    runt = bytearray(v4)
    runt[2:4] = (19).to_bytes(2, "big")
    for bad in (b"", b"\x45" * 19, bytes(runt), v4[:-1], b"\x60" * 39, v6[:-1], b"\x10" + bytes(40)):
        assert ipheader.parse(bad) is None
    assert ipheader.destination(b"") is None and ipheader.destination(b"\x45" * 19) is None


def test_counters_are_an_enum_that_old_string_keys_still_find() -> None:
    net = Net()
    net.send(net.a)
    out = net.a.tunnel.send_packets([os.urandom(3)], net.now)
    assert out.datagrams() == []
    stats = net.a.tunnel.stats
    assert stats[Counter.TX_NOT_IP] == 1 and stats["tx_not_ip"] == 1
    assert all(isinstance(key, Counter) for key in stats)
