"""`Output`: what one call into the sans-I/O core asks the device layer to do.

Its own module so that the timers (which add to an Output) and the Tunnel (which returns one) both
import it without importing each other.
"""
from __future__ import annotations

from .peer import Endpoint

__all__ = ["Output", "Endpoint"]


class Output:
    """What one call into the Tunnel asks the device layer to do; send `bursts`, then `network`.

    Attributes:
        network: single UDP datagrams to send, as (payload bytes, endpoint (ip str, port int)).
            Handshake messages, cookie replies, and transport messages sent one at a time.
        bursts: transport messages encrypted back to back into one buffer, as
            (buffer memoryview, size int, endpoint): every datagram is `size` bytes except the
            last, which may be shorter. A burst can leave in one UDP GSO send and costs no
            per-message allocation. The buffer is only valid until it is sent (do not keep it).
        tun: decrypted IP packets (bytes, no padding) to write to the TUN device, in order.
    """

    __slots__ = ("network", "bursts", "tun")

    def __init__(self) -> None:
        self.network: list[tuple[bytes, Endpoint]] = []
        self.bursts: list[tuple[memoryview, int, Endpoint]] = []
        self.tun: list[bytes] = []

    def datagrams(self) -> list[tuple[bytes, Endpoint]]:
        """Every datagram to send as (payload, endpoint), bursts split up, in the order the pump
        sends them (for tests and tools; the data path sends bursts whole)."""
        result: list[tuple[bytes, Endpoint]] = []
        for buffer, size, endpoint in self.bursts:
            result.extend((bytes(buffer[off:off + size]), endpoint) for off in range(0, len(buffer), size))
        return result + self.network   # the order the pump sends them in

    def __repr__(self) -> str:
        return f"Output(network={len(self.network)}, bursts={len(self.bursts)}, tun={len(self.tun)})"


