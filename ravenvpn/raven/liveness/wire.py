"""Liveness messages on the wire, and the cryptography that authenticates them.

Four messages, all UDP to :data:`LIVENESS_PORT` (little-endian, fixed layouts, a 4-byte header
``type, 0, 0, 0`` as WireGuard's):

=========  =====  ============================================================================
HELLO      60 B   header | gateway id (8) | watcher's ephemeral X25519 public (32) | nonce_w (16)
WELCOME    40 B   header | session id (4) | nonce_c (16) | tag (16)
STATE      41 B   header | session id (4) | counter (8) | AEAD(flags (1) | term (8)) (9 + 16)
HEARD      32 B   header | session id (4) | counter (8) | tag (16)
CLAIM      ≥14 B  header | flags (1) | term (8) | len+gateway name | len+node name (plain)
=========  =====  ============================================================================

HELLO / WELCOME / STATE run on a domain's private network between a *watcher* (any node of the
domain) and a *candidate* (a tunnel endpoint, which holds a WireGuard static key whose public half
every node reads from the cluster file). The watcher has no key of its own, so the exchange is a
one-way-authenticated handshake in the spirit of Noise NK: the watcher sends a fresh ephemeral
public key and nonce; the candidate derives keys from DH(candidate static, watcher ephemeral) and
both nonces and proves it holds the static key with an AEAD tag over its WELCOME. Only the holder
of the candidate's private key (or the watcher itself) can compute those keys, and they are new for
every HELLO, so a STATE or WELCOME recorded earlier never verifies in a later session. STATEs carry
a strictly increasing counter (replay within a session), are encrypted and authenticated with
ChaCha20-Poly1305 (the AEAD of WireGuard), and say "I am alive, I am (not) active, my term is N".
HEARDs go the other way, tagged under a third session key with their own counter: they tell a
candidate that the domain still hears it, so a candidate cut off from the LAN (a flapping link)
neither keeps the role nor claims it (see :mod:`.machine`).

CLAIM goes from an active candidate to the candidates of *remote* gateways, inside the WireGuard
tunnel (to their node IPs, routed through raven0). It has no cryptography of its own: WireGuard
already authenticated its source address (cryptokey routing: a packet is only delivered from a peer
whose AllowedIPs hold its source), and the receiver accepts a CLAIM only when it arrived on its
tunnel interface, never from the LAN.

Nothing here signs: X25519 keys cannot sign, and the watcher does not need the candidate to sign,
only to prove possession of its key to the watcher in this session (as Noise NK's responder does).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ...protocol import crypto

__all__ = [
    "LIVENESS_PORT", "HELLO", "WELCOME", "STATE", "CLAIM", "FLAG_ACTIVE", "FLAG_RESIGN",
    "WireError", "gateway_id", "Hello", "State", "Claim", "SessionKeys",
    "make_hello", "parse_hello", "welcome_keys", "make_welcome", "open_welcome",
    "make_state", "open_state", "state_session", "make_heard", "open_heard", "make_claim", "parse_claim",
    "message_type",
]

LIVENESS_PORT = 4501      # UDP; next to WireGuard's 4500, unused by Raven (10262/10263 TCP proxy, 4500 UDP)
HELLO, WELCOME, STATE, CLAIM, HEARD = 1, 2, 3, 4, 5
FLAG_ACTIVE = 0x01        # the sender terminates its domain's tunnels
FLAG_RESIGN = 0x02        # the sender is stopping: take over now (planned handover)
_LABEL = b"ravenvpn liveness v1"
_HDR = struct.Struct("<B3x")
_HELLO = struct.Struct("<B3x8s32s16s")
_WELCOME = struct.Struct("<B3xI16s16s")
_STATE_HEAD = struct.Struct("<B3xIQ")
_STATE_BODY = struct.Struct("<BQ")
_HEARD_HEAD = struct.Struct("<B3xIQ")
HEARD_SIZE = _HEARD_HEAD.size + 16
_CLAIM_HEAD = struct.Struct("<B3xBQ")
STATE_SIZE = _STATE_HEAD.size + _STATE_BODY.size + 16


class WireError(ValueError):
    """A datagram that is not a well-formed liveness message, or whose authentication failed."""


def gateway_id(name: str) -> bytes:
    """8 bytes naming a Gateway in HELLO (BLAKE2s of its name): a HELLO for another domain is refused."""
    return hashlib.blake2s(name.encode(), digest_size=8).digest()


def message_type(data: bytes) -> int:
    """The type byte of a datagram (0 when it is too short to have one)."""
    return data[0] if len(data) >= _HDR.size else 0


@dataclass(frozen=True)
class Hello:
    """A parsed HELLO: the Gateway it is for, the watcher's ephemeral public key and nonce (bytes)."""

    gateway_id: bytes
    ephemeral: bytes      # the watcher's ephemeral X25519 public key
    nonce: bytes          # 16 random bytes


@dataclass(frozen=True)
class State:
    """An authenticated STATE: session id, counter, flags and the sender's term (integers)."""

    session: int
    counter: int
    flags: int
    term: int

    @property
    def active(self) -> bool:
        """The sender says it is its domain's active gateway."""
        return bool(self.flags & FLAG_ACTIVE)

    @property
    def resigning(self) -> bool:
        """The sender is stopping (planned handover)."""
        return bool(self.flags & FLAG_RESIGN)


@dataclass(frozen=True)
class Claim:
    """A parsed CLAIM: ``node`` of Gateway ``gateway`` says it is (or stops being) active, in ``term``."""

    gateway: str
    node: str
    flags: int
    term: int

    @property
    def active(self) -> bool:
        """The claim is "I am active" (not a resignation)."""
        return bool(self.flags & FLAG_ACTIVE) and not self.flags & FLAG_RESIGN


@dataclass(frozen=True)
class SessionKeys:
    """The keys of one watcher↔candidate session: ``welcome`` tags WELCOME, ``state`` seals STATEs,
    ``heard`` tags HEARDs (32 bytes each)."""

    welcome: bytes
    state: bytes
    heard: bytes = bytes(32)


# ----------------------------------------------------------------------------- HELLO / WELCOME


def make_hello(gw_id: bytes) -> tuple[bytes, X25519PrivateKey, bytes]:
    """A HELLO with a fresh ephemeral key and nonce: ``(datagram, ephemeral private, nonce)``."""
    eph = X25519PrivateKey.generate()
    nonce = os.urandom(16)
    return _HELLO.pack(HELLO, gw_id, eph.public_key().public_bytes_raw(), nonce), eph, nonce


def parse_hello(data: bytes) -> Hello:
    """The fields of a HELLO datagram.

    Raises:
        WireError: ``data`` is not a HELLO (wrong type or length).
    """
    if len(data) != _HELLO.size or data[0] != HELLO:
        raise WireError("not a HELLO")
    _t, gid, eph, nonce = _HELLO.unpack(data)
    return Hello(gid, eph, nonce)


def welcome_keys(shared: bytes, gw_id: bytes, candidate_public: bytes, ephemeral: bytes,
                 nonce_w: bytes, nonce_c: bytes) -> SessionKeys:
    """Session keys from DH(candidate static, watcher ephemeral) and everything both sides said.

    HKDF as WireGuard's (HMAC-BLAKE2s, whitepaper §5.4): salt = hash of the transcript, input = the DH.
    """
    salt = crypto.hash_(_LABEL, gw_id, candidate_public, ephemeral, nonce_w, nonce_c)
    welcome, state, heard = crypto.kdf3(salt, shared)
    return SessionKeys(welcome, state, heard)


def make_welcome(session: int, nonce_c: bytes, keys: SessionKeys) -> bytes:
    """The candidate's WELCOME: its session id, its nonce, and an AEAD tag (key ``keys.welcome``) over both."""
    head = struct.pack("<B3xI16s", WELCOME, session, nonce_c)
    return head + crypto.aead_encrypt(keys.welcome, 0, b"", head)


def open_welcome(data: bytes, ephemeral: X25519PrivateKey, candidate_public: bytes, gw_id: bytes,
                 nonce_w: bytes) -> tuple[int, SessionKeys]:
    """The watcher's side: verify a WELCOME against its pending HELLO; ``(session id, keys)``.

    The DH is the watcher's ephemeral × the candidate's static (members have no key of their own).

    Raises:
        WireError: malformed, or the tag does not verify (not the candidate, or an old WELCOME replayed).
    """
    if len(data) != _WELCOME.size or data[0] != WELCOME:
        raise WireError("not a WELCOME")
    _t, session, nonce_c, _tag = _WELCOME.unpack(data)
    try:
        shared = crypto.dh(ephemeral, candidate_public)
    except ValueError as exc:
        raise WireError(str(exc)) from None
    keys = welcome_keys(shared, gw_id, candidate_public, ephemeral.public_key().public_bytes_raw(),
                        nonce_w, nonce_c)
    try:
        crypto.aead_decrypt(keys.welcome, 0, data[_WELCOME.size - 16:], data[:_WELCOME.size - 16])
    except crypto.DecryptError:
        raise WireError("WELCOME does not authenticate") from None
    return session, keys


# ----------------------------------------------------------------------------- STATE


def make_state(session: int, counter: int, keys: SessionKeys, flags: int, term: int) -> bytes:
    """A STATE: flags and term sealed with ChaCha20-Poly1305 under ``keys.state``, nonce = ``counter``."""
    head = _STATE_HEAD.pack(STATE, session, counter)
    return head + crypto.aead_encrypt(keys.state, counter, _STATE_BODY.pack(flags, term), head)


def state_session(data: bytes) -> int:
    """The session id of a STATE datagram (to find its keys).

    Raises:
        WireError: ``data`` is not a STATE (wrong type or length).
    """
    if len(data) != STATE_SIZE or data[0] != STATE:
        raise WireError("not a STATE")
    return _STATE_HEAD.unpack_from(data)[1]


def open_state(data: bytes, keys: SessionKeys) -> State:
    """Authenticate and decrypt a STATE; the caller checks the counter (replay).

    Raises:
        WireError: the AEAD tag does not verify under ``keys``.
    """
    _t, session, counter = _STATE_HEAD.unpack_from(data)
    try:
        body = crypto.aead_decrypt(keys.state, counter, data[_STATE_HEAD.size:], data[:_STATE_HEAD.size])
    except crypto.DecryptError:
        raise WireError("STATE does not authenticate") from None
    flags, term = _STATE_BODY.unpack(body)
    return State(session, counter, flags, term)


# ----------------------------------------------------------------------------- HEARD


def make_heard(session: int, counter: int, keys: SessionKeys) -> bytes:
    """A watcher's HEARD: "I still hear you", tagged under ``keys.heard`` with nonce ``counter``."""
    head = _HEARD_HEAD.pack(HEARD, session, counter)
    return head + crypto.aead_encrypt(keys.heard, counter, b"", head)


def open_heard(data: bytes, keys_of: Callable[[int], SessionKeys | None]) -> tuple[int, int]:
    """Authenticate a HEARD; ``keys_of(session)`` gives that session's keys. ``(session, counter)``.

    Raises:
        WireError: not a HEARD, no such session, or the tag does not verify.
    """
    if len(data) != HEARD_SIZE or data[0] != HEARD:
        raise WireError("not a HEARD")
    _t, session, counter = _HEARD_HEAD.unpack_from(data)
    keys = keys_of(session)
    if keys is None:
        raise WireError("HEARD of no session")
    try:
        crypto.aead_decrypt(keys.heard, counter, data[_HEARD_HEAD.size:], data[:_HEARD_HEAD.size])
    except crypto.DecryptError:
        raise WireError("HEARD does not authenticate") from None
    return session, counter


# ----------------------------------------------------------------------------- CLAIM


def make_claim(gateway: str, node: str, flags: int, term: int) -> bytes:
    """A CLAIM (plain: it travels inside the WireGuard tunnel).

    Raises:
        ValueError: a name longer than 255 bytes in UTF-8.
    """
    g, n = gateway.encode(), node.encode()
    if len(g) > 255 or len(n) > 255:
        raise ValueError("gateway and node names are at most 255 bytes")
    return _CLAIM_HEAD.pack(CLAIM, flags, term) + bytes([len(g)]) + g + bytes([len(n)]) + n


def parse_claim(data: bytes) -> Claim:
    """The fields of a CLAIM datagram.

    Raises:
        WireError: ``data`` is not a well-formed CLAIM (type, lengths, UTF-8, trailing bytes).
    """
    if len(data) < _CLAIM_HEAD.size + 2 or data[0] != CLAIM:
        raise WireError("not a CLAIM")
    _t, flags, term = _CLAIM_HEAD.unpack_from(data)
    pos = _CLAIM_HEAD.size
    names = []
    for _ in range(2):
        if pos >= len(data):
            raise WireError("truncated CLAIM")
        n = data[pos]
        raw = data[pos + 1:pos + 1 + n]
        if len(raw) != n:
            raise WireError("truncated CLAIM")
        try:
            names.append(raw.decode())
        except UnicodeDecodeError:
            raise WireError("CLAIM name is not UTF-8") from None
        pos += 1 + n
    if pos != len(data):
        raise WireError("trailing bytes after CLAIM")
    return Claim(names[0], names[1], flags, term)
