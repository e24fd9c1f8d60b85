"""Key generation and the base64 / hex forms that `wg` and the UAPI use."""
from __future__ import annotations

import base64
import binascii
import os

from . import crypto

KEY_SIZE = 32


def clamp(key: bytes) -> bytes:
    k = bytearray(key)
    k[0] &= 248
    k[31] = (k[31] & 127) | 64
    return bytes(k)


def generate_private() -> bytes:
    """A clamped Curve25519 private key, like `wg genkey`."""
    return clamp(os.urandom(KEY_SIZE))


def generate_psk() -> bytes:
    return os.urandom(KEY_SIZE)


def public_from_private(private: bytes) -> bytes:
    return crypto.public_key(private)


def b64encode(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def b64decode(text: str) -> bytes:
    """Parse a base64 key as `wg` prints it; ValueError with a plain reason otherwise."""
    text = text.strip()
    if len(text) != 44 or not text.endswith("="):
        raise ValueError("key must be 44 base64 characters ending in '='")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError("key is not valid base64") from exc
    if len(raw) != KEY_SIZE:
        raise ValueError("key must decode to 32 bytes")
    return raw
