"""A transport session: the pair of keys one handshake produced, with its counters (whitepaper §5.4.5)."""
from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .constants import REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME
from .replay import ReplayWindow


class Keypair:
    """One session: send and receive ciphers, the send counter and the replay window.

    Cipher objects are built once per session, not per packet. `created` is monotonic seconds;
    `local_index`/`remote_index` are the 32-bit indices each side put in the handshake; `peer`
    is the owning Peer. `zero()` erases the keys. Not thread-safe (the Tunnel's).
    """

    __slots__ = ("send", "receive", "send_counter", "replay", "created", "is_initiator",
                 "local_index", "remote_index", "peer")

    def __init__(self, send_key: bytes, receive_key: bytes, *, is_initiator: bool, local_index: int,
                 remote_index: int, created: float, peer: object) -> None:
        self.send: ChaCha20Poly1305 | None = ChaCha20Poly1305(send_key)
        self.receive: ChaCha20Poly1305 | None = ChaCha20Poly1305(receive_key)
        self.send_counter = 0
        self.replay = ReplayWindow()
        self.created = created
        self.is_initiator = is_initiator
        self.local_index = local_index
        self.remote_index = remote_index
        self.peer = peer

    def usable_for_sending(self, now: float, reject_after_time: float = REJECT_AFTER_TIME) -> bool:
        """Whether data may still be sent under this session at `now` (monotonic seconds): keys
        present, younger than `reject_after_time` seconds, counter below REJECT_AFTER_MESSAGES (§6.2)."""
        return (self.send is not None and now - self.created < reject_after_time
                and self.send_counter < REJECT_AFTER_MESSAGES)

    def usable_for_receiving(self, now: float, reject_after_time: float = REJECT_AFTER_TIME) -> bool:
        """Whether messages under this session are still accepted at `now` (younger than
        `reject_after_time` seconds, keys present), §6.2."""
        return self.receive is not None and now - self.created < reject_after_time

    def zero(self) -> None:
        """Drop the keys (the cipher objects own the only copies)."""
        self.send = self.receive = None

    def __repr__(self) -> str:
        return f"Keypair(local_index={self.local_index:#x}, initiator={self.is_initiator})"
