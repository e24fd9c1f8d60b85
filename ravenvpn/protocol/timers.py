"""WireGuard's timers (whitepaper §6), one named function per rule, as wireguard-go's timers.go.

Each peer has five deadlines (`Peer.*_at`: monotonic seconds on the caller's clock, None = not
armed). The data path calls the eleven *hooks* when something happens (data sent, a handshake
message sent, a handshake completed, ...); they arm or cancel deadlines. `Tunnel.tick(now)` calls
the five *expiries* of the deadlines that passed. Nothing here reads a clock: `now` always comes
from the caller.

Who may start a handshake, and when (the triggers, each gated by `may_initiate`):

* a packet to send and no usable session (the initiator's first packet, or any side's once its
  session is past REJECT_AFTER_TIME / REJECT_AFTER_MESSAGES), §6.2;
* after sending, the current session is older than REKEY_AFTER_TIME and *we* initiated it, or it
  carried REKEY_AFTER_MESSAGES (either side), §6.2;
* after receiving, the current session is older than REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT -
  REKEY_TIMEOUT and we initiated it, once per session (`Peer.sent_lastminute_handshake`), §6.2;
* `expired_retransmit_handshake` (REKEY_TIMEOUT + jitter without a response, up to
  REKEY_ATTEMPT_TIME) and `expired_new_handshake` (data sent, nothing heard for KEEPALIVE_TIMEOUT
  + REKEY_TIMEOUT), §6.4, §6.5.

`may_initiate` refuses all of them before `Peer.initiation_allowed_at`: REKEY_TIMEOUT after the
last initiation we sent, and REKEY_TIMEOUT (+ jitter) after the last response we sent (the kernel's
and wireguard-go's last_sent_handshake is stamped by both). The response counts so that a responder
whose new session is not yet confirmed does not start a second, competing handshake: it keeps its
packets staged until the initiator's first transport message confirms the session
(`handshake_complete`), or, failing that, until REKEY_TIMEOUT has passed.

Two deliberate additions to wireguard-go, neither visible on the wire to a peer that behaves:

* a refused initiation while packets wait is retried when the gate opens (`initiation_deferred`),
  where wireguard-go waits for the next packet from the TUN (or, for a persistent keepalive,
  stops keepalives altogether until other traffic flows);
* the gate after a response carries the retry jitter, so two peers that initiated at the same
  moment (each answering the other, which spoils both handshakes) do not retry in lockstep
  forever while both have traffic.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .constants import (
    COOKIE_REFRESH_TIME, HANDSHAKE_INITIATION_RATE, KEEPALIVE_TIMEOUT, MAX_HANDSHAKE_ATTEMPTS, REJECT_AFTER_TIME,
    REKEY_AFTER_TIME, REKEY_ATTEMPT_TIME, REKEY_ON_RECEIVE_AGE, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX,
    ZERO_KEYS_AFTER,
)
from .output import Output

if TYPE_CHECKING:
    from .peer import Peer

__all__ = [
    "Timers", "TimerActions", "may_initiate",
    "initiation_sent", "response_sent", "initiation_deferred",
    "data_sent", "data_received", "any_authenticated_packet_sent", "any_authenticated_packet_received",
    "any_authenticated_packet_traversal", "handshake_initiated", "handshake_complete", "session_derived",
    "expired_retransmit_handshake", "expired_send_keepalive", "expired_new_handshake",
    "expired_zero_key_material", "expired_persistent_keepalive",
]


@dataclass(frozen=True, slots=True)
class Timers:
    """The protocol's durations in seconds for one Tunnel (whitepaper §6.1). Immutable.

    `Timers()` holds the specification values; `Timers.scaled(s)` multiplies every one by `s`
    (a test seam: 0.05 makes REKEY_AFTER_TIME 6 s). Counts (MAX_HANDSHAKE_ATTEMPTS) and the
    configured persistent keepalive interval are not scaled.
    """

    rekey_after_time: float = REKEY_AFTER_TIME
    reject_after_time: float = REJECT_AFTER_TIME
    rekey_attempt_time: float = REKEY_ATTEMPT_TIME
    rekey_timeout: float = REKEY_TIMEOUT
    rekey_timeout_jitter_max: float = REKEY_TIMEOUT_JITTER_MAX
    keepalive_timeout: float = KEEPALIVE_TIMEOUT
    rekey_on_receive_age: float = REKEY_ON_RECEIVE_AGE
    zero_keys_after: float = ZERO_KEYS_AFTER
    cookie_refresh_time: float = COOKIE_REFRESH_TIME
    handshake_initiation_rate: float = HANDSHAKE_INITIATION_RATE
    scale: float = 1.0

    @classmethod
    def scaled(cls, scale: float) -> "Timers":
        """Every duration times `scale` (> 0; 1.0 = the protocol's own values).

        Raises:
            ValueError: `scale` is not a positive finite number.
        """
        if not 0 < scale < float("inf"):
            raise ValueError(f"timer scale must be a positive number, not {scale!r}")
        base = cls()
        return cls(*(getattr(base, name) * scale for name in cls.__slots__ if name != "scale"), scale=scale)


class TimerActions(Protocol):
    """What the expiries ask of the `Tunnel` whose timers fired: its durations and three actions
    (a Protocol, so this module needs no import of tunnel.py, which imports it)."""

    timers: Timers

    def _initiate_handshake(self, peer: Peer, out: Output, now: float, *, retry: bool) -> None: ...

    def _send_keepalive(self, peer: Peer, out: Output, now: float) -> None: ...

    def _expire_sessions(self, peer: Peer) -> None: ...


def may_initiate(peer: Peer, now: float) -> bool:
    """Whether a handshake initiation may be sent to `peer` at `now` (monotonic seconds): not before
    `peer.initiation_allowed_at` (§6.4: at most one initiation per REKEY_TIMEOUT, and none within
    REKEY_TIMEOUT of a response; wireguard-go's SendHandshakeInitiation checks lastSentHandshake,
    which SendHandshakeResponse stamps too)."""
    allowed_at = peer.initiation_allowed_at
    return allowed_at is None or now >= allowed_at


# ---------------------------------------------------------------------------- hooks
def initiation_sent(peer: Peer, now: float, timers: Timers) -> None:
    """After a handshake initiation is sent (or would have been, to a peer without endpoint): no
    other one for REKEY_TIMEOUT. Retries come after REKEY_TIMEOUT + jitter, so they always pass."""
    peer.initiation_allowed_at = now + timers.rekey_timeout


def response_sent(peer: Peer, now: float, timers: Timers, jitter: random.Random) -> None:
    """After a handshake response is sent: no initiation for REKEY_TIMEOUT + jitter. For a
    responder this is the wait for key confirmation: it may not send on the new session before the
    initiator's first transport message, and must not replace that session with one of its own
    meanwhile (wireguard-go's SendHandshakeResponse stamps lastSentHandshake; the kernel alike)."""
    gate = now + timers.rekey_timeout + jitter.uniform(0, timers.rekey_timeout_jitter_max)
    if peer.initiation_allowed_at is None or gate > peer.initiation_allowed_at:
        peer.initiation_allowed_at = gate


def initiation_deferred(peer: Peer) -> None:
    """After `may_initiate` refused an initiation: if packets wait for it and no retry is armed,
    retry when the gate opens, instead of waiting for the next packet (see the module docstring).
    The retry counts as an attempt, so REKEY_ATTEMPT_TIME still bounds it."""
    if peer.staged and peer.retransmit_handshake_at is None:
        peer.retransmit_handshake_at = peer.initiation_allowed_at


def data_sent(peer: Peer, now: float, timers: Timers, jitter: random.Random) -> None:
    """After an authenticated data packet is sent: expect an answer within KEEPALIVE_TIMEOUT +
    REKEY_TIMEOUT (+ jitter), or start a new handshake (§6.5)."""
    if peer.new_handshake_at is None:
        peer.new_handshake_at = (now + timers.keepalive_timeout + timers.rekey_timeout
                                 + jitter.uniform(0, timers.rekey_timeout_jitter_max))


def data_received(peer: Peer, now: float, timers: Timers, packets: int = 1) -> None:
    """After `packets` authenticated data packets are received: answer with a keepalive after
    KEEPALIVE_TIMEOUT unless data goes back first (§6.5)."""
    if peer.send_keepalive_at is None:
        peer.send_keepalive_at = now + timers.keepalive_timeout
        if packets > 1:
            # A batch is several receptions at once: wireguard-go would re-arm after the first.
            peer.need_another_keepalive = True
    else:
        peer.need_another_keepalive = True


def any_authenticated_packet_sent(peer: Peer) -> None:
    """After any authenticated packet (data, keepalive, handshake) is sent: no keepalive is owed (§6.5)."""
    peer.send_keepalive_at = None


def any_authenticated_packet_received(peer: Peer) -> None:
    """After any authenticated packet is received: the peer is alive, no new handshake is needed (§6.5)."""
    peer.new_handshake_at = None


def any_authenticated_packet_traversal(peer: Peer, now: float) -> None:
    """After any authenticated packet is sent or received: restart the persistent keepalive
    interval, if one is configured (§6.5)."""
    interval = peer.persistent_keepalive_interval
    if interval:
        peer.persistent_keepalive_at = now + interval


def handshake_initiated(peer: Peer, now: float, timers: Timers, jitter: random.Random) -> None:
    """After a handshake initiation is sent: retry after REKEY_TIMEOUT (+ jitter) unless a
    response arrives (§6.4)."""
    peer.retransmit_handshake_at = now + timers.rekey_timeout + jitter.uniform(0, timers.rekey_timeout_jitter_max)


def handshake_complete(peer: Peer, wall_ns: int) -> None:
    """After a handshake completes (response received, or first data under the responder's new
    session): stop retrying, and record the wall time in ns for `wg show` (§6.4)."""
    peer.retransmit_handshake_at = None
    peer.handshake_attempts = 0
    peer.sent_lastminute_handshake = False
    peer.last_handshake_time_ns = wall_ns


def session_derived(peer: Peer, now: float, timers: Timers) -> None:
    """After new transport keys are derived: erase all key material if no newer session comes
    within 3 x REJECT_AFTER_TIME (§6.3)."""
    peer.zero_keys_at = now + timers.zero_keys_after


# ---------------------------------------------------------------------------- expiries
def expired_retransmit_handshake(tunnel: TimerActions, peer: Peer, out: Output, now: float) -> None:
    """No response within REKEY_TIMEOUT (or a deferred initiation's gate opened): send the
    initiation again, or after REKEY_ATTEMPT_TIME give up, drop the staged packets and schedule
    zeroing the keys (§6.4)."""
    peer.retransmit_handshake_at = None
    if peer.handshake_attempts > MAX_HANDSHAKE_ATTEMPTS:
        # Giving up: nothing is owed to a peer we cannot reach (wireguard-go drops the keepalive
        # timer too), and the packets that waited for the handshake are dropped.
        peer.send_keepalive_at = None
        peer.staged.clear()
        if peer.zero_keys_at is None:
            peer.zero_keys_at = now + tunnel.timers.zero_keys_after
    else:
        peer.handshake_attempts += 1
        tunnel._initiate_handshake(peer, out, now, retry=True)


def expired_send_keepalive(tunnel: TimerActions, peer: Peer, out: Output, now: float) -> None:
    """Data arrived KEEPALIVE_TIMEOUT ago and nothing went back: send a keepalive, and arm
    another if more data arrived meanwhile (§6.5)."""
    peer.send_keepalive_at = None
    tunnel._send_keepalive(peer, out, now)
    if peer.need_another_keepalive:
        peer.need_another_keepalive = False
        peer.send_keepalive_at = now + tunnel.timers.keepalive_timeout


def expired_new_handshake(tunnel: TimerActions, peer: Peer, out: Output, now: float) -> None:
    """Data was sent KEEPALIVE_TIMEOUT + REKEY_TIMEOUT ago and nothing came back: the session
    may be dead on the other side, start a new handshake (§6.5)."""
    peer.new_handshake_at = None
    tunnel._initiate_handshake(peer, out, now, retry=False)


def expired_zero_key_material(tunnel: TimerActions, peer: Peer, out: Output, now: float) -> None:
    """3 x REJECT_AFTER_TIME without a new session: erase every session and handshake key (§6.3)."""
    peer.zero_keys_at = None
    tunnel._expire_sessions(peer)


def expired_persistent_keepalive(tunnel: TimerActions, peer: Peer, out: Output, now: float) -> None:
    """The persistent keepalive interval passed without traffic: send a keepalive to keep NAT
    mappings open (§6.5); with no endpoint yet, look again an interval later."""
    peer.persistent_keepalive_at = None
    if peer.persistent_keepalive_interval and peer.endpoint is not None:
        tunnel._send_keepalive(peer, out, now)
    elif peer.persistent_keepalive_interval:
        # No endpoint yet (a peer that must call us, whose address is learnt later): try again in an
        # interval, as wireguard-go's keepalive keeps re-arming, so one goes out soon after it is known.
        peer.persistent_keepalive_at = now + peer.persistent_keepalive_interval
