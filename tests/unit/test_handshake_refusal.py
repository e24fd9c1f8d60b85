"""Why a peer's handshake initiations are refused (whitepaper §5.1: a TAI64N timestamp not newer than
the last one accepted): the core records it per peer only once the initiator is authenticated, the
device logs it once per peer per minute with the remedy, and `Device.refusals()` hands it to
`ravenvpn status`."""
from __future__ import annotations

import logging
import os
import struct
import threading

import pytest

from ravenvpn.device.device import Device
from ravenvpn.device.refusals import RefusalReporter
from ravenvpn.device.uapi import short_key
from ravenvpn.protocol import keys
from ravenvpn.protocol.clock import Clock
from ravenvpn.protocol.counters import Counter
from ravenvpn.protocol.peer import REFUSED_OLD_TIMESTAMP
from tests.unit.protocol_harness import Net
from tools import wgcraft

OLD = wgcraft.tai64n(1_000_000_000)     # 2001: older than anything the harness's clock sends


def craft_initiation(claimed_public: bytes, static_private: bytes, responder_public: bytes,
                     timestamp: bytes, sender: int = 0x5EED) -> bytes:
    """An initiation with a valid mac1 whose encrypted static says `claimed_public` while the
    timestamp is sealed with DH(`static_private`, responder): a real one when `static_private`
    belongs to `claimed_public`, a forgery when it does not (whitepaper §5.4.2)."""
    eph = os.urandom(32)
    ck = wgcraft.blake2s(wgcraft.CONSTRUCTION)
    h = wgcraft.blake2s(wgcraft.blake2s(ck, wgcraft.IDENTIFIER), responder_public)
    e_pub = wgcraft.public_of(eph)
    (ck,) = wgcraft.kdf(ck, e_pub, 1)
    h = wgcraft.blake2s(h, e_pub)
    ck, k = wgcraft.kdf(ck, wgcraft.dh(eph, responder_public), 2)
    enc_static = wgcraft.aead(k, 0, claimed_public, h)
    h = wgcraft.blake2s(h, enc_static)
    ck, k = wgcraft.kdf(ck, wgcraft.dh(static_private, responder_public), 2)
    enc_ts = wgcraft.aead(k, 0, timestamp, h)
    body = struct.pack("<II", wgcraft.MSG_INITIATION, sender) + e_pub + enc_static + enc_ts
    return body + wgcraft.mac(wgcraft.mac1_key(responder_public), body) + bytes(16)


def handshaken() -> Net:
    net = Net()
    net.send(net.a)                 # A initiates: B accepts A's current timestamp
    assert net.b.delivered and net.pb.last_refusal is None
    return net


def test_replayed_initiation_records_the_refusal_on_the_peer() -> None:
    net = handshaken()
    init = net.wire[0][1]
    net.b.tunnel.receive_datagrams([(init, net.a.underlay)], net.now + 1)
    assert net.b.tunnel.stats[Counter.RX_HANDSHAKE_REPLAY] == 1
    assert net.pb.last_refusal == (REFUSED_OLD_TIMESTAMP, net.now + 1)
    assert net.pa.last_refusal is None


def test_a_stepped_back_clock_is_refused_and_recorded_until_an_initiation_is_accepted() -> None:
    net = handshaken()
    a_public = net.a.tunnel.public_key
    stale = craft_initiation(a_public, net.a.private, net.b.tunnel.public_key, OLD)
    out = net.b.tunnel.receive_datagrams([(stale, ("192.0.2.9", 4500))], net.now + 1)
    assert out.datagrams() == [], "an initiation an hour behind was answered"
    assert net.pb.last_refusal == (REFUSED_OLD_TIMESTAMP, net.now + 1)
    assert net.pb.endpoint == net.a.underlay, "a refused initiation must not move the endpoint"
    fresh = craft_initiation(a_public, net.a.private, net.b.tunnel.public_key,
                             wgcraft.tai64n(2_000_000_000))
    out = net.b.tunnel.receive_datagrams([(fresh, net.a.underlay)], net.now + 2)
    assert len(out.datagrams()) == 1      # answered: the peer's clock is right again
    assert net.pb.last_refusal is None


@pytest.mark.parametrize("forgery", ["wrong static key", "unknown peer", "bad mac1", "tampered timestamp"])
def test_unauthenticated_initiations_record_no_refusal(forgery: str) -> None:
    """Only an initiator proven to hold the peer's key (the timestamp opens with the static-static
    secret) may set the refusal: otherwise anyone could make the log blame any peer."""
    net = handshaken()
    a_public, b_public = net.a.tunnel.public_key, net.b.tunnel.public_key
    stranger = keys.generate_private()
    if forgery == "wrong static key":       # claims A, but cannot seal the timestamp as A
        msg = craft_initiation(a_public, stranger, b_public, OLD)
        expect = Counter.RX_BAD_HANDSHAKE
    elif forgery == "unknown peer":
        msg = craft_initiation(wgcraft.public_of(stranger), stranger, b_public, OLD)
        expect = Counter.RX_UNKNOWN_PEER
    elif forgery == "bad mac1":
        msg = bytearray(craft_initiation(a_public, net.a.private, b_public, OLD))
        msg[116] ^= 1
        expect = Counter.RX_BAD_MAC1
    else:                                   # a captured, authentic initiation, timestamp bit flipped
        body = bytearray(net.wire[0][1][:116])
        body[100] ^= 1
        msg = bytes(body) + wgcraft.mac(wgcraft.mac1_key(b_public), bytes(body)) + bytes(16)
        expect = Counter.RX_BAD_HANDSHAKE
    net.b.tunnel.receive_datagrams([(bytes(msg), ("192.0.2.9", 4500))], net.now + 1)
    assert net.b.tunnel.stats[expect] == 1
    assert net.b.tunnel.stats[Counter.RX_HANDSHAKE_REPLAY] == 0
    assert net.pb.last_refusal is None


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refuse(net: Net, at: float) -> None:
    stale = craft_initiation(net.a.tunnel.public_key, net.a.private, net.b.tunnel.public_key, OLD)
    net.b.tunnel.receive_datagrams([(stale, net.a.underlay)], at)


def test_reporter_logs_once_per_peer_per_interval_with_the_remedy(caplog) -> None:
    net = handshaken()
    clock = FakeMonotonic()
    reporter = RefusalReporter(net.b.tunnel, threading.RLock(), "wg7", clock, interval=60.0)
    caplog.set_level(logging.WARNING, logger="ravenvpn")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "handshake initiation refused" in r.getMessage()]

    reporter()
    assert lines() == []                    # nothing refused: nothing said
    for i in range(12):                     # a minute of retries, one every 5 s
        clock.now += 5
        refuse(net, clock.now)
        reporter()
    assert len(lines()) == 1
    line = lines()[0]
    assert line.startswith(short_key(net.a.tunnel.public_key) + ": handshake initiation refused: ")
    assert "its timestamp is not newer than the last one accepted" in line
    assert "wg set wg7 peer KEY remove" in line and "restart this side" in line
    assert keys.b64encode(net.a.tunnel.public_key) not in line      # abbreviated, as wireguard-go
    clock.now += 5
    refuse(net, clock.now)
    reporter()
    assert len(lines()) == 2                # a minute after the first line, still refused: again
    clock.now += 300
    reporter()                              # nothing new: silence
    assert len(lines()) == 2
    # The remedy: remove and re-add. The new peer's own refusal (a replay, say) is news at once.
    pub = net.a.tunnel.public_key
    net.b.tunnel.remove_peer(pub)
    net.b.tunnel.add_peer(pub).endpoint = net.a.underlay
    reporter()
    assert len(lines()) == 2
    fresh = craft_initiation(pub, net.a.private, net.b.tunnel.public_key, wgcraft.tai64n(1_500_000_000))
    net.b.tunnel.receive_datagrams([(fresh, net.a.underlay)], clock.now)
    assert net.b.tunnel.peers[pub].last_refusal is None           # accepted: the re-added peer forgot
    clock.now += 1
    net.b.tunnel.receive_datagrams([(fresh, net.a.underlay)], clock.now)
    reporter()
    assert len(lines()) == 3


def test_reporter_does_not_repeat_an_old_refusal_when_another_peer_is_refused(caplog) -> None:
    net = handshaken()
    clock = FakeMonotonic()
    reporter = RefusalReporter(net.b.tunnel, threading.RLock(), "wg7", clock, interval=60.0)
    caplog.set_level(logging.WARNING, logger="ravenvpn")
    refuse(net, clock.now)
    reporter()
    # a second peer C, refused ten minutes later: only C is news
    c_private = keys.generate_private()
    c_public = wgcraft.public_of(c_private)
    net.b.tunnel.add_peer(c_public)
    clock.now += 600
    first = craft_initiation(c_public, c_private, net.b.tunnel.public_key, wgcraft.tai64n(1_600_000_000))
    net.b.tunnel.receive_datagrams([(first, ("192.0.2.3", 4500))], clock.now)
    net.b.tunnel.receive_datagrams([(first, ("192.0.2.3", 4500))], clock.now + 1)
    reporter()
    said = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert [s.split(":")[0] for s in said] == [short_key(net.a.tunnel.public_key), short_key(c_public)]


def test_device_refusals_gives_wall_clock_times() -> None:
    """`Device.refusals()`, what the agent puts in the status file: the reason, and when in Unix
    seconds (the host's wall clock, not the test-only offset of handshake timestamps)."""
    mono = FakeMonotonic()
    device = Device("rftest0", uapi=False,
                    clock=Clock(monotonic=mono, wall=lambda: 1_800_000_000 * 10**9, wall_offset_ns=-3600 * 10**9))
    assert device.refusals() == {}
    a_private = keys.generate_private()
    a_public = wgcraft.public_of(a_private)
    with device.configure() as tunnel:
        tunnel.private_key = keys.generate_private()
        tunnel.add_peer(a_public)
        b_public = tunnel.public_key
        assert b_public is not None
        for t, stamp in ((900.0, 1_700_000_000), (990.0, 1_600_000_000)):
            msg = craft_initiation(a_public, a_private, b_public, wgcraft.tai64n(stamp))
            tunnel.receive_datagrams([(msg, ("192.0.2.1", 4500))], t)
    assert device.refusals() == {a_public: (REFUSED_OLD_TIMESTAMP, 1_800_000_000 - 10.0)}
