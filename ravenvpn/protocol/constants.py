"""Protocol constants of WireGuard (whitepaper section 6 and wireguard-go's constants.go)."""
from __future__ import annotations

CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"

MSG_INITIATION = 1
MSG_RESPONSE = 2
MSG_COOKIE_REPLY = 3
MSG_TRANSPORT = 4

INITIATION_SIZE = 148
RESPONSE_SIZE = 92
COOKIE_REPLY_SIZE = 64
TRANSPORT_MIN_SIZE = 32  # header + Poly1305 tag: a keepalive

REKEY_AFTER_MESSAGES = 1 << 60
REJECT_AFTER_MESSAGES = (1 << 64) - (1 << 13) - 1
REKEY_AFTER_TIME = 120.0
REJECT_AFTER_TIME = 180.0
REKEY_ATTEMPT_TIME = 90.0
REKEY_TIMEOUT = 5.0
REKEY_TIMEOUT_JITTER_MAX = 0.334
KEEPALIVE_TIMEOUT = 10.0
COOKIE_REFRESH_TIME = 120.0
HANDSHAKE_INITIATION_RATE = 0.020  # responders accept at most one initiation per peer per 20 ms
# An initiator refreshes its key on receive when it is this old (avoids both sides rekeying at once).
REKEY_ON_RECEIVE_AGE = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
MAX_HANDSHAKE_ATTEMPTS = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)  # 18 retries, then give up
ZERO_KEYS_AFTER = REJECT_AFTER_TIME * 3

REPLAY_WINDOW = 8128  # as the kernel and wireguard-go: 8192 bits ring minus one word
MAX_STAGED_PACKETS = 128  # per peer, while waiting for a handshake
