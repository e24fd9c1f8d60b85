"""Hand-crafted WireGuard datagrams for robustness tests, written independently of ravenvpn's code.

Why: to show a daemon *drops* malformed or unauthenticated input we must be able to produce input that is
wrong in exactly one way (size, mac1, unknown key, replayed timestamp...). A crafted *valid* handshake
initiation is the positive control: if the daemon answers that one, silence on the broken variants means
they were dropped, not that our sender is broken. Implemented from the protocol description (Noise
IKpsk2, BLAKE2s, HMAC-BLAKE2s KDF, ChaCha20-Poly1305) with hashlib and cryptography only.

:func:`udp_exchange` sends datagrams from inside a node with a plain UDP socket and collects replies.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import struct
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

if TYPE_CHECKING:
    from tools.node import Node

CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"

MSG_INITIATION, MSG_RESPONSE, MSG_COOKIE, MSG_TRANSPORT = 1, 2, 3, 4
SIZE_INITIATION, SIZE_RESPONSE, SIZE_COOKIE, SIZE_TRANSPORT_MIN = 148, 92, 64, 32


def b64(key: str) -> bytes:
    raw = base64.b64decode(key)
    if len(raw) != 32:
        raise ValueError("WireGuard keys are 32 bytes")
    return raw


def blake2s(*parts: bytes) -> bytes:
    return hashlib.blake2s(b"".join(parts)).digest()


def mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, digest_size=16, key=key).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2s).digest()


def kdf(chaining_key: bytes, data: bytes, n: int) -> list[bytes]:
    """HKDF with HMAC-BLAKE2s, returning ``n`` 32-byte outputs."""
    prk = _hmac(chaining_key, data)
    out, prev = [], b""
    for i in range(1, n + 1):
        prev = _hmac(prk, prev + bytes([i]))
        out.append(prev)
    return out


def aead(key: bytes, counter: int, plaintext: bytes, ad: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(b"\0" * 4 + struct.pack("<Q", counter), plaintext, ad)


def dh(private: bytes, public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(public))


def public_of(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def tai64n(t: float | None = None) -> bytes:
    t = time.time() if t is None else t
    return struct.pack(">QI", 2**62 + 10 + int(t), int((t % 1) * 1e9))


def mac1_key(receiver_public: bytes) -> bytes:
    return blake2s(LABEL_MAC1, receiver_public)


@dataclasses.dataclass
class Initiation:
    """A crafted handshake initiation plus the state needed to check the response."""

    message: bytes
    sender_index: int
    chaining_key: bytes
    hash: bytes
    ephemeral_private: bytes


def initiation(
    initiator_private: bytes,
    responder_public: bytes,
    sender_index: int,
    timestamp: bytes | None = None,
    ephemeral_private: bytes | None = None,
) -> Initiation:
    """Build a valid 148-byte handshake initiation (mac2 zero) as the protocol specifies."""
    eph = ephemeral_private or os.urandom(32)
    ck = blake2s(CONSTRUCTION)
    h = blake2s(ck, IDENTIFIER)
    h = blake2s(h, responder_public)
    e_pub = public_of(eph)
    (ck,) = kdf(ck, e_pub, 1)
    h = blake2s(h, e_pub)
    ck, k = kdf(ck, dh(eph, responder_public), 2)
    enc_static = aead(k, 0, public_of(initiator_private), h)
    h = blake2s(h, enc_static)
    ck, k = kdf(ck, dh(initiator_private, responder_public), 2)
    enc_ts = aead(k, 0, timestamp or tai64n(), h)
    h = blake2s(h, enc_ts)
    body = struct.pack("<II", MSG_INITIATION, sender_index) + e_pub + enc_static + enc_ts
    msg = body + mac(mac1_key(responder_public), body) + b"\0" * 16
    assert len(msg) == SIZE_INITIATION
    return Initiation(msg, sender_index, ck, h, eph)


def is_valid_response(datagram: bytes, init: Initiation, initiator_public: bytes) -> bool:
    """A 92-byte type-2 message addressed to our sender index with a correct mac1."""
    if len(datagram) != SIZE_RESPONSE or datagram[:4] != struct.pack("<I", MSG_RESPONSE):
        return False
    (receiver,) = struct.unpack_from("<I", datagram, 8)
    return receiver == init.sender_index and datagram[60:76] == mac(mac1_key(initiator_public), datagram[:60])


def header(msg_type: int) -> bytes:
    return struct.pack("<I", msg_type)


def malformed_datagrams(responder_public: bytes, known_receiver_index: int | None = None) -> dict[str, bytes]:
    """Datagrams a daemon must silently drop, by name: wrong sizes per type, bad mac1, unknown indices,
    unknown types, non-zero reserved bytes and random garbage."""
    r = os.urandom
    bad: dict[str, bytes] = {
        "empty": b"",
        "one-byte": b"\x01",
        "type-only": header(MSG_INITIATION),
        "initiation-short": header(1) + r(SIZE_INITIATION - 5),
        "initiation-long": header(1) + r(SIZE_INITIATION - 3),
        "initiation-bad-mac1": header(1) + r(SIZE_INITIATION - 4),
        "response-short": header(2) + r(SIZE_RESPONSE - 5),
        "response-long": header(2) + r(SIZE_RESPONSE - 3),
        "response-unknown-receiver": header(2) + r(SIZE_RESPONSE - 4),
        "cookie-short": header(3) + r(SIZE_COOKIE - 5),
        "cookie-long": header(3) + r(SIZE_COOKIE - 3),
        "cookie-unknown-receiver": header(3) + r(SIZE_COOKIE - 4),
        "transport-short": header(4) + r(SIZE_TRANSPORT_MIN - 5),
        "transport-unknown-receiver": header(4) + r(4) + struct.pack("<Q", 0) + r(16),
        "transport-unknown-receiver-data": header(4) + r(4) + struct.pack("<Q", 7) + r(96),
        "type-0": header(0) + r(SIZE_INITIATION - 4),
        "type-5": header(5) + r(60),
        "type-255": b"\xff" + r(91),
        "reserved-nonzero": b"\x01\x01\x00\x00" + r(SIZE_INITIATION - 4),
        "garbage-100": r(100),
        "garbage-1400": r(1400),
    }
    if known_receiver_index is not None:
        idx = struct.pack("<I", known_receiver_index)
        bad["transport-known-receiver-bad-tag"] = header(4) + idx + struct.pack("<Q", 1 << 40) + r(64)
        bad["transport-known-receiver-keepalive-bad-tag"] = header(4) + idx + struct.pack("<Q", (1 << 40) + 1) + r(16)
        bad["cookie-known-receiver-bad"] = header(3) + idx + r(SIZE_COOKIE - 8)
    return bad


# -- sending from inside a node -------------------------------------------------------------------

#: Run by path inside the node (-P: without its directory on sys.path), so it needs nothing importable there.
_EXCHANGE_SCRIPT = Path(__file__).with_name("udp_exchange.py")


@dataclasses.dataclass
class Exchange:
    local_addr: str
    local_port: int
    replies: list[tuple[bytes, str, int]]


def udp_exchange(
    node: "Node",
    dest: str,
    port: int,
    datagrams: list[bytes],
    listen: float = 1.0,
    gap: float = 0.005,
    source: str | None = None,
    until_replies: int = 0,
) -> Exchange:
    """Send ``datagrams`` from one fresh UDP socket in ``node`` to ``dest:port``; collect replies for
    ``listen`` seconds afterwards (or until ``until_replies`` arrived, if set). The socket's local port is
    returned so tests can check that a daemon did *not* adopt it as a peer endpoint."""
    req = {
        "dest": dest,
        "port": port,
        "datagrams": [d.hex() for d in datagrams],
        "listen": listen,
        "gap": gap,
        "source": source,
        "until": until_replies,
    }
    proc = node.run(sys.executable, "-P", str(_EXCHANGE_SCRIPT), input=json.dumps(req), timeout=listen + 30)
    out = json.loads(proc.stdout)
    return Exchange(
        out["local"][0],
        int(out["local"][1]),
        [(bytes.fromhex(r["data"]), r["addr"], int(r["port"])) for r in out["replies"]],
    )


# -- reading captures -----------------------------------------------------------------------------

#: ICMPv6 types that are link housekeeping (MLD, router/neighbour discovery), not traffic
_ICMPV6_HOUSEKEEPING = {130, 131, 132, 133, 134, 135, 136, 143}


@dataclasses.dataclass
class UdpDatagram:
    """A UDP datagram seen in a capture (underlay), with its payload."""

    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes
    time: float

    @property
    def msg_type(self) -> int | None:
        return self.payload[0] if self.payload else None


def split_capture(packets: object) -> tuple[list[UdpDatagram], list[str]]:
    """Split captured underlay packets into UDP datagrams and everything else that is *not* link
    housekeeping (ARP, ICMPv6 ND/MLD). The second list should be empty on a WireGuard underlay."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP

    udp: list[UdpDatagram] = []
    other: list[str] = []
    for pkt in packets:  # type: ignore[attr-defined]
        if pkt.haslayer(ARP):
            continue
        if pkt.haslayer(UDP) and (pkt.haslayer(IP) or pkt.haslayer(IPv6)):
            ip = pkt[IP] if pkt.haslayer(IP) else pkt[IPv6]
            u = pkt[UDP]
            udp.append(UdpDatagram(ip.src, int(u.sport), ip.dst, int(u.dport), bytes(u.payload), float(pkt.time)))
            continue
        if pkt.haslayer(IPv6):
            layer = pkt[IPv6].payload
            while layer is not None and not type(layer).__name__.startswith("ICMPv6") and layer.payload:
                layer = layer.payload
            if type(layer).__name__.startswith("ICMPv6") and getattr(layer, "type", None) in _ICMPV6_HOUSEKEEPING:
                continue
        other.append(pkt.summary())
    return udp, other


def wire_format_problem(payload: bytes, mtu: int | None = None) -> str | None:
    """Why ``payload`` is not a well-formed WireGuard message (type 1-4, zero reserved bytes, size), or None.

    Transport plaintext is zero-padded to a multiple of 16 but never past the interface MTU, so a length
    that is not 32 + 16k is only right when the plaintext is exactly ``mtu`` bytes."""
    if len(payload) < 4:
        return f"{len(payload)}-byte datagram"
    t = payload[0]
    if payload[1:4] != b"\0\0\0":
        return f"reserved bytes {payload[1:4].hex()} not zero"
    sizes = {MSG_INITIATION: SIZE_INITIATION, MSG_RESPONSE: SIZE_RESPONSE, MSG_COOKIE: SIZE_COOKIE}
    if t in sizes:
        return None if len(payload) == sizes[t] else f"type {t} with {len(payload)} bytes (want {sizes[t]})"
    if t == MSG_TRANSPORT:
        plain = len(payload) - SIZE_TRANSPORT_MIN
        if plain < 0 or (plain % 16 and plain != mtu):
            return f"transport message of {len(payload)} bytes (want 32 + 16k, or 32 + MTU)"
        return None
    return f"unknown message type {t}"
