"""Key generation and the base64 / hex forms that `wg` and the UAPI use."""
from __future__ import annotations

import base64
import binascii
import os

from . import crypto

KEY_SIZE = 32


def clamp(key: bytes) -> bytes:
    """Clamp 32 bytes into a Curve25519 private key (RFC 7748 §5), as `wg` does."""
    k = bytearray(key)
    k[0] &= 248
    k[31] = (k[31] & 127) | 64
    return bytes(k)


def generate_private() -> bytes:
    """A clamped Curve25519 private key, like `wg genkey`."""
    return clamp(os.urandom(KEY_SIZE))


def generate_psk() -> bytes:
    """32 random bytes for a preshared key, like `wg genpsk`."""
    return os.urandom(KEY_SIZE)


def public_from_private(private: bytes) -> bytes:
    """The public key (32 bytes) of a private key (32 bytes), like `wg pubkey`."""
    return crypto.public_key(private)


def b64encode(key: bytes) -> str:
    """The base64 form `wg` prints (44 characters)."""
    return base64.b64encode(key).decode("ascii")


def b64decode(text: str) -> bytes:
    """Parse a base64 key as `wg` prints it into 32 bytes.

    Raises:
        ValueError: a plain one-line reason (length, alphabet, decoded size); the key is never echoed.
    """
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
