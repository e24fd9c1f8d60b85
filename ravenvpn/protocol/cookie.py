"""mac1/mac2 and cookie replies: WireGuard's DoS mitigation (whitepaper 5.4.4-5.4.7)."""
from __future__ import annotations

import hashlib
import os
import socket
import struct
from typing import Callable

from . import crypto
from .constants import (
    COOKIE_REFRESH_TIME, INITIATION_SIZE, LABEL_COOKIE, LABEL_MAC1, MSG_COOKIE_REPLY, MSG_INITIATION,
    MSG_RESPONSE, REKEY_TIMEOUT, RESPONSE_SIZE,
)
from .messages import CookieReply, mac_offsets

Endpoint = tuple[str, int]

__all__ = ["CookieChecker", "CookieGenerator", "endpoint_bytes"]

_PORT = struct.Struct(">H")
_REPLY_HEADER = struct.Struct("<II")
_MAC1_AT = {MSG_INITIATION: INITIATION_SIZE - 32, MSG_RESPONSE: RESPONSE_SIZE - 32}
_NO_MAC2 = bytes(16)
_blake2s = hashlib.blake2s


def endpoint_bytes(endpoint: Endpoint) -> bytes:
    """The source address a cookie binds to: packed IP bytes (4 or 16) and the port, big-endian.

    Raises:
        ValueError: the host is not an IP literal.
    """
    host, port = endpoint[0], endpoint[1]   # a link-local endpoint also carries its scope
    # inet_pton, not ipaddress: this runs for every handshake message, and under a handshake flood
    # ipaddress.ip_address was a third of the cost of refusing a forged initiation (profiled).
    try:
        if ":" in host:
            packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])   # a zone is not the address
        else:
            packed = socket.inet_pton(socket.AF_INET, host)
    except OSError:
        raise ValueError(f"{host!r} is not an IP address") from None
    return packed + _PORT.pack(port)


class CookieChecker:
    """Responder side: validates mac1/mac2 on our incoming handshakes and makes cookie replies.

    Args:
        own_public: our public key (32 bytes), which keys mac1 and the cookie encryption.
        rng: random bytes source for the cookie secret and reply nonces.
        refresh: seconds the cookie secret lives (COOKIE_REFRESH_TIME, times a test timer scale).
    Times (`now`) are monotonic seconds. Not thread-safe.

    Under a handshake flood this is the whole cost of refusing a forged initiation, so it does
    only what it must per message (measured: benchmarks.reliability's flood scenario): mac1 first;
    no cookie computed for a message whose mac2 is all zeros (what an initiator without a cookie
    sends, §5.4.4; a real mac2 is zero with probability 2^-128); reply nonces drawn from `rng`
    NONCE_POOL at a time (each is still 24 fresh random bytes, §5.4.7, one getrandom call
    instead of one per reply).
    """

    #: Reply nonces drawn from `rng` at once.
    NONCE_POOL = 64

    def __init__(self, own_public: bytes, rng: Callable[[int], bytes] = os.urandom,
                 refresh: float = COOKIE_REFRESH_TIME) -> None:
        self._mac1_key = crypto.hash_(LABEL_MAC1, own_public)
        self._cookie_key = crypto.hash_(LABEL_COOKIE, own_public)
        self._rng = rng
        self._refresh = refresh
        self._secret = rng(32)
        self._secret_born: float | None = None
        self._nonces = b""
        self._nonce_at = 0

    def mac1_valid(self, msg: bytes, mtype: int) -> bool:
        """Whether the handshake message `msg` of type `mtype` carries our mac1 (§5.4.4), in constant time."""
        off1 = _MAC1_AT[mtype]
        return crypto.constant_time_eq(_blake2s(msg[:off1], digest_size=16, key=self._mac1_key).digest(),
                                       msg[off1:off1 + 16])

    def _cookie(self, source: Endpoint, now: float) -> bytes:
        if self._secret_born is None or now - self._secret_born > self._refresh:
            self._secret = self._rng(32)
            self._secret_born = now
        return _blake2s(endpoint_bytes(source), digest_size=16, key=self._secret).digest()

    def mac2_valid(self, msg: bytes, mtype: int, source: Endpoint, now: float) -> bool:
        """Whether `msg` carries a mac2 made with the cookie of `source` (ip, port), §5.4.7."""
        off2 = _MAC1_AT[mtype] + 16
        mac2 = msg[off2:off2 + 16]
        if mac2 == _NO_MAC2:
            # Sent without a cookie (§5.4.4): nothing to check. Whether a message carries a mac2 at
            # all is no secret, so this shortcut leaks nothing; a flood mostly takes it.
            return False
        cookie = self._cookie(source, now)
        return crypto.constant_time_eq(_blake2s(msg[:off2], digest_size=16, key=cookie).digest(), mac2)

    def create_reply(self, msg: bytes, mtype: int, sender_index: int, source: Endpoint, now: float) -> bytes:
        """A cookie reply (64 bytes) to `msg` from `source`, for the sender's index (§5.4.7)."""
        off1 = _MAC1_AT[mtype]
        at = self._nonce_at
        if at >= len(self._nonces):
            self._nonces, at = self._rng(24 * self.NONCE_POOL), 0
        nonce = self._nonces[at:at + 24]
        self._nonce_at = at + 24
        encrypted = crypto.xaead_encrypt(self._cookie_key, nonce, self._cookie(source, now), msg[off1:off1 + 16])
        return _REPLY_HEADER.pack(MSG_COOKIE_REPLY, sender_index) + nonce + encrypted


class CookieGenerator:
    """Initiator side, one per peer: adds mac1/mac2 to what we send and stores received cookies.

    Args:
        peer_public: the peer's public key (32 bytes).
        lifetime: seconds a received cookie is used for mac2 (COOKIE_REFRESH_TIME - REKEY_TIMEOUT,
            times a test timer scale).
    Times (`now`) are monotonic seconds. Not thread-safe.
    """

    __slots__ = ("_mac1_key", "_cookie_key", "_last_mac1", "_cookie", "_cookie_time", "_lifetime")

    def __init__(self, peer_public: bytes, lifetime: float = COOKIE_REFRESH_TIME - REKEY_TIMEOUT) -> None:
        self._mac1_key = crypto.hash_(LABEL_MAC1, peer_public)
        self._cookie_key = crypto.hash_(LABEL_COOKIE, peer_public)
        self._last_mac1: bytes | None = None
        self._cookie: bytes | None = None
        self._cookie_time = 0.0
        self._lifetime = lifetime

    def add_macs(self, msg: bytearray, mtype: int, now: float) -> bytes:
        """Fill in mac1, and mac2 if a fresh cookie is held (else zeros), of the handshake message
        `msg` of type `mtype` (modified in place); returns the finished message as bytes."""
        off1, off2 = mac_offsets(mtype)
        mac1 = crypto.mac(self._mac1_key, bytes(msg[:off1]))
        msg[off1:off2] = mac1
        self._last_mac1 = mac1
        if self._cookie is not None and now - self._cookie_time < self._lifetime:
            msg[off2:off2 + 16] = crypto.mac(self._cookie, bytes(msg[:off2]))
        else:
            msg[off2:off2 + 16] = bytes(16)
        return bytes(msg)

    def consume_reply(self, reply: CookieReply, now: float) -> bool:
        """Store the cookie if the reply answers the last message we sent; False if it does not."""
        if self._last_mac1 is None:
            return False
        try:
            cookie = crypto.xaead_decrypt(self._cookie_key, reply.nonce, reply.encrypted_cookie, self._last_mac1)
        except crypto.DecryptError:
            return False
        self._cookie, self._cookie_time = cookie, now
        return True
