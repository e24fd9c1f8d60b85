"""The rendezvous/probe messages between ravenvpn gateways, and their authentication.

They travel as *inner* packets: UDP between the gateways' control addresses (169.254.A.B, derived
from each gateway's public key, :func:`~ravenvpn.raven.plan.direct.control_address`) on port
:data:`~ravenvpn.raven.plan.direct.CONTROL_PORT`, inside the WireGuard tunnels. The wire format of
WireGuard is untouched: a plain WireGuard peer sees ordinary transport messages (and never gets one of
these, as no route leads to it). The tunnel already authenticates the sending peer (cryptokey
routing: a control address is in exactly one peer's allowed IPs); each message is authenticated again,
bound to both gateways' keys, and numbered against replay.

Message (all integers big-endian)::

    0   4  magic "RVZ1" (format version 1)
    4   1  type: 1 HELLO (edge -> relay), 2 INTRO (relay -> edge), 3 PROBE (edge <-> edge, direct path)
    5   1  flags (0)
    6   2  body length N
    8  32  sender's WireGuard public key
   40   8  counter: strictly increasing per sender (it starts at the sender's wall clock in ns)
   48   N  body: UTF-8 JSON object (fields per type below)
 48+N  16  tag: keyed BLAKE2s-128 over bytes 0..48+N, key = pair_key(sender, receiver)

    pair_key = BLAKE2s-256(key = X25519(own private, other public), data = "ravenvpn rendezvous v1")

Only the two gateways of a pair can compute the tag. A receiver accepts a message only when the tag
verifies (constant-time compare), the sender key is one it expects, the packet came from the
sender's control address, and the counter is above the last one accepted from that sender.

Bodies:

- HELLO ``{"want": [key...], "state": {key: state}}``: the edge's pairs that are ready to punch now
  (base64 keys of the other edges), and every pair's state (for the relay's log).
- INTRO ``{"peer": key, "endpoint": "ip:port", "round": n, "start": t, "you": "ip:port"}``: the other
  edge's public endpoint as the relay observed it (the source of its latest authenticated packets);
  ``start`` is the wall-clock time (seconds since the epoch, float) at which both edges begin round
  ``n``, or null for an endpoint refresh; ``you`` (added with the LAN attempt, still format 1: a
  receiver that does not know it ignores it; absent or null when the relay has not seen the receiver)
  is the *receiver's own* public endpoint as the relay observed it. Both edges of a round thus see the
  same two endpoints; when their IPs are equal the round begins with an attempt on the private
  endpoints (see :mod:`.punch`).
- PROBE ``{"seq": n, "ack": m, "heard": s}``: sent every 0.2 s over the direct peer while trying
  the LAN, while punching and while direct; ``ack`` is the last seq heard from the other edge
  (-1: none), ``heard`` the seconds since then.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
import time
from dataclasses import dataclass
from typing import Any

from ...protocol.crypto import dh

__all__ = ["HELLO", "INTRO", "PROBE", "Message", "MessageError", "pair_key", "encode", "decode",
           "ReplayGuard", "Counter", "b64"]

MAGIC = b"RVZ1"
HELLO, INTRO, PROBE = 1, 2, 3
_TYPES = {HELLO: "hello", INTRO: "intro", PROBE: "probe"}
_HEADER = struct.Struct(">4sBBH32sQ")
TAG_SIZE = 16
MAX_BODY = 4096
_LABEL = b"ravenvpn rendezvous v1"


class MessageError(ValueError):
    """A datagram that is not an acceptable rendezvous message; the text names why (one line)."""


@dataclass(frozen=True)
class Message:
    """A decoded, authenticated message: ``kind`` (HELLO/INTRO/PROBE), the sender's 32-byte key,
    its counter and the JSON body."""

    kind: int
    sender: bytes
    counter: int
    body: dict[str, Any]


def b64(key: bytes) -> str:
    """A key as ``wg`` prints it."""
    return base64.b64encode(key).decode()


def pair_key(private_key: bytes, other_public: bytes) -> bytes:
    """The 32-byte MAC key two gateways share: BLAKE2s of their X25519 shared secret.

    Raises:
        ValueError: the keys have the wrong size or the shared secret is all zeros (a low-order key).
    """
    shared = dh(private_key, other_public)
    return hashlib.blake2s(_LABEL, key=shared).digest()


def encode(kind: int, sender: bytes, counter: int, body: dict[str, Any], key: bytes) -> bytes:
    """The datagram for one message, tagged with ``key`` (:func:`pair_key`).

    Raises:
        ValueError: unknown ``kind`` or a body larger than 4096 bytes.
    """
    if kind not in _TYPES:
        raise ValueError(f"unknown message type {kind}")
    raw = json.dumps(body, separators=(",", ":")).encode()
    if len(raw) > MAX_BODY:
        raise ValueError(f"rendezvous body of {len(raw)} bytes is over {MAX_BODY}")
    data = _HEADER.pack(MAGIC, kind, 0, len(raw), sender, counter) + raw
    return data + hashlib.blake2s(data, digest_size=TAG_SIZE, key=key).digest()


def peek_sender(data: bytes) -> bytes:
    """The claimed sender key of a datagram (not yet authenticated: only to pick the pair key).

    Raises:
        MessageError: too short or not this format.
    """
    if len(data) < _HEADER.size + TAG_SIZE or data[:4] != MAGIC:
        raise MessageError("not a rendezvous message (bad magic or too short)")
    return data[8:40]


def decode(data: bytes, key: bytes) -> Message:
    """Authenticate and parse a datagram with the pair key of its claimed sender.

    Raises:
        MessageError: malformed, unknown type, bad tag, or a body that is not a JSON object.
    """
    peek_sender(data)
    magic, kind, _flags, length, sender, counter = _HEADER.unpack_from(data)
    if len(data) != _HEADER.size + length + TAG_SIZE:
        raise MessageError(f"length {len(data)} does not match the body length {length}")
    tag = hashlib.blake2s(data[:-TAG_SIZE], digest_size=TAG_SIZE, key=key).digest()
    if not hmac.compare_digest(tag, data[-TAG_SIZE:]):
        raise MessageError("bad tag")
    if kind not in _TYPES:
        raise MessageError(f"unknown message type {kind}")
    try:
        body = json.loads(data[_HEADER.size:_HEADER.size + length])
    except ValueError:
        raise MessageError("body is not JSON") from None
    if not isinstance(body, dict):
        raise MessageError("body is not a JSON object")
    return Message(kind, sender, counter, body)


class Counter:
    """A sender's message counter: starts at the wall clock in nanoseconds, so a restarted gateway
    continues above its last value (unless its clock went back); then +1 per message. Not thread-safe."""

    def __init__(self) -> None:
        self._next = time.time_ns()

    def next(self) -> int:
        """The next counter value."""
        value = self._next
        self._next += 1
        return value


class ReplayGuard:
    """The last counter accepted per sender key; accepts only strictly higher ones. Not thread-safe."""

    def __init__(self) -> None:
        self._last: dict[bytes, int] = {}

    def accept(self, sender: bytes, counter: int) -> bool:
        """True (and remember it) when ``counter`` is above the last accepted from ``sender``."""
        if counter <= self._last.get(sender, -1):
            return False
        self._last[sender] = counter
        return True
