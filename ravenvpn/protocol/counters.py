"""Named counters of a Tunnel: why packets were dropped, and a few events (boringtun's errors.rs).

`Tunnel.stats` maps `Counter` members to counts. `Counter` is a StrEnum, so a member equals its
string value and `stats["rx_replay"]` finds `stats[Counter.RX_REPLAY]` (older callers used strings).
"""
from __future__ import annotations

import enum

__all__ = ["Counter"]


class Counter(enum.StrEnum):
    """One counter of `Tunnel.stats`. RX_* and TX_* (except TX_INITIATION, TX_COOKIE_REPLY) count drops."""

    #: A packet from the TUN that is not IPv4/IPv6 (or shorter than its header): dropped.
    TX_NOT_IP = "tx_not_ip"
    #: A packet from the TUN whose destination no peer's allowed IPs cover: dropped.
    TX_NO_PEER = "tx_no_peer"
    #: A datagram that is not a well-framed WireGuard message: dropped.
    RX_MALFORMED = "rx_malformed"
    #: A transport message for an index we never gave out (or freed): dropped.
    RX_UNKNOWN_INDEX = "rx_unknown_index"
    #: A transport message for a session older than REJECT_AFTER_TIME or erased: dropped.
    RX_EXPIRED_SESSION = "rx_expired_session"
    #: A transport message that failed authentication (wrong key, tampered): dropped.
    RX_BAD_AUTH = "rx_bad_auth"
    #: An authenticated transport message whose counter was seen or is too old (§5.4.6): dropped.
    RX_REPLAY = "rx_replay"
    #: Decrypted data that is not a complete IPv4/IPv6 packet: dropped.
    RX_NOT_IP = "rx_not_ip"
    #: Decrypted data whose source address the sending peer's allowed IPs do not cover: dropped.
    RX_BAD_SOURCE = "rx_bad_source"
    #: A handshake message while no private key is configured: dropped.
    RX_NO_PRIVATE_KEY = "rx_no_private_key"
    #: A handshake message with a wrong mac1 (§5.4.4): dropped before any DH.
    RX_BAD_MAC1 = "rx_bad_mac1"
    #: A handshake message that failed authentication or carries an unusable key: dropped.
    RX_BAD_HANDSHAKE = "rx_bad_handshake"
    #: An authenticated initiation from a key that is not a configured peer: held briefly, dropped.
    RX_UNKNOWN_PEER = "rx_unknown_peer"
    #: An initiation whose TAI64N timestamp is not newer than the last accepted (§5.1): dropped.
    RX_HANDSHAKE_REPLAY = "rx_handshake_replay"
    #: A second initiation from a peer within HANDSHAKE_INITIATION_RATE: dropped.
    RX_HANDSHAKE_FLOOD = "rx_handshake_flood"
    #: A handshake under load over its source's rate limit: dropped.
    RX_HANDSHAKE_RATELIMITED = "rx_handshake_ratelimited"
    #: A cookie reply that does not answer our last message: dropped.
    RX_BAD_COOKIE = "rx_bad_cookie"
    #: Event: a handshake initiation was sent.
    TX_INITIATION = "tx_initiation"
    #: Event: under load, a handshake without valid mac2 was answered with a cookie reply (§5.4.7).
    TX_COOKIE_REPLY = "tx_cookie_reply"
    #: Event: a decrypted packet was forwarded to another peer (relay mode).
    RELAYED = "relayed"
