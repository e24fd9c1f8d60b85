"""Cryptographic primitives of WireGuard, on `cryptography`, hashlib and PyNaCl.

Everything here is pure: no sockets, no clocks. Keys are plain ``bytes``; callers
never log them.
"""
from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.exceptions import InvalidTag
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

try:
    # The C function under PyNaCl's binding: the binding's argument checks and error-message
    # formatting cost 4x the encryption itself (2.6 us against 0.6), paid once per cookie reply,
    # so once per initiation of a handshake flood. PyNaCl's own bindings import these names.
    from nacl._sodium import ffi as _sodium_ffi, lib as _sodium_lib
    _xchacha_encrypt = _sodium_lib.crypto_aead_xchacha20poly1305_ietf_encrypt
except (ImportError, AttributeError):  # another PyNaCl layout: the public binding still works
    _xchacha_encrypt = None

__all__ = [
    "InvalidTag", "DecryptError", "hash_", "mac", "hmac_", "kdf1", "kdf2", "kdf3", "dh", "public_key",
    "aead_encrypt", "aead_decrypt", "xaead_encrypt", "xaead_decrypt", "nonce", "constant_time_eq",
]

ZERO32 = bytes(32)
_NONCE_PREFIX = b"\x00\x00\x00\x00"


class DecryptError(Exception):
    """Authentication failed: the message was not made with the key we hold."""


def hash_(*parts: bytes) -> bytes:
    """HASH of the whitepaper (§5.4): BLAKE2s-256 of the concatenated parts, 32 bytes."""
    return hashlib.blake2s(b"".join(parts)).digest()


def mac(key: bytes, data: bytes) -> bytes:
    """Keyed BLAKE2s-128, used for mac1, mac2 and cookies."""
    return hashlib.blake2s(data, digest_size=16, key=key).digest()


def hmac_(key: bytes, data: bytes) -> bytes:
    """HMAC of the whitepaper: HMAC-BLAKE2s-256 (32 bytes)."""
    # The HMAC construction over BLAKE2s (block size 64), not keyed BLAKE2s: the KDF needs it.
    return hmac.new(key, data, hashlib.blake2s).digest()


def kdf1(key: bytes, data: bytes) -> bytes:
    """KDF1 of the whitepaper (§5.4, HKDF over HMAC-BLAKE2s): one 32-byte output."""
    t0 = hmac_(key, data)
    return hmac_(t0, b"\x01")


def kdf2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    """KDF2 of the whitepaper: two 32-byte outputs."""
    t0 = hmac_(key, data)
    t1 = hmac_(t0, b"\x01")
    return t1, hmac_(t0, t1 + b"\x02")


def kdf3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    """KDF3 of the whitepaper: three 32-byte outputs."""
    t0 = hmac_(key, data)
    t1 = hmac_(t0, b"\x01")
    t2 = hmac_(t0, t1 + b"\x02")
    return t1, t2, hmac_(t0, t2 + b"\x03")


def dh(private: bytes | X25519PrivateKey, public: bytes) -> bytes:
    """X25519 (DH of the whitepaper): the 32-byte shared secret of `private` (32 bytes or a key
    object) and `public` (32 bytes).

    Raises:
        ValueError: a low-order peer key (an all-zero result must be rejected, §5.4).
    """
    priv = private if isinstance(private, X25519PrivateKey) else X25519PrivateKey.from_private_bytes(private)
    try:
        shared = priv.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:  # OpenSSL refuses low-order points itself
        raise ValueError("low-order public key") from exc
    if hmac.compare_digest(shared, ZERO32):
        raise ValueError("low-order public key")
    return shared


def public_key(private: bytes) -> bytes:
    """The X25519 public key (32 bytes) of a 32-byte private key."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def nonce(counter: int) -> bytes:
    """The 12-byte ChaCha20-Poly1305 nonce of a message counter: 4 zero bytes, then the counter little-endian."""
    return _NONCE_PREFIX + struct.pack("<Q", counter)


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, ad: bytes) -> bytes:
    """AEAD of the whitepaper: ChaCha20-Poly1305, ciphertext + 16-byte tag."""
    return ChaCha20Poly1305(key).encrypt(nonce(counter), plaintext, ad)


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, ad: bytes) -> bytes:
    """Open an `aead_encrypt` ciphertext.

    Raises:
        DecryptError: authentication failed.
    """
    try:
        return ChaCha20Poly1305(key).decrypt(nonce(counter), ciphertext, ad)
    except InvalidTag as exc:
        raise DecryptError("authentication failed") from exc


def xaead_encrypt(key: bytes, nonce24: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """XAEAD of the whitepaper (cookie replies, §5.4.7): XChaCha20-Poly1305 with a 24-byte nonce;
    ciphertext + 16-byte tag.

    Raises:
        ValueError: `key` is not 32 bytes or `nonce24` not 24.
    """
    # cryptography has no XChaCha20-Poly1305; libsodium (PyNaCl) does.
    if _xchacha_encrypt is None:
        return crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce24, key)
    if len(key) != 32 or len(nonce24) != 24:
        raise ValueError("XChaCha20-Poly1305 takes a 32-byte key and a 24-byte nonce")  # C reads that many
    out = _sodium_ffi.new("unsigned char[]", len(plaintext) + 16)
    _xchacha_encrypt(out, _sodium_ffi.NULL, plaintext, len(plaintext), ad, len(ad), _sodium_ffi.NULL, nonce24, key)
    return _sodium_ffi.buffer(out)[:]


def xaead_decrypt(key: bytes, nonce24: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    """Open an `xaead_encrypt` ciphertext.

    Raises:
        DecryptError: authentication failed.
    """
    try:
        return crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, ad, nonce24, key)
    except CryptoError as exc:
        raise DecryptError("authentication failed") from exc


def constant_time_eq(a: bytes, b: bytes) -> bool:
    """Compare secrets (MACs) in time independent of where they differ (hmac.compare_digest)."""
    return hmac.compare_digest(a, b)
