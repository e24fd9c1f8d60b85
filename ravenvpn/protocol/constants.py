"""Protocol constants of WireGuard (whitepaper §5.4 and §6.1, wireguard-go's constants.go).

Specification constants first, then this implementation's own. Every duration is in seconds
(floats, on the caller's monotonic clock); the timers of a `Tunnel` use these multiplied by its
timer scale (`timers.Timers.scaled`), which is 1.0 except in tests.
"""
from __future__ import annotations

# --- the Noise construction (whitepaper §5.4) -------------------------------------------------
#: Noise protocol name, hashed into the initial chaining key.
CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
#: WireGuard's identifier, mixed into the initial hash.
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
#: Label of the mac1 key (HASH(LABEL_MAC1 || responder public key)), §5.4.4.
LABEL_MAC1 = b"mac1----"
#: Label of the cookie key, §5.4.7.
LABEL_COOKIE = b"cookie--"

# --- message types and sizes in bytes (§5.4) ---------------------------------------------------
MSG_INITIATION = 1
MSG_RESPONSE = 2
MSG_COOKIE_REPLY = 3
MSG_TRANSPORT = 4

#: Bytes of a handshake initiation.
INITIATION_SIZE = 148
#: Bytes of a handshake response.
RESPONSE_SIZE = 92
#: Bytes of a cookie reply.
COOKIE_REPLY_SIZE = 64
#: Bytes of the smallest transport message: 16-byte header + 16-byte Poly1305 tag (a keepalive).
TRANSPORT_MIN_SIZE = 32

# --- limits and timers (whitepaper §6.1; seconds unless the name says messages) ------------------
#: Messages after which a session should be renewed.
REKEY_AFTER_MESSAGES = 1 << 60
#: Messages after which a session must not be used any more.
REJECT_AFTER_MESSAGES = (1 << 64) - (1 << 13) - 1
#: Seconds: an initiator renews a session this old when it sends (§6.2).
REKEY_AFTER_TIME = 120.0
#: Seconds: a session this old is neither used to send nor to receive (§6.2).
REJECT_AFTER_TIME = 180.0
#: Seconds of retrying a handshake before giving up (§6.4).
REKEY_ATTEMPT_TIME = 90.0
#: Seconds between handshake initiation retries (§6.4), plus jitter.
REKEY_TIMEOUT = 5.0
#: Seconds: retries are delayed by a random 0..this much more (wireguard-go), so peers that lost
#: each other do not retry in lockstep.
REKEY_TIMEOUT_JITTER_MAX = 0.334
#: Seconds after received data with nothing to send back before a keepalive goes out (§6.5).
KEEPALIVE_TIMEOUT = 10.0
#: Seconds a cookie (and the responder's cookie secret) stays valid (§5.4.7).
COOKIE_REFRESH_TIME = 120.0
#: Seconds: a responder accepts at most one initiation per peer in this time (wireguard-go).
HANDSHAKE_INITIATION_RATE = 0.020
#: Seconds: an initiator renews a session this old when it *receives* on it, so that it, not the
#: responder, starts the rekey (§6.2: REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT).
REKEY_ON_RECEIVE_AGE = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
#: Handshake retries before giving up: REKEY_ATTEMPT_TIME / REKEY_TIMEOUT = 18.
MAX_HANDSHAKE_ATTEMPTS = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)
#: Seconds after the last new session before all key material is erased (§6.3: 3 x REJECT_AFTER_TIME).
ZERO_KEYS_AFTER = REJECT_AFTER_TIME * 3

# --- implementation constants ------------------------------------------------------------------
#: Counters a received message may lag behind the greatest seen and still be accepted once, as the
#: kernel and wireguard-go (an 8192-bit ring minus one 64-bit word), §5.4.6.
REPLAY_WINDOW = 8128
#: Packets kept per peer while waiting for a handshake to complete (the oldest are dropped).
MAX_STAGED_PACKETS = 128
