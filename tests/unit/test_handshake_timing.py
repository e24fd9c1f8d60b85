"""Who may start a handshake, and when: every trigger of timers.py against its whitepaper §6 rule and
wireguard-go's device/timers.go, send.go and receive.go (field case F01 and its kind).

Two sans-I/O Tunnels and a clock the test moves; nothing is carried unless the test carries it, so
each message is seen and can be lost on purpose. Pure: no root.
"""
from __future__ import annotations

import ipaddress
import random

import pytest

from ravenvpn.protocol import constants as C
from ravenvpn.protocol import keys
from ravenvpn.protocol.tunnel import Output, Tunnel
from tests.unit.protocol_harness import icmp

INIT, RESP, DATA = C.MSG_INITIATION, C.MSG_RESPONSE, C.MSG_TRANSPORT
EP_A, EP_B = ("198.51.100.1", 51820), ("198.51.100.2", 51820)
IN_A, IN_B = "10.9.0.1", "10.9.0.2"


class Jitter(random.Random):
    """The retry jitter pinned to one end of its range (`high`: REKEY_TIMEOUT_JITTER_MAX, else 0)."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


class Pair:
    """A and B, configured for each other; `now` is the monotonic clock both are driven with."""

    def __init__(self, *, jitter_high: bool = False, seeds: tuple[int, int] | None = None) -> None:
        self.now = 1000.0
        ja, jb = (random.Random(seeds[0]), random.Random(seeds[1])) if seeds else (Jitter(jitter_high),) * 2
        self.a = Tunnel(jitter=ja)
        self.b = Tunnel(jitter=jb)
        self.a.private_key, self.b.private_key = keys.generate_private(), keys.generate_private()
        self.pa = self.a.add_peer(self.b.public_key)   # A's view of B
        self.pb = self.b.add_peer(self.a.public_key)   # B's view of A
        self.pa.endpoint, self.pb.endpoint = EP_B, EP_A
        self.a.add_allowed_ip(self.pa, ipaddress.ip_network(f"{IN_B}/32"))
        self.b.add_allowed_ip(self.pb, ipaddress.ip_network(f"{IN_A}/32"))

    def ping(self, tunnel: Tunnel, payload: bytes = b"ping") -> list[bytes]:
        """`tunnel` reads one packet from its TUN: the datagrams it sends."""
        src, dst = (IN_A, IN_B) if tunnel is self.a else (IN_B, IN_A)
        return [d for d, _ in tunnel.send_packets([icmp(src, dst, payload)], self.now).datagrams()]

    def deliver(self, tunnel: Tunnel, datagrams: list[bytes]) -> Output:
        """`datagrams` arrive at `tunnel` (from the other side's endpoint)."""
        source = EP_B if tunnel is self.a else EP_A
        return tunnel.receive_datagrams([(d, source) for d in datagrams], self.now)

    def tick_until(self, tunnel: Tunnel, end: float, step: float = 0.01) -> list[tuple[float, bytes]]:
        """Tick `tunnel` until `end` (what it sends is lost): (time, datagram) of each send."""
        sent = []
        while self.now < end:
            self.now = min(end, self.now + step)
            sent += [(self.now, d) for d, _ in tunnel.tick(self.now).datagrams()]
        return sent

    def responder_with_unconfirmed_session(self) -> list[bytes]:
        """A initiates, B answers; A's confirmation has not reached B yet. Returns what A sends
        once it has B's response (its confirmation)."""
        (init,) = self.ping(self.a)
        assert init[0] == INIT
        self.now += 0.001
        self.response_at = self.now
        (resp,) = [d for d, _ in self.deliver(self.b, [init]).datagrams()]
        assert resp[0] == RESP and self.pb.next is not None and self.pb.current is None
        self.now += 0.001
        return [d for d, _ in self.deliver(self.a, [resp]).datagrams()]


def types(datagrams: list[bytes]) -> list[int]:
    return [d[0] for d in datagrams]


# ---- F01: a responder waits for key confirmation -------------------------------------------------

def test_responder_with_packets_stays_quiet_until_confirmed_then_sends_them() -> None:
    """F01: B has packets for A right after answering A's initiation. It must not start its own
    handshake (that would replace the session A is about to use); it stages them and sends them
    on the session A's first transport message confirms (wireguard-go: lastSentHandshake is set by
    SendHandshakeResponse; SendStagedPackets after ReceivedWithKeypair)."""
    p = Pair()
    confirmation = p.responder_with_unconfirmed_session()
    for _ in range(3):
        p.now += 0.2
        assert p.ping(p.b) == [], "responder initiated before its session was confirmed"
    assert len(p.pb.staged) == 3
    p.now += 0.2
    out = p.deliver(p.b, confirmation)
    assert types([d for d, _ in out.datagrams()]) == [DATA] * 3 and not p.pb.staged
    assert p.pb.current is not None and p.pb.next is None


@pytest.mark.parametrize("trigger", ["tun packet", "persistent keepalive switched on", "timers"])
def test_responder_sends_no_initiation_within_rekey_timeout_of_its_response(trigger: str) -> None:
    """Whatever asks the responder to send, no initiation leaves it within REKEY_TIMEOUT of its
    response while A's confirmation is lost (the F01 field case: 0 initiations in 5 s)."""
    p = Pair()
    p.responder_with_unconfirmed_session()   # the confirmation is lost
    limit = p.response_at + C.REKEY_TIMEOUT - 0.001
    if trigger == "persistent keepalive switched on":
        p.pb.persistent_keepalive_interval = 1
    sent: list[tuple[float, bytes]] = []
    while p.now < limit:
        if trigger == "tun packet":
            sent += [(p.now, d) for d in p.ping(p.b)]
        sent += p.tick_until(p.b, min(limit, p.now + 0.1))
    assert [t for t, d in sent if d[0] == INIT] == []


def test_unconfirmed_responder_may_initiate_once_rekey_timeout_has_passed() -> None:
    """The wait is bounded: REKEY_TIMEOUT after its response, the responder's next packet starts a
    handshake of its own (its staged packets go out once that completes)."""
    p = Pair()
    p.responder_with_unconfirmed_session()   # the confirmation is lost
    p.now += C.REKEY_TIMEOUT - 0.01
    assert p.ping(p.b) == []
    p.now += 0.02
    (init,) = p.ping(p.b)
    assert init[0] == INIT
    (resp,) = [d for d, _ in p.deliver(p.a, [init]).datagrams()]
    data = [d for d, _ in p.deliver(p.b, [resp]).datagrams()]
    assert types(data) == [DATA, DATA]        # both staged pings, on B's own session
    assert len(p.deliver(p.a, data).tun) == 2


@pytest.mark.parametrize("jitter_high", [False, True], ids=["jitter-0", "jitter-max"])
def test_unconfirmed_responder_with_waiting_packets_initiates_when_the_wait_ends(jitter_high: bool) -> None:
    """Its staged packets do not wait for another packet from the TUN: once REKEY_TIMEOUT (+ the
    retry jitter) has passed since its response, the responder's timers start its own handshake,
    and nothing goes out before."""
    p = Pair(jitter_high=jitter_high)
    p.responder_with_unconfirmed_session()   # the confirmation is lost
    assert p.ping(p.b) == []
    sent = p.tick_until(p.b, p.response_at + C.REKEY_TIMEOUT + C.REKEY_TIMEOUT_JITTER_MAX + 0.02, step=0.001)
    ((at, init),) = sent
    wait = C.REKEY_TIMEOUT + (C.REKEY_TIMEOUT_JITTER_MAX if jitter_high else 0)
    assert init[0] == INIT and at == pytest.approx(p.response_at + wait, abs=0.0011)
    (resp,) = [d for d, _ in p.deliver(p.a, [init]).datagrams()]
    data = [d for d, _ in p.deliver(p.b, [resp]).datagrams()]
    assert len(p.deliver(p.a, data).tun) == 1


def test_persistent_keepalive_refused_by_the_wait_is_not_lost() -> None:
    """A persistent keepalive due while the responder waits for confirmation goes out (with the
    handshake it needs) when the wait ends, and keeps its interval after; wireguard-go drops it
    and sends no keepalive until other traffic flows."""
    p = Pair()
    p.responder_with_unconfirmed_session()   # the confirmation is lost
    p.pb.persistent_keepalive_interval = 2
    sent = p.tick_until(p.b, p.response_at + C.REKEY_TIMEOUT + 0.05)
    assert types([d for _, d in sent]) == [INIT]
    (resp,) = [d for d, _ in p.deliver(p.a, [sent[0][1]]).datagrams()]
    assert [len(d) for d, _ in p.deliver(p.b, [resp]).datagrams()] == [C.TRANSPORT_MIN_SIZE]
    sent = p.tick_until(p.b, p.now + 6.05)
    assert [len(d) for _, d in sent] == [C.TRANSPORT_MIN_SIZE] * 3


def test_confirmation_by_keepalive_flushes_the_responders_staged_packets() -> None:
    """The initiator confirms at once even with nothing to send (a keepalive, receive.go's
    SendKeepalive after a response): the responder's staged packets leave on that."""
    p = Pair()
    (init,) = p.ping(p.a)
    (ping_delivered,) = [d for d, _ in p.deliver(p.b, [init]).datagrams()]   # B's response
    assert p.ping(p.b) == []                                                  # staged
    a_out = p.deliver(p.a, [ping_delivered])          # A: its staged ping (data), no keepalive needed
    b_out = p.deliver(p.b, [d for d, _ in a_out.datagrams()])
    assert len(b_out.tun) == 1 and types([d for d, _ in b_out.datagrams()]) == [DATA]


def test_simultaneous_initiations_resolve_without_an_initiation_storm() -> None:
    """Both sides start at once; each answers the other, which spoils both handshakes (one
    handshake state per peer). At most one initiation per side per REKEY_TIMEOUT, and the jitter of
    the retries breaks the tie: traffic flows within 2 x REKEY_TIMEOUT."""
    p = Pair(seeds=(1, 2))
    (ia,) = p.ping(p.a)
    (ib,) = p.ping(p.b)
    ra = [d for d, _ in p.deliver(p.a, [ib]).datagrams()]
    rb = [d for d, _ in p.deliver(p.b, [ia]).datagrams()]
    inits = {"a": [p.now], "b": [p.now]}
    queue = [(p.b, rb), (p.a, ra)]          # (sender, datagrams)
    end = p.now + 2 * C.REKEY_TIMEOUT + 1
    delivered = 0
    while p.now < end:
        p.now += 0.01
        queue += [(p.a, p.ping(p.a)), (p.b, p.ping(p.b))]
        queue += [(p.a, [d for d, _ in p.a.tick(p.now).datagrams()]), (p.b, [d for d, _ in p.b.tick(p.now).datagrams()])]
        while queue:
            sender, datagrams = queue.pop(0)
            receiver = p.b if sender is p.a else p.a
            inits["a" if sender is p.a else "b"] += [p.now for d in datagrams if d[0] == INIT]
            out = p.deliver(receiver, datagrams)
            delivered += len(out.tun)
            if out.datagrams():
                queue.append((receiver, [d for d, _ in out.datagrams()]))
    for side, times in inits.items():
        assert all(b - a >= C.REKEY_TIMEOUT for a, b in zip(times, times[1:])), (side, times)
    assert p.pa.current is not None and p.pb.current is not None and delivered > 0


# ---- rekeying: which side, after what ------------------------------------------------------------

def confirmed_pair() -> Pair:
    p = Pair()
    confirmation = p.responder_with_unconfirmed_session()
    p.deliver(p.b, confirmation)
    assert p.pa.current.is_initiator and not p.pb.current.is_initiator
    return p


def test_only_the_initiator_rekeys_after_rekey_after_time_on_send() -> None:
    """§6.2: REKEY_AFTER_TIME renews the session when *sending*, on the initiator only; the
    responder keeps sending on it (until REJECT_AFTER_TIME)."""
    p = confirmed_pair()
    p.now += C.REKEY_AFTER_TIME - 1
    assert types(p.ping(p.a)) == [DATA] and types(p.ping(p.b)) == [DATA]
    p.now += 2
    assert types(p.ping(p.b)) == [DATA], "the responder rekeyed on send"
    assert types(p.ping(p.a)) == [DATA, INIT]


def test_only_the_initiator_rekeys_on_receive_near_reject_after_time() -> None:
    """§6.2: REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT after the session began, the
    initiator renews it when *receiving*, once; the responder never does (receive.go
    keepKeyFreshReceiving)."""
    p = confirmed_pair()

    def a_data_only() -> list[bytes]:   # A is past REKEY_AFTER_TIME: its sends carry an initiation too
        return [d for d in p.ping(p.a) if d[0] == DATA]

    p.now += C.REKEY_ON_RECEIVE_AGE - 1
    assert types([d for d, _ in p.deliver(p.a, p.ping(p.b)).datagrams()]) == []
    p.pa.initiation_allowed_at = None      # forget the initiation A's send just made
    p.now += 2
    assert types([d for d, _ in p.deliver(p.b, a_data_only()).datagrams()]) == [], "the responder rekeyed on receive"
    p.pa.initiation_allowed_at = None
    assert types([d for d, _ in p.deliver(p.a, p.ping(p.b)).datagrams()]) == [INIT]
    p.now += C.REKEY_TIMEOUT + 1
    assert types([d for d, _ in p.deliver(p.a, p.ping(p.b)).datagrams()]) == [], "only once per session"


def test_either_side_rekeys_after_rekey_after_messages() -> None:
    p = confirmed_pair()
    p.now += C.REKEY_TIMEOUT       # B's response was the last handshake message it sent
    p.pb.current.send_counter = C.REKEY_AFTER_MESSAGES + 1
    assert types(p.ping(p.b)) == [DATA, INIT]


def test_a_dead_session_makes_either_side_initiate() -> None:
    """Past REJECT_AFTER_TIME nothing is sent on a session: a packet is staged and starts a
    handshake, whichever side began the old one (SendStagedPackets)."""
    p = confirmed_pair()
    p.now += C.REJECT_AFTER_TIME + 1
    assert types(p.ping(p.b)) == [INIT] and len(p.pb.staged) == 1


# ---- retries, give-up, the passive rules ---------------------------------------------------------

@pytest.mark.parametrize("jitter_high", [False, True], ids=["jitter-0", "jitter-max"])
def test_retransmission_every_rekey_timeout_plus_jitter_then_give_up(jitter_high: bool) -> None:
    """§6.4 and timers.go: unanswered, an initiation is retried after REKEY_TIMEOUT + jitter
    (0..REKEY_TIMEOUT_JITTER_MAX), 18 + 1 times; then staged packets are dropped, no keepalive is
    owed and key erasure is scheduled. Nothing else is sent."""
    p = Pair(jitter_high=jitter_high)
    start = p.now
    assert types(p.ping(p.a)) == [INIT]
    sent = []
    while len(sent) < C.MAX_HANDSHAKE_ATTEMPTS + 1:
        sent += p.tick_until(p.a, p.now + 0.1)
    times = [start] + [t for t, d in sent if d[0] == INIT]
    assert len(sent) == len(times) - 1, "only initiations were sent"
    gap = C.REKEY_TIMEOUT + (C.REKEY_TIMEOUT_JITTER_MAX if jitter_high else 0)
    assert all(b - a == pytest.approx(gap, abs=0.011) for a, b in zip(times, times[1:]))
    # Data from B arrives on an old session meanwhile: a keepalive is owed, until A gives up.
    p.pa.send_keepalive_at = p.now + C.KEEPALIVE_TIMEOUT
    assert p.tick_until(p.a, p.now + 60) == [], "nothing is sent after giving up"
    assert not p.pa.staged and p.pa.retransmit_handshake_at is None and p.pa.send_keepalive_at is None
    assert p.pa.zero_keys_at is not None


def test_initiations_are_at_most_one_per_rekey_timeout_under_a_packet_flood() -> None:
    p = Pair()
    times = []
    start = p.now
    while p.now < start + 30:
        times += [p.now for d in p.ping(p.a) if d[0] == INIT]
        times += [t for t, d in p.tick_until(p.a, p.now + 0.05) if d[0] == INIT]
    assert len(times) >= 5
    assert all(b - a >= C.REKEY_TIMEOUT for a, b in zip(times, times[1:])), times


@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_new_handshake_when_sent_data_gets_no_answer(side: str) -> None:
    """§6.5: data sent and nothing authenticated received for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
    (+ jitter): a new handshake, from either side."""
    p = confirmed_pair()
    tunnel, other = (p.a, p.b) if side == "initiator" else (p.b, p.a)
    p.now += 1
    p.deliver(tunnel, p.ping(other))    # an answer to whatever `tunnel` sent before
    sent_at = p.now
    assert types(p.ping(tunnel)) == [DATA]                  # lost
    sent = p.tick_until(tunnel, sent_at + C.KEEPALIVE_TIMEOUT + C.REKEY_TIMEOUT + 1)
    inits = [t for t, d in sent if d[0] == INIT]
    assert len(inits) == 1
    assert sent_at + C.KEEPALIVE_TIMEOUT + C.REKEY_TIMEOUT <= inits[0] <= (
        sent_at + C.KEEPALIVE_TIMEOUT + C.REKEY_TIMEOUT + C.REKEY_TIMEOUT_JITTER_MAX + 0.011)


def test_an_answer_cancels_the_new_handshake() -> None:
    p = confirmed_pair()
    p.now += 1
    p.deliver(p.b, p.ping(p.a))
    p.now += C.KEEPALIVE_TIMEOUT
    p.deliver(p.a, [d for d, _ in p.b.tick(p.now).datagrams()])     # B's keepalive reaches A
    sent = p.tick_until(p.a, p.now + C.REKEY_TIMEOUT + 1)
    assert [d for _, d in sent if d[0] == INIT] == []


def test_received_data_gets_a_keepalive_not_a_handshake() -> None:
    """§6.5: data received and nothing sent back for KEEPALIVE_TIMEOUT: one keepalive (32 bytes)."""
    p = confirmed_pair()
    p.now += 1
    p.deliver(p.b, p.ping(p.a))
    sent = p.tick_until(p.b, p.now + C.KEEPALIVE_TIMEOUT + 1)
    assert [len(d) for _, d in sent] == [C.TRANSPORT_MIN_SIZE]


def test_persistent_keepalive_keeps_its_interval_without_handshakes() -> None:
    p = confirmed_pair()
    p.pb.persistent_keepalive_interval = 3
    sent = p.tick_until(p.b, p.now + 10)
    assert types([d for _, d in sent]) == [DATA] * 4        # at once, then every 3 s
    assert all(len(d) == C.TRANSPORT_MIN_SIZE for _, d in sent)


def test_a_new_private_key_may_initiate_at_once() -> None:
    """Changing the private key ends every session and the handshake in flight; the next packet
    starts a handshake under the new key at once, not REKEY_TIMEOUT after the last one
    (wireguard-go's ExpireCurrentKeypairs)."""
    p = Pair()
    assert types(p.ping(p.a)) == [INIT]
    p.now += 1
    p.a.private_key = keys.generate_private()
    assert types(p.ping(p.a)) == [INIT]
