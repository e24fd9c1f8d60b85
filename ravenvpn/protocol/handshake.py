"""The Noise_IKpsk2 handshake as WireGuard runs it: message construction and consumption.

Functions compute into locals and return new values; state is only committed by the
caller after a message fully authenticates, so a forged message never disturbs a
handshake in progress.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from . import crypto
from .constants import CONSTRUCTION, IDENTIFIER
from .messages import Initiation, Response, pack_initiation, pack_response
from .tai64n import tai64n

INITIAL_CHAINING_KEY = crypto.hash_(CONSTRUCTION)
INITIAL_HASH = crypto.hash_(INITIAL_CHAINING_KEY, IDENTIFIER)
ZERO_PSK = bytes(32)


class HandshakeError(Exception):
    """A handshake message failed authentication or carries an unacceptable key."""


class HandshakeState(enum.Enum):
    """Where a peer's handshake is, as wireguard-go's handshakeState (whitepaper §5.4.2-5.4.3)."""

    ZEROED = 0
    INITIATION_CREATED = 1
    INITIATION_CONSUMED = 2
    RESPONSE_CREATED = 3


class StaticIdentity:
    """Our own static key and what can be precomputed from it."""

    __slots__ = ("private", "public", "_private_obj", "hash_with_own_public")

    def __init__(self, private: bytes) -> None:
        self.private = private
        self._private_obj = X25519PrivateKey.from_private_bytes(private)
        self.public = self._private_obj.public_key().public_bytes_raw()
        # The responder's initial hash mixes in its own public key; compute it once.
        self.hash_with_own_public = crypto.hash_(INITIAL_HASH, self.public)

    def dh(self, public: bytes) -> bytes:
        """X25519 of our static key with `public` (32 bytes).

        Raises:
            ValueError: `public` is a low-order point.
        """
        return crypto.dh(self._private_obj, public)

    def __repr__(self) -> str:  # never show key material
        return "StaticIdentity(<redacted>)"


@dataclass(slots=True, repr=False)
class Handshake:
    """Per-peer handshake state (one in flight at a time, as in the protocol)."""

    remote_static: bytes
    precomputed_static_static: bytes | None = None  # None: our key or theirs is unusable
    preshared_key: bytes = ZERO_PSK
    state: HandshakeState = HandshakeState.ZEROED
    chaining_key: bytes = b""
    hash: bytes = b""
    local_ephemeral: X25519PrivateKey | None = None
    remote_ephemeral: bytes = b""
    local_index: int = 0
    remote_index: int = 0
    last_timestamp: bytes = bytes(12)  # greatest TAI64N accepted from this peer
    last_initiation_consumed: float | None = None

    def zero(self) -> None:
        """Forget the handshake in flight (ephemeral key, chaining key, indices); keeps the peer's
        keys and the replay/flood bookkeeping."""
        self.state = HandshakeState.ZEROED
        self.chaining_key = self.hash = self.remote_ephemeral = b""
        self.local_ephemeral = None
        self.local_index = self.remote_index = 0

    def __repr__(self) -> str:
        return f"Handshake(state={self.state.name})"


def precompute_static_static(identity: StaticIdentity | None, remote_static: bytes) -> bytes | None:
    """DH(our static, their static), 32 bytes, computed once per peer; None if we have no key or
    theirs is a low-order point (then no handshake is ever made with it)."""
    if identity is None:
        return None
    try:
        return identity.dh(remote_static)
    except ValueError:
        return None  # low-order peer key: never handshake with it


def create_initiation(hs: Handshake, identity: StaticIdentity, sender_index: int, unix_ns: int) -> bytearray:
    """Build an initiation (148 bytes, MACs left zero) and move `hs` to INITIATION_CREATED (§5.4.2).

    `unix_ns` is the wall clock in ns, sent as the TAI64N timestamp.

    Raises:
        HandshakeError: no usable static-static secret for this peer.
    """
    if hs.precomputed_static_static is None:
        raise HandshakeError("no usable static-static secret for this peer")
    eph = X25519PrivateKey.generate()
    e_pub = eph.public_key().public_bytes_raw()
    ck = crypto.kdf1(INITIAL_CHAINING_KEY, e_pub)
    h = crypto.hash_(crypto.hash_(INITIAL_HASH, hs.remote_static), e_pub)
    ck, key = crypto.kdf2(ck, crypto.dh(eph, hs.remote_static))
    enc_static = crypto.aead_encrypt(key, 0, identity.public, h)
    h = crypto.hash_(h, enc_static)
    ck, key = crypto.kdf2(ck, hs.precomputed_static_static)
    enc_ts = crypto.aead_encrypt(key, 0, tai64n(unix_ns), h)
    h = crypto.hash_(h, enc_ts)
    hs.state = HandshakeState.INITIATION_CREATED
    hs.chaining_key, hs.hash, hs.local_ephemeral, hs.local_index = ck, h, eph, sender_index
    return pack_initiation(sender_index, e_pub, enc_static, enc_ts)


@dataclass(slots=True, repr=False)
class ConsumedInitiation:
    """What an authenticated initiation established, before the caller accepts it."""

    remote_static: bytes
    timestamp: bytes
    chaining_key: bytes
    hash: bytes
    remote_ephemeral: bytes
    remote_index: int


def open_initiation_static(identity: StaticIdentity, msg: Initiation) -> tuple[bytes, bytes, bytes]:
    """First half of consuming an initiation: who claims to send it. Returns (their static public
    key, chaining key, hash), 32 bytes each.

    Raises:
        HandshakeError: the ephemeral key is unusable or the static key fails authentication.
    """
    ck = crypto.kdf1(INITIAL_CHAINING_KEY, msg.ephemeral)
    h = crypto.hash_(identity.hash_with_own_public, msg.ephemeral)
    try:
        ck, key = crypto.kdf2(ck, identity.dh(msg.ephemeral))
        static = crypto.aead_decrypt(key, 0, msg.encrypted_static, h)
    except (ValueError, crypto.DecryptError) as exc:
        raise HandshakeError(str(exc)) from exc
    return static, ck, crypto.hash_(h, msg.encrypted_static)


def finish_initiation(hs: Handshake, msg: Initiation, static: bytes, ck: bytes, h: bytes) -> ConsumedInitiation:
    """Second half: authenticate the timestamp with the static-static secret of the claimed peer.

    Raises:
        HandshakeError: no usable static-static secret, or the timestamp fails authentication.
    """
    if hs.precomputed_static_static is None:
        raise HandshakeError("no usable static-static secret for this peer")
    ck, key = crypto.kdf2(ck, hs.precomputed_static_static)
    try:
        timestamp = crypto.aead_decrypt(key, 0, msg.encrypted_timestamp, h)
    except crypto.DecryptError as exc:
        raise HandshakeError("initiation timestamp failed authentication") from exc
    h = crypto.hash_(h, msg.encrypted_timestamp)
    return ConsumedInitiation(static, timestamp, ck, h, msg.ephemeral, msg.sender)


def accept_initiation(hs: Handshake, consumed: ConsumedInitiation, now: float) -> None:
    """Commit an authenticated, fresh initiation to `hs` (now: monotonic seconds, for the flood check)."""
    hs.state = HandshakeState.INITIATION_CONSUMED
    hs.chaining_key, hs.hash = consumed.chaining_key, consumed.hash
    hs.remote_ephemeral, hs.remote_index = consumed.remote_ephemeral, consumed.remote_index
    hs.last_timestamp = consumed.timestamp
    hs.last_initiation_consumed = now


def create_response(hs: Handshake, sender_index: int) -> bytearray:
    """Build a response (92 bytes, MACs left zero) to the consumed initiation in `hs` (§5.4.3).

    Raises:
        HandshakeError: no consumed initiation, or the initiator's keys give a low-order result.
    """
    if hs.state is not HandshakeState.INITIATION_CONSUMED:
        raise HandshakeError("no consumed initiation to respond to")
    eph = X25519PrivateKey.generate()
    e_pub = eph.public_key().public_bytes_raw()
    ck = crypto.kdf1(hs.chaining_key, e_pub)
    h = crypto.hash_(hs.hash, e_pub)
    try:
        ck = crypto.kdf1(ck, crypto.dh(eph, hs.remote_ephemeral))
        ck = crypto.kdf1(ck, crypto.dh(eph, hs.remote_static))
    except ValueError as exc:
        raise HandshakeError(str(exc)) from exc
    ck, tau, key = crypto.kdf3(ck, hs.preshared_key)
    h = crypto.hash_(h, tau)
    enc_nothing = crypto.aead_encrypt(key, 0, b"", h)
    h = crypto.hash_(h, enc_nothing)
    hs.state = HandshakeState.RESPONSE_CREATED
    hs.chaining_key, hs.hash, hs.local_index = ck, h, sender_index
    return pack_response(sender_index, hs.remote_index, e_pub, enc_nothing)


def consume_response(hs: Handshake, identity: StaticIdentity, msg: Response) -> bytes:
    """Authenticate a response to our initiation; returns the final chaining key (state untouched).

    Raises:
        HandshakeError: no initiation in flight, an unusable ephemeral key, or failed authentication.
    """
    if hs.state is not HandshakeState.INITIATION_CREATED or hs.local_ephemeral is None:
        raise HandshakeError("no initiation in flight")
    ck = crypto.kdf1(hs.chaining_key, msg.ephemeral)
    h = crypto.hash_(hs.hash, msg.ephemeral)
    try:
        ck = crypto.kdf1(ck, crypto.dh(hs.local_ephemeral, msg.ephemeral))
        ck = crypto.kdf1(ck, identity.dh(msg.ephemeral))
    except ValueError as exc:
        raise HandshakeError(str(exc)) from exc
    ck, tau, key = crypto.kdf3(ck, hs.preshared_key)
    h = crypto.hash_(h, tau)
    try:
        crypto.aead_decrypt(key, 0, msg.encrypted_nothing, h)
    except crypto.DecryptError as exc:
        raise HandshakeError("response failed authentication") from exc
    return ck


def derive_transport_keys(chaining_key: bytes, initiator: bool) -> tuple[bytes, bytes]:
    """(send key, receive key): the initiator sends with the first KDF output."""
    first, second = crypto.kdf2(chaining_key, b"")
    return (first, second) if initiator else (second, first)
