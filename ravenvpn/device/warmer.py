"""Keeps the data path's code and the AEAD library in cache while the pump busy-polls.

Why: on a VM, code that has not run for a few milliseconds runs several times slower
(caches and branch predictors went to other work). Busy polling keeps the CPU awake, but
the first real packet after a pause still finds the encrypt/decrypt path cold: measured in
the daemon, a one-packet `send_packets` took ~100 us of CPU after a 10 ms pause against
~8 us back to back. So while polling finds nothing, the pump runs a ping through a private
pair of Tunnels every half millisecond. No I/O and no real key is involved: the pair has
throwaway keys, addresses from the documentation ranges, and its output goes nowhere.
"""
from __future__ import annotations

import ipaddress
import logging

from ..protocol import keys
from ..protocol.tunnel import Endpoint, Output, Tunnel
from . import offload

log = logging.getLogger("ravenvpn.warmer")

INTERVAL = 0.0005   # seconds between warm-up round trips while polling
_UNDERLAY: tuple[Endpoint, Endpoint] = (("203.0.113.1", 9), ("203.0.113.2", 9))    # TEST-NET-3, never sent to
_INNER = ("198.51.100.1", "198.51.100.2")                                           # TEST-NET-2


def _icmp_echo(src: str, dst: str) -> bytes:
    """An IPv4 echo request with a 56-byte payload, what `ping` sends (checksums are not checked here)."""
    header = bytes.fromhex("45000054000040004001") + b"\x00\x00"
    return header + ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed + bytes(64)


class PathWarmer:
    """Two Tunnels, A and B, wired to each other in memory; `run` sends a packet each way."""

    def __init__(self) -> None:
        self.a, self.b = Tunnel(), Tunnel()
        self.a.private_key, self.b.private_key = keys.generate_private(), keys.generate_private()
        assert self.a.public_key is not None and self.b.public_key is not None
        peer_of_a = self.a.add_peer(self.b.public_key)
        peer_of_b = self.b.add_peer(self.a.public_key)
        peer_of_a.endpoint, peer_of_b.endpoint = _UNDERLAY[1], _UNDERLAY[0]
        self.a.add_allowed_ip(peer_of_a, ipaddress.ip_network(f"{_INNER[1]}/32"))
        self.b.add_allowed_ip(peer_of_b, ipaddress.ip_network(f"{_INNER[0]}/32"))
        self._to_b = [_icmp_echo(_INNER[0], _INNER[1])]
        self._to_a = [_icmp_echo(_INNER[1], _INNER[0])]
        self.delivered = 0      # packets that came out decrypted at the far end (for tests)

    def run(self, now: float) -> None:
        """One round trip: A -> B and B -> A, carrying handshakes as needed (the first runs, rekeys)."""
        self._carry(self.a, self.a.send_packets(self._to_b, now), now)
        self._carry(self.b, self.b.send_packets(self._to_a, now), now)

    def _carry(self, sender: Tunnel, out: Output, now: float) -> None:
        for _ in range(4):      # initiation, response, keepalive/data: never more than that
            datagrams = out.datagrams()
            if not datagrams:
                return
            receiver = self.b if sender is self.a else self.a
            source = _UNDERLAY[0] if sender is self.a else _UNDERLAY[1]
            out = receiver.receive_datagrams([(data, source) for data, _ in datagrams], now)
            if out.tun:
                self.delivered += len(out.tun)
                offload.coalesce(out.tun)    # the TUN write path's first step, warmed too
            sender = receiver
