"""Behaviour of the sans-I/O Tunnel: sessions, timers, cookies, replay, roaming, bad input.

Time is driven by the test (the core takes `now` from its caller)."""
from __future__ import annotations

import ipaddress
import os
import struct

import pytest

from ravenvpn.protocol import constants as C
from ravenvpn.protocol import keys
from ravenvpn.protocol.clock import Clock
from ravenvpn.protocol.tunnel import Tunnel
from tests.unit.protocol_harness import Net, icmp


def handshakes(net: Net) -> int:
    return sum(1 for _, d in net.wire if d[0] == 1)


@pytest.mark.parametrize("psk", [None, os.urandom(32)], ids=["no-psk", "psk"])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_first_packet_triggers_handshake_and_arrives(psk: bytes | None, v6: bool) -> None:
    net = Net(psk=psk, v6=v6)
    net.send(net.a, b"hello")
    assert len(net.b.delivered) == 1 and net.b.delivered[0].endswith(b"hello")
    assert [len(d) for _, d in net.wire[:2]] == [148, 92]
    net.send(net.b, b"back")
    assert net.a.delivered[-1].endswith(b"back")
    assert net.pa.last_handshake_time_ns and net.pb.last_handshake_time_ns
    assert net.pa.tx_bytes == net.pb.rx_bytes and net.pb.tx_bytes == net.pa.rx_bytes


def test_psk_mismatch_never_completes() -> None:
    net = Net()
    net.pa.preshared_key = os.urandom(32)
    net.send(net.a)
    assert net.b.delivered == [] and net.a.tunnel.stats["rx_bad_handshake"] == 1


def test_transport_messages_are_padded_and_never_carry_plaintext() -> None:
    net = Net()
    for size in (1, 17, 100, 1000):
        net.send(net.a, b"SECRET" * size)
    for _, data in net.wire:
        assert b"SECRET" not in data
        if data[0] == 4:
            assert (len(data) - 32) % 16 == 0


def test_a_batch_is_encrypted_into_gso_bursts_that_arrive_in_order() -> None:
    net = Net()
    net.send(net.a)  # handshake
    sizes = [1420, 1420, 1420, 700, 1420, 1420, 40, 60, 60, 1420]
    payloads = [b"%03d" % i * (max(size - 28, 3) // 3) for i, size in enumerate(sizes)]
    packets = [icmp(net.a.inner, net.b.inner, p) for p in payloads]
    out = net.a.tunnel.send_packets(packets, net.now)
    assert out.network == [] and out.bursts
    for buffer, size, endpoint in out.bursts:
        assert endpoint == net.b.underlay
        # GSO rule: every datagram `size` bytes, only the last may be shorter
        assert 0 < len(buffer) - size * (-(-len(buffer) // size) - 1) <= size
    wire = out.datagrams()
    assert len(wire) == len(packets) and all((len(d) - 32) % 16 == 0 or len(d) - 32 == 1420 for d, _ in wire)
    assert [struct.unpack_from("<Q", d, 8)[0] for d, _ in wire] == sorted(struct.unpack_from("<Q", d, 8)[0] for d, _ in wire)
    got = net.b.tunnel.receive_datagrams([(d, net.a.underlay) for d, _ in wire], net.now)
    assert got.tun == packets


def test_responder_key_confirmation() -> None:
    net = Net()
    out = net.a.tunnel.send_packets([icmp(net.a.inner, net.b.inner)], net.now)
    resp = net.b.tunnel.receive_datagrams([(out.datagrams()[0][0], net.a.underlay)], net.now)
    assert net.pb.next is not None and net.pb.current is None
    assert net.pb.last_handshake_time_ns == 0  # completes only when the initiator uses the session
    net.a.tunnel.receive_datagrams([(resp.network[0][0], net.b.underlay)], net.now)
    assert net.pa.current is not None


def test_replayed_transport_is_dropped_after_authentication() -> None:
    net = Net()
    net.send(net.a, b"once")
    transport = [d for who, d in net.wire if who == "a" and d[0] == 4][-1]
    out = net.b.tunnel.receive_datagrams([(transport, net.a.underlay)], net.now)
    assert out.tun == [] and net.b.tunnel.stats["rx_replay"] == 1
    # a forged counter far ahead must not move the window: it fails authentication first
    forged = bytearray(transport)
    struct.pack_into("<Q", forged, 8, 1 << 40)
    net.b.tunnel.receive_datagrams([(bytes(forged), net.a.underlay)], net.now)
    assert net.b.tunnel.stats["rx_bad_auth"] == 1
    net.send(net.a, b"still works")
    assert net.b.delivered[-1].endswith(b"still works")


def test_replayed_initiation_is_rejected_and_floods_are_throttled() -> None:
    net = Net()
    net.send(net.a)
    init = net.wire[0][1]
    net.b.tunnel.receive_datagrams([(init, net.a.underlay)], net.now + 1)
    assert net.b.tunnel.stats["rx_handshake_replay"] == 1
    # a fresh initiation (newer timestamp) within 20 ms of the last accepted one is dropped
    net.a.tunnel.clock = Clock(wall_offset_ns=10**9)     # a timestamp one second newer
    net.pa.initiation_allowed_at = None
    out = net.a.tunnel.tick(net.now)  # nothing due
    assert out.datagrams() == []
    net.a.tunnel._initiate_handshake(net.pa, out, net.now, retry=False)
    net.b.tunnel.receive_datagrams([(out.datagrams()[0][0], net.a.underlay)], net.now + 0.005)
    assert net.b.tunnel.stats["rx_handshake_flood"] == 1


def test_source_address_not_allowed_for_peer_is_dropped() -> None:
    net = Net()
    net.send(net.a, b"ok")
    spoofed = icmp("10.66.0.1", net.b.inner, b"spoof")
    # A may only route packets *to* B's allowed IPs; make it send one with a foreign source
    out = net.a.tunnel.send_packets([spoofed], net.now)
    net.carry(net.a, out)
    assert not any(p.endswith(b"spoof") for p in net.b.delivered)
    assert net.b.tunnel.stats["rx_bad_source"] == 1


def test_roaming_endpoint_follows_authenticated_source() -> None:
    net = Net()
    net.send(net.a)
    net.send(net.a, b"moved", source=("198.51.100.7", 40000))
    assert net.pb.endpoint == ("198.51.100.7", 40000)
    # an unauthenticated datagram from elsewhere does not move it
    net.b.tunnel.receive_datagrams([(b"\x04\x00\x00\x00" + bytes(40), ("203.0.113.1", 1))], net.now)
    assert net.pb.endpoint == ("198.51.100.7", 40000)


@pytest.mark.parametrize("garbage", [
    b"", b"\xff" * 3, bytes(148), b"\x01\x00\x00\x00" + os.urandom(144), b"\x01\x00\x00\x00" + os.urandom(100),
    b"\x02\x00\x00\x00" + os.urandom(88), b"\x03\x00\x00\x00" + os.urandom(60), b"\x04\x00\x00\x00" + os.urandom(28),
    b"\x04\x00\x00\x00" + os.urandom(12), os.urandom(1500), b"\x09\x00\x00\x00" + bytes(40),
])
def test_malformed_datagrams_are_dropped_counted_and_harmless(garbage: bytes) -> None:
    net = Net()
    net.send(net.a, b"before")
    out = net.b.tunnel.receive_datagrams([(garbage, net.a.underlay)], net.now)
    assert out.tun == [] and out.datagrams() == []
    assert sum(v for k, v in net.b.tunnel.stats.items() if k.startswith("rx_")) == 1
    net.send(net.a, b"after")
    assert net.b.delivered[-1].endswith(b"after")


def test_initiation_with_valid_mac1_but_bad_content_is_dropped() -> None:
    net = Net()
    out = net.a.tunnel.send_packets([icmp(net.a.inner, net.b.inner)], net.now)
    init = bytearray(out.datagrams()[0][0])
    init[50] ^= 1  # corrupt encrypted static, then fix mac1 so only the AEAD catches it
    from ravenvpn.protocol import crypto
    init[116:132] = crypto.mac(crypto.hash_(C.LABEL_MAC1, net.b.tunnel.public_key), bytes(init[:116]))
    net.b.tunnel.receive_datagrams([(bytes(init), net.a.underlay)], net.now)
    assert net.b.tunnel.stats["rx_bad_handshake"] == 1


def test_unknown_peer_initiation_is_dropped() -> None:
    net = Net()
    net.b.tunnel.remove_peer(net.a.tunnel.public_key)
    net.send(net.a)
    assert net.b.tunnel.stats["rx_unknown_peer"] == 1


def test_under_load_cookie_reply_then_mac2_accepted() -> None:
    net = Net()
    net.b.tunnel.load_threshold = 1  # every handshake batch counts as load
    out = net.a.tunnel.send_packets([icmp(net.a.inner, net.b.inner)], net.now)
    reply = net.b.tunnel.receive_datagrams([(out.datagrams()[0][0], net.a.underlay)], net.now)
    (cookie_reply, _), = reply.datagrams()
    assert len(cookie_reply) == 64 and cookie_reply[0] == 3
    assert net.pb.next is None  # no DH work was done for it
    net.a.tunnel.receive_datagrams([(cookie_reply, net.b.underlay)], net.now)
    # the retry (after REKEY_TIMEOUT) carries mac2 and is accepted
    net.advance(C.REKEY_TIMEOUT + 0.5)
    assert net.b.delivered and net.pb.current is not None
    inits = [d for who, d in net.wire if who == "a" and d[0] == 1]
    assert inits[-1][132:148] != bytes(16)


def test_cookie_reply_from_a_forger_is_ignored() -> None:
    net = Net()
    out = net.a.tunnel.send_packets([icmp(net.a.inner, net.b.inner)], net.now)
    sender = struct.unpack_from("<I", out.datagrams()[0][0], 4)[0]
    fake = struct.pack("<II", 3, sender) + os.urandom(56)
    net.a.tunnel.receive_datagrams([(fake, net.b.underlay)], net.now)
    assert net.a.tunnel.stats["rx_bad_cookie"] == 1


def test_handshake_retries_every_5s_and_gives_up_after_90s() -> None:
    net = Net()
    net.send(net.a, drop=True)
    net.advance(C.REKEY_ATTEMPT_TIME + 20, step=0.25, drop=True)
    inits = handshakes(net)
    assert 18 <= inits <= 20, inits
    assert not net.pa.staged  # gave up: staged data dropped
    assert net.pa.retransmit_handshake_at is None


def test_handshake_retry_gaps_are_rekey_timeout_plus_jitter() -> None:
    net = Net()
    tunnel, now, step = net.a.tunnel, net.now, 0.01
    sent = [now] if tunnel.send_packets([icmp(net.a.inner, net.b.inner)], now).datagrams() else []
    while now < net.now + 60:
        now += step
        if any(d[0] == 1 for d, _ in tunnel.tick(now).datagrams()):
            sent.append(now)
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    assert len(gaps) >= 10
    assert all(C.REKEY_TIMEOUT <= g <= C.REKEY_TIMEOUT + C.REKEY_TIMEOUT_JITTER_MAX + step for g in gaps), gaps
    assert len({round(g, 2) for g in gaps}) > 1  # jittered, not a fixed period


def test_passive_keepalive_after_10s() -> None:
    net = Net()
    net.send(net.a)
    before = len([d for who, d in net.wire if who == "b" and len(d) == 32])
    net.advance(C.KEEPALIVE_TIMEOUT + 0.5)
    after = len([d for who, d in net.wire if who == "b" and len(d) == 32])
    assert after == before + 1


def test_persistent_keepalive() -> None:
    net = Net()
    net.pa.persistent_keepalive_interval = 3
    net.advance(0.2)  # switching it on sends at once (and so starts a handshake)
    assert net.pa.current is not None
    net.wire.clear()
    net.advance(10)
    keepalives = [d for who, d in net.wire if who == "a" and len(d) == 32]
    assert 3 <= len(keepalives) <= 4


def test_new_handshake_when_data_gets_no_reply() -> None:
    net = Net()
    net.send(net.a)
    n = handshakes(net)
    net.send(net.a, drop=True)  # B never hears it, so never answers
    net.advance(C.KEEPALIVE_TIMEOUT + C.REKEY_TIMEOUT + 0.5, drop=True)
    assert handshakes(net) == n + 1


def test_rekey_after_time_and_traffic_survives() -> None:
    net = Net()
    net.send(net.a)
    first = net.pa.current
    delivered = 0
    for _ in range(30):  # 150 s of traffic, both ways, every 5 s
        net.advance(5)
        net.send(net.a, b"a->b")
        net.send(net.b, b"b->a")
        delivered += 2
    assert net.pa.current is not first
    assert handshakes(net) >= 2
    assert len([p for p in net.b.delivered if p.endswith(b"a->b")]) == 30
    assert len([p for p in net.a.delivered if p.endswith(b"b->a")]) == 30


def test_reject_after_time_refuses_an_old_session() -> None:
    net = Net()
    net.send(net.a)
    kp = net.pa.current
    kp.created -= C.REJECT_AFTER_TIME + 1
    net.pa.initiation_allowed_at = None  # the last initiation was long ago too
    out = net.a.tunnel.send_packets([icmp(net.a.inner, net.b.inner)], net.now)
    assert [len(d) for d, _ in out.datagrams()] == [148]  # no transport under the dead key, a new handshake
    assert len(net.pa.staged) == 1


def test_rekey_after_messages() -> None:
    net = Net()
    net.send(net.b)  # B initiates, so A is the responder: only the message limit applies to A
    net.send(net.a)
    net.pa.current.send_counter = C.REKEY_AFTER_MESSAGES + 1
    net.pa.initiation_allowed_at = None
    out = net.a.tunnel.send_packets([icmp(net.a.inner, net.b.inner)], net.now)
    assert [d[0] for d, _ in out.datagrams()] == [4, 1]


def test_keys_zeroed_after_540s() -> None:
    net = Net()
    net.send(net.a)
    net.advance(C.ZERO_KEYS_AFTER + 1, step=1.0, drop=True)
    assert net.pa.current is None and net.pa.previous is None and net.pa.next is None


def test_initiator_rehandshakes_on_receive_near_reject_time() -> None:
    net = Net()
    net.send(net.a)
    net.pa.current.created -= C.REKEY_ON_RECEIVE_AGE + 1
    net.pa.initiation_allowed_at = None
    n = handshakes(net)
    net.send(net.b)
    assert handshakes(net) == n + 1


def test_low_order_peer_key_never_handshakes() -> None:
    t = Tunnel()
    t.private_key = keys.generate_private()
    p = t.add_peer(bytes(32))
    p.endpoint = ("192.0.2.1", 1)
    t.add_allowed_ip(p, ipaddress.ip_network("10.0.0.0/8"))
    out = t.send_packets([icmp("10.1.1.1", "10.0.0.1")], 1.0)
    assert out.datagrams() == []


def test_own_public_key_cannot_be_a_peer() -> None:
    t = Tunnel()
    t.private_key = keys.generate_private()
    with pytest.raises(ValueError):
        t.add_peer(t.public_key)


def test_private_key_change_drops_sessions() -> None:
    net = Net()
    net.send(net.a)
    net.a.tunnel.private_key = keys.generate_private()
    assert net.pa.current is None


def test_no_key_material_in_reprs() -> None:
    net = Net()
    net.send(net.a)
    text = " ".join(repr(x) for x in (net.a.tunnel, net.pa, net.pa.current, net.pa.handshake, net.a.tunnel._identity))
    for key in (net.a.private, net.pa.public_key):
        assert key.hex() not in text and keys.b64encode(key) not in text


def test_relay_forwards_between_peers_without_the_kernel() -> None:
    hub, left, right = Tunnel(), Tunnel(), Tunnel()
    for t in (hub, left, right):
        t.private_key = keys.generate_private()
    hub.relay = True
    ends = {id(hub): ("192.0.2.10", 1), id(left): ("192.0.2.11", 1), id(right): ("192.0.2.12", 1)}
    h_l, h_r = hub.add_peer(left.public_key), hub.add_peer(right.public_key)
    l_h, r_h = left.add_peer(hub.public_key), right.add_peer(hub.public_key)
    h_l.endpoint, h_r.endpoint, l_h.endpoint, r_h.endpoint = ends[id(left)], ends[id(right)], ends[id(hub)], ends[id(hub)]
    hub.add_allowed_ip(h_l, ipaddress.ip_network("10.1.0.0/16"))
    hub.add_allowed_ip(h_r, ipaddress.ip_network("10.2.0.0/16"))
    left.add_allowed_ip(l_h, ipaddress.ip_network("10.2.0.0/16"))
    right.add_allowed_ip(r_h, ipaddress.ip_network("10.1.0.0/16"))
    by_addr = {v: t for t, v in ((hub, ends[id(hub)]), (left, ends[id(left)]), (right, ends[id(right)]))}
    src_of = {id(t): ends[id(t)] for t in (hub, left, right)}
    delivered: dict[int, list[bytes]] = {id(t): [] for t in (hub, left, right)}
    queue = [(left, left.send_packets([icmp("10.1.0.5", "10.2.0.5", b"via hub")], 1.0))]
    for _ in range(50):
        if not queue:
            break
        sender, out = queue.pop(0)
        delivered[id(sender)].extend(out.tun)
        for data, dst in out.datagrams():
            t = by_addr[dst]
            queue.append((t, t.receive_datagrams([(data, src_of[id(sender)])], 1.0)))
    assert any(p.endswith(b"via hub") for p in delivered[id(right)])
    assert delivered[id(hub)] == [] and hub.stats["relayed"] == 1


def test_initiation_from_a_peer_added_moments_later_is_answered_without_waiting_for_a_retry() -> None:
    net = Net()
    net.b.tunnel.remove_peer(net.a.tunnel.public_key)
    net.send(net.a)
    assert net.b.tunnel.stats["rx_unknown_peer"] == 1 and net.b.delivered == []
    # the control plane configures the peer 0.3 s later (e.g. a gateway failover)
    net.now += 0.3
    pb = net.b.tunnel.add_peer(net.a.tunnel.public_key)
    import ipaddress
    net.b.tunnel.add_allowed_ip(pb, ipaddress.ip_network(f"{net.a.inner}/32"))
    net.carry(net.b, net.b.tunnel.tick(net.now))
    assert net.b.delivered and net.pa.current is not None  # staged packet arrived, no 5 s retry


def test_pending_unknown_initiations_expire_and_are_bounded() -> None:
    net = Net()
    net.b.tunnel.remove_peer(net.a.tunnel.public_key)
    net.send(net.a)
    net.now += C.REKEY_TIMEOUT + 1
    net.b.tunnel.tick(net.now)
    net.b.tunnel.add_peer(net.a.tunnel.public_key)
    assert net.b.tunnel.tick(net.now).datagrams() == []
    # many initiators whose keys B does not know (anyone who knows B's public key can make them)
    from ravenvpn.protocol.tunnel import _PENDING_UNKNOWN_MAX
    for i in range(_PENDING_UNKNOWN_MAX + 10):
        stranger = Tunnel()
        stranger.private_key = keys.generate_private()
        p = stranger.add_peer(net.b.tunnel.public_key)
        p.endpoint = net.b.underlay
        stranger.add_allowed_ip(p, ipaddress.ip_network("10.9.0.2/32"))
        out = stranger.send_packets([icmp("10.9.0.1", "10.9.0.2")], net.now)
        net.b.tunnel.receive_datagrams([(out.datagrams()[0][0], ("192.0.2.50", 1000 + i))], net.now)
    assert len(net.b.tunnel._pending_unknown) == _PENDING_UNKNOWN_MAX


def test_ipv4_total_length_below_the_header_is_not_delivered_as_a_runt() -> None:
    net = Net()
    net.send(net.a, b"ok")
    bad = bytearray(icmp(net.a.inner, net.b.inner, b"runt"))
    bad[2:4] = (8).to_bytes(2, "big")     # total length 8 < 20 (authenticated, from an allowed source)
    net.carry(net.a, net.a.tunnel.send_packets([bytes(bad)], net.now))
    assert all(len(p) >= 20 for p in net.b.delivered)
    assert net.b.tunnel.stats["rx_not_ip"] == 1


def test_private_key_of_a_peer_removes_that_peer_and_its_allowed_ips() -> None:
    net = Net()
    net.send(net.a)
    net.a.tunnel.private_key = net.b.private      # A now has B's identity: B cannot be A's peer
    assert net.b.tunnel.public_key not in net.a.tunnel.peers
    assert net.a.tunnel.peer_for_address(net.b.inner) is None
    out = net.a.tunnel.send_packets([icmp(net.a.inner, net.b.inner)], net.now)
    assert out.datagrams() == [] and net.a.tunnel.stats["tx_no_peer"] == 1
