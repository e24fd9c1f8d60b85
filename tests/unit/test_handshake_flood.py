"""A handshake flood (initiations with a valid mac1, as tools/flood.py sends them) against the sans-I/O
core: when the interface counts as "under load" (§5.3), what refusing them costs (no Diffie-Hellman),
and that a legitimate initiator still gets in with one cookie round trip.

Time is simulated: the core takes `now` from its caller. Nothing here measures speed."""
from __future__ import annotations

import ipaddress
import random

from ravenvpn.protocol import constants as C
from ravenvpn.protocol import keys
from ravenvpn.protocol.cookie import CookieChecker, CookieGenerator
from ravenvpn.protocol.messages import parse_cookie_reply
from ravenvpn.protocol.tunnel import DEFAULT_LOAD_RATE, Tunnel
from tests.unit.protocol_harness import Net, icmp
from tools.flood import forged_initiation, mac1_key

STEP = 0.01                      # seconds between receive batches
PER_STEP = 50                    # forged initiations per batch: 5,000/s, fewer than load_threshold (64)


class Flooder:
    """Forged initiations for `tunnel` from many source addresses, valid mac1, zero mac2."""

    def __init__(self, tunnel: Tunnel, sources: int = 64) -> None:
        assert tunnel.public_key is not None
        self.key = mac1_key(tunnel.public_key)
        self.rng = random.Random(5)
        self.sources = [(f"198.19.{1 + i // 200}.{1 + i % 200}", 40000 + i) for i in range(sources)]
        self.sent = 0

    def batch(self, n: int = PER_STEP) -> list[tuple[bytes, tuple[str, int]]]:
        out = []
        for _ in range(n):
            out.append((forged_initiation(self.key, self.rng), self.sources[self.sent % len(self.sources)]))
            self.sent += 1
        return out


def test_an_evenly_paced_flood_is_answered_with_cookies_not_diffie_hellman() -> None:
    # 5,000/s in batches of 50 (a pump that keeps up never sees 64 in one batch): after the first
    # second's worth of DH work the interface is under load and refuses the rest with cookie replies.
    net = Net()
    b = net.b.tunnel
    flood = Flooder(b)
    now = net.now
    for _ in range(100):                   # one second
        out = b.receive_datagrams(flood.batch(), now)
        assert all(d[0] == 3 and len(d) == 64 for d, _ in out.network)
        now += STEP
    dh_done = b.stats["rx_bad_handshake"]  # forged: the static key never decrypts, after one DH each
    assert dh_done <= 1.2 * DEFAULT_LOAD_RATE, dict(b.stats)   # the bucket refills while it drains
    assert b.stats["tx_cookie_reply"] + dh_done == flood.sent == 5000


def test_under_load_ends_once_the_flood_has_stopped() -> None:
    net = Net()
    b = net.b.tunnel
    flood = Flooder(b)
    for _ in range(30):
        b.receive_datagrams(flood.batch(), net.now)
        net.now += STEP
    assert b.stats["tx_cookie_reply"] > 0
    replies = b.stats["tx_cookie_reply"]
    net.now += 2.0                         # > UNDER_LOAD_HOLD of quiet
    net.send(net.a)                        # an ordinary handshake: answered with a response, no cookie
    assert net.b.delivered and b.stats["tx_cookie_reply"] == replies


def test_a_legitimate_initiator_gets_in_with_one_cookie_round_trip_during_a_flood() -> None:
    """Its first initiation gets a cookie reply; the retry that REKEY_TIMEOUT (+ jitter) brings
    carries mac2 and is answered at once, whatever the flood around it."""
    net = Net()
    a, b = net.a.tunnel, net.b.tunnel
    flood = Flooder(b)
    for _ in range(20):                    # 0.2 s of flood first: B is under load
        b.receive_datagrams(flood.batch(), net.now)
        net.now += STEP
    before = b.stats["rx_bad_handshake"]
    started = net.now
    to_b = a.send_packets([icmp(net.a.inner, net.b.inner, b"first")], net.now).datagrams()
    assert [d[0] for d, _ in to_b] == [1]
    established = None
    while net.now < started + 10:
        out_b = b.receive_datagrams(flood.batch() + [(d, net.a.underlay) for d, _ in to_b], net.now)
        net.b.delivered.extend(out_b.tun)
        for_a = [(d, net.b.underlay) for d, ep in out_b.datagrams() if ep == net.a.underlay]
        to_b = a.receive_datagrams(for_a, net.now).datagrams() if for_a else []
        if net.pa.current is not None and established is None:
            established = net.now
        if any(p.endswith(b"first") for p in net.b.delivered):
            break
        net.now += STEP
        to_b += a.tick(net.now).datagrams()
    assert established is not None, dict(b.stats)
    # one cookie round trip: the retry left REKEY_TIMEOUT + at most 1/3 s of jitter after the first
    assert C.REKEY_TIMEOUT <= established - started <= C.REKEY_TIMEOUT + 0.334 + 2 * STEP
    assert any(p.endswith(b"first") for p in net.b.delivered)
    assert b.stats["rx_bad_handshake"] == before    # under load: no DH for a single forged message
    assert b.stats["rx_handshake_ratelimited"] == 0


def test_cookie_replies_decrypt_at_the_initiator_and_never_reuse_a_nonce() -> None:
    responder = keys.public_from_private(keys.generate_private())
    checker = CookieChecker(responder)
    generator = CookieGenerator(responder)
    source = ("192.0.2.7", 51820)
    nonces = set()
    for i in range(3 * CookieChecker.NONCE_POOL + 5):   # across refills of the nonce pool
        msg = generator.add_macs(bytearray(random.randbytes(116) + bytes(32)), C.MSG_INITIATION, 0.0)
        reply = checker.create_reply(msg, C.MSG_INITIATION, i, source, 0.0)
        parsed = parse_cookie_reply(reply)
        assert parsed.receiver == i and len(reply) == 64
        assert generator.consume_reply(parsed, 0.0)
        nonces.add(parsed.nonce)
        # the stored cookie now makes a mac2 the checker accepts for that source only
        retry = generator.add_macs(bytearray(msg[:116] + bytes(32)), C.MSG_INITIATION, 0.0)
        assert checker.mac2_valid(retry, C.MSG_INITIATION, source, 0.0)
        assert not checker.mac2_valid(retry, C.MSG_INITIATION, ("192.0.2.8", 51820), 0.0)
    assert len(nonces) == 3 * CookieChecker.NONCE_POOL + 5


def test_mac2_of_zeros_or_garbage_is_refused() -> None:
    responder_private = keys.generate_private()
    checker = CookieChecker(keys.public_from_private(responder_private))
    msg = bytearray(random.randbytes(148))
    msg[132:148] = bytes(16)
    assert not checker.mac2_valid(bytes(msg), C.MSG_INITIATION, ("192.0.2.7", 1), 0.0)
    msg[132:148] = random.randbytes(16)
    assert not checker.mac2_valid(bytes(msg), C.MSG_INITIATION, ("192.0.2.7", 1), 0.0)


def test_a_tunnel_with_a_peer_network_is_unaffected_below_the_load_rate() -> None:
    # Handshakes at a legitimate pace (a peer every 20 ms: 50/s) never put the interface under load.
    net = Net()
    b = net.b.tunnel
    for i in range(100):
        side = Net()
        peer = b.add_peer(side.a.tunnel.public_key)
        b.add_allowed_ip(peer, ipaddress.ip_network(f"10.77.{i}.1/32"))
        side.a.tunnel.remove_peer(side.b.tunnel.public_key)
        pa = side.a.tunnel.add_peer(b.public_key)
        pa.endpoint = net.b.underlay
        side.a.tunnel.add_allowed_ip(pa, ipaddress.ip_network("10.9.0.2/32"))
        init = side.a.tunnel.send_packets([icmp(f"10.77.{i}.1", "10.9.0.2")], net.now).datagrams()
        out = b.receive_datagrams([(init[0][0], (f"192.0.2.{100 + i}", 51820))], net.now)
        assert [d[0] for d, _ in out.datagrams()] == [2]     # a response, never a cookie reply
        net.now += 0.02
    assert b.stats["tx_cookie_reply"] == 0
