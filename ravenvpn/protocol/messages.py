"""Wire layout of the four WireGuard messages (all integers little-endian).

Parsing only checks framing (type, reserved bytes, size); authentication is the
caller's job, done before anything a message says is believed.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .constants import (
    COOKIE_REPLY_SIZE, INITIATION_SIZE, MSG_COOKIE_REPLY, MSG_INITIATION, MSG_RESPONSE, MSG_TRANSPORT,
    RESPONSE_SIZE, TRANSPORT_MIN_SIZE,
)

_U32 = struct.Struct("<I")


class MalformedMessage(ValueError):
    """The datagram is not a well-framed WireGuard message."""


@dataclass(frozen=True, slots=True)
class Initiation:
    """A parsed handshake initiation (§5.4.2): indices are ints, the rest raw bytes."""

    sender: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes
    mac2: bytes


@dataclass(frozen=True, slots=True)
class Response:
    """A parsed handshake response (§5.4.3)."""

    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes
    mac2: bytes


@dataclass(frozen=True, slots=True)
class CookieReply:
    """A parsed cookie reply (§5.4.7): a 24-byte nonce and the 32-byte encrypted cookie."""

    receiver: int
    nonce: bytes
    encrypted_cookie: bytes


_EXPECTED_SIZE = {MSG_INITIATION: INITIATION_SIZE, MSG_RESPONSE: RESPONSE_SIZE, MSG_COOKIE_REPLY: COOKIE_REPLY_SIZE}


def message_type(data: bytes) -> int:
    """The type (1-4) of a well-framed message.

    Raises:
        MalformedMessage: too short, non-zero reserved bytes, unknown type, or the wrong size.
    """
    if len(data) < 4:
        raise MalformedMessage("shorter than a message header")
    mtype = data[0]
    if data[1] or data[2] or data[3]:
        raise MalformedMessage("reserved header bytes are not zero")
    if mtype == MSG_TRANSPORT:
        if len(data) < TRANSPORT_MIN_SIZE:
            raise MalformedMessage("transport message shorter than 32 bytes")
        return mtype
    expected = _EXPECTED_SIZE.get(mtype)
    if expected is None:
        raise MalformedMessage(f"unknown message type {mtype}")
    if len(data) != expected:
        raise MalformedMessage(f"type {mtype} message of {len(data)} bytes, expected {expected}")
    return mtype


def pack_initiation(sender: int, ephemeral: bytes, encrypted_static: bytes, encrypted_timestamp: bytes) -> bytearray:
    """Initiation without MACs (32 zero bytes at the end, filled in by the cookie layer)."""
    msg = bytearray(INITIATION_SIZE)
    msg[0] = MSG_INITIATION
    _U32.pack_into(msg, 4, sender)
    msg[8:40] = ephemeral
    msg[40:88] = encrypted_static
    msg[88:116] = encrypted_timestamp
    return msg


def parse_initiation(data: bytes) -> Initiation:
    """Split a 148-byte initiation (framing checked by `message_type`) into its fields."""
    return Initiation(_U32.unpack_from(data, 4)[0], data[8:40], data[40:88], data[88:116], data[116:132], data[132:148])


def pack_response(sender: int, receiver: int, ephemeral: bytes, encrypted_nothing: bytes) -> bytearray:
    """Response without MACs (92 bytes, the last 32 zero)."""
    msg = bytearray(RESPONSE_SIZE)
    msg[0] = MSG_RESPONSE
    _U32.pack_into(msg, 4, sender)
    _U32.pack_into(msg, 8, receiver)
    msg[12:44] = ephemeral
    msg[44:60] = encrypted_nothing
    return msg


def parse_response(data: bytes) -> Response:
    """Split a 92-byte response into its fields."""
    sender, receiver = struct.unpack_from("<II", data, 4)
    return Response(sender, receiver, data[12:44], data[44:60], data[60:76], data[76:92])


def pack_cookie_reply(receiver: int, nonce: bytes, encrypted_cookie: bytes) -> bytes:
    """A 64-byte cookie reply."""
    return struct.pack("<II", MSG_COOKIE_REPLY, receiver) + nonce + encrypted_cookie


def parse_cookie_reply(data: bytes) -> CookieReply:
    """Split a 64-byte cookie reply into its fields."""
    return CookieReply(_U32.unpack_from(data, 4)[0], data[8:32], data[32:64])


def mac_offsets(mtype: int) -> tuple[int, int]:
    """Where mac1 and mac2 start in a handshake message of this type."""
    size = INITIATION_SIZE if mtype == MSG_INITIATION else RESPONSE_SIZE
    return size - 32, size - 16
