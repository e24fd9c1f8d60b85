"""One configured peer: its keys, sessions, staged packets, counters and timer deadlines.

Timer deadlines are plain floats on the caller's monotonic clock (None = not armed); timers.py
arms and cancels them and `Tunnel.tick` fires them. Not thread-safe (the Tunnel's lock covers it).
"""
from __future__ import annotations

from collections import deque

from .constants import COOKIE_REFRESH_TIME, MAX_STAGED_PACKETS, REKEY_TIMEOUT
from .cookie import CookieGenerator
from .handshake import Handshake
from .keypair import Keypair

__all__ = ["Endpoint", "Peer", "REFUSED_OLD_TIMESTAMP"]

#: A UDP endpoint as the socket module spells it: (IPv4 or IPv6 literal without brackets, port), or
#: for a link-local IPv6 address (literal, port, flowinfo 0, scope id: the index of its interface).
Endpoint = tuple[str, int] | tuple[str, int, int, int]

#: `Peer.last_refusal` reason: an authenticated handshake initiation whose TAI64N timestamp is not
#: newer than the greatest one accepted from this peer (whitepaper §5.1, replay protection).
REFUSED_OLD_TIMESTAMP = ("its timestamp is not newer than the last one accepted "
                         "(a replay, or the peer's clock went back after a restart)")


class Peer:
    """A remote WireGuard peer, as `Tunnel.add_peer` returns it.

    Configuration attributes, set directly (inside `Device.configure()` on a running device):

    Attributes:
        public_key: its Curve25519 public key, 32 bytes (read-only).
        endpoint: where to send, an `Endpoint`; None until configured or learnt from an
            authenticated packet (roaming: the source of the last one wins, whitepaper §2.1).
        preshared_key: 32 bytes mixed into the handshake (§5.2); all zeros = none.
        persistent_keepalive_interval: seconds, 0..65535; 0 = off (§6.5).

    State, read-only for callers:
        previous, current, next: the sessions (`Keypair`), as in §6.2: `next` is a responder's
            session not yet confirmed by the initiator.
        staged: packets (bytes) waiting for a session, at most MAX_STAGED_PACKETS.
        rx_bytes, tx_bytes: bytes of WireGuard messages received/sent, as `wg show` counts them.
        last_handshake_time_ns: wall-clock Unix time in ns of the last completed handshake (0 = never).
        last_refusal: why and when the last handshake initiation from this peer was refused, as
            (reason, monotonic seconds on the `now` clock of the Tunnel's caller), or None (none
            refused since the last one accepted). Only set once the initiator's static key and
            timestamp were authenticated, so it names this peer truthfully; today the one reason is
            `REFUSED_OLD_TIMESTAMP`. The device layer reports it (log line, `ravenvpn status`).
        retransmit_handshake_at, send_keepalive_at, new_handshake_at, zero_keys_at,
            persistent_keepalive_at: timer deadlines, monotonic seconds or None (timers.py).
        initiation_allowed_at: monotonic seconds before which no handshake initiation is sent
            (None = any time): REKEY_TIMEOUT after our last initiation, REKEY_TIMEOUT + jitter
            after our last response (`timers.may_initiate`).
    """

    def __init__(self, public_key: bytes, precomputed_static_static: bytes | None,
                 cookie_lifetime: float = COOKIE_REFRESH_TIME - REKEY_TIMEOUT) -> None:
        """`precomputed_static_static`: DH(our private key, `public_key`), None if either is
        unusable; `cookie_lifetime`: seconds a received cookie is used (see CookieGenerator)."""
        self.public_key = public_key
        self.handshake = Handshake(public_key, precomputed_static_static)
        self.cookies = CookieGenerator(public_key, lifetime=cookie_lifetime)
        self.endpoint: Endpoint | None = None
        self._persistent_keepalive_interval = 0
        self.protocol_version = 1
        self.previous: Keypair | None = None
        self.current: Keypair | None = None
        self.next: Keypair | None = None
        self.staged: deque[bytes] = deque(maxlen=MAX_STAGED_PACKETS)
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.last_handshake_time_ns = 0
        self.last_refusal: tuple[str, float] | None = None
        # timers (monotonic deadlines, timers.py)
        self.retransmit_handshake_at: float | None = None
        self.send_keepalive_at: float | None = None
        self.new_handshake_at: float | None = None
        self.zero_keys_at: float | None = None
        self.persistent_keepalive_at: float | None = None
        self.initiation_allowed_at: float | None = None
        self.handshake_attempts = 0
        self.need_another_keepalive = False
        self.sent_lastminute_handshake = False

    # --- configuration -------------------------------------------------------
    @property
    def preshared_key(self) -> bytes:
        """The preshared key, 32 bytes (all zeros = none).

        Raises:
            ValueError: on setting a key that is not 32 bytes.
        """
        return self.handshake.preshared_key

    @preshared_key.setter
    def preshared_key(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("preshared key must be 32 bytes")
        self.handshake.preshared_key = key

    @property
    def persistent_keepalive_interval(self) -> int:
        """Seconds between keepalives when nothing else is sent (0 = off, §6.5). Switching it on
        sends a keepalive at the next tick, as wireguard-go does (opens NAT, starts a handshake).

        Raises:
            ValueError: on setting a value outside 0..65535.
        """
        return self._persistent_keepalive_interval

    @persistent_keepalive_interval.setter
    def persistent_keepalive_interval(self, seconds: int) -> None:
        if not 0 <= seconds <= 65535:
            raise ValueError("persistent keepalive interval must be 0..65535")
        turned_on = seconds and not self._persistent_keepalive_interval
        self._persistent_keepalive_interval = seconds
        if turned_on:
            self.persistent_keepalive_at = float("-inf")
        elif not seconds:
            self.persistent_keepalive_at = None

    def keypairs(self) -> list[Keypair]:
        """The sessions that exist, of previous, current and next."""
        return [kp for kp in (self.previous, self.current, self.next) if kp is not None]

    def __repr__(self) -> str:  # public keys are not secret, but keep reprs short and key-free
        return f"Peer(endpoint={self.endpoint!r}, rx={self.rx_bytes}, tx={self.tx_bytes})"
