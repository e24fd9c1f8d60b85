"""One configured peer: its keys, sessions, staged packets, counters and timer deadlines.

Timer deadlines are plain floats on the caller's monotonic clock (None = not armed);
the Tunnel fires them from `tick`. The event methods mirror wireguard-go's timers.go.
"""
from __future__ import annotations

from collections import deque

from .constants import KEEPALIVE_TIMEOUT, MAX_STAGED_PACKETS, REKEY_TIMEOUT, ZERO_KEYS_AFTER
from .cookie import CookieGenerator
from .handshake import Handshake
from .keypair import Keypair

Endpoint = tuple[str, int]


class Peer:
    def __init__(self, public_key: bytes, precomputed_static_static: bytes | None) -> None:
        self.public_key = public_key
        self.handshake = Handshake(public_key, precomputed_static_static)
        self.cookies = CookieGenerator(public_key)
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
        # timers (monotonic deadlines)
        self.retransmit_handshake_at: float | None = None
        self.send_keepalive_at: float | None = None
        self.new_handshake_at: float | None = None
        self.zero_keys_at: float | None = None
        self.persistent_keepalive_at: float | None = None
        self.handshake_attempts = 0
        self.need_another_keepalive = False
        self.sent_lastminute_handshake = False

    # --- configuration -------------------------------------------------------
    @property
    def preshared_key(self) -> bytes:
        return self.handshake.preshared_key

    @preshared_key.setter
    def preshared_key(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("preshared key must be 32 bytes")
        self.handshake.preshared_key = key

    @property
    def persistent_keepalive_interval(self) -> int:
        return self._persistent_keepalive_interval

    @persistent_keepalive_interval.setter
    def persistent_keepalive_interval(self, seconds: int) -> None:
        if not 0 <= seconds <= 65535:
            raise ValueError("persistent keepalive interval must be 0..65535")
        turned_on = seconds and not self._persistent_keepalive_interval
        self._persistent_keepalive_interval = seconds
        # Like wireguard-go: switching it on sends a keepalive right away (opens NAT, starts a handshake).
        if turned_on:
            self.persistent_keepalive_at = float("-inf")
        elif not seconds:
            self.persistent_keepalive_at = None

    # --- timer events (wireguard-go timers.go) -------------------------------
    def on_data_sent(self, now: float, jitter: float = 0.0) -> None:
        if self.new_handshake_at is None:
            self.new_handshake_at = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter

    def on_data_received(self, now: float, packets: int = 1) -> None:
        """`packets` data packets arrived (the data path reports a batch at once)."""
        if self.send_keepalive_at is None:
            self.send_keepalive_at = now + KEEPALIVE_TIMEOUT
            if packets > 1:
                self.need_another_keepalive = True
        else:
            self.need_another_keepalive = True

    def on_authenticated_traversal(self, now: float) -> None:
        if self._persistent_keepalive_interval:
            self.persistent_keepalive_at = now + self._persistent_keepalive_interval

    def on_handshake_complete(self, wall_ns: int) -> None:
        self.retransmit_handshake_at = None
        self.handshake_attempts = 0
        self.sent_lastminute_handshake = False
        self.last_handshake_time_ns = wall_ns

    def on_session_derived(self, now: float) -> None:
        self.zero_keys_at = now + ZERO_KEYS_AFTER

    def keypairs(self) -> list[Keypair]:
        return [kp for kp in (self.previous, self.current, self.next) if kp is not None]

    def __repr__(self) -> str:  # public keys are not secret, but keep reprs short and key-free
        return f"Peer(endpoint={self.endpoint!r}, rx={self.rx_bytes}, tx={self.tx_bytes})"
