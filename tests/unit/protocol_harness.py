"""Drives two (or more) sans-I/O Tunnels against each other over a simulated network, for unit tests."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import IPv6, ICMPv6EchoRequest
from scapy.packet import Raw, raw

from ravenvpn.protocol import keys
from ravenvpn.protocol.clock import Clock
from ravenvpn.protocol.tunnel import Output, Tunnel


def icmp(src: str, dst: str, payload: bytes = b"ping") -> bytes:
    if ":" in src:
        return raw(IPv6(src=src, dst=dst) / ICMPv6EchoRequest() / Raw(payload))
    return raw(IP(src=src, dst=dst) / ICMP() / Raw(payload))


@dataclass
class Side:
    tunnel: Tunnel
    underlay: tuple[str, int]
    inner: str
    private: bytes
    delivered: list[bytes] = field(default_factory=list)


class Net:
    """Two tunnels A and B; datagrams are carried between them until quiet."""

    def __init__(self, *, psk: bytes | None = None, v6: bool = False) -> None:
        self.now = 1000.0
        inner_a, inner_b = ("fd00::1", "fd00::2") if v6 else ("10.9.0.1", "10.9.0.2")
        host = 128 if v6 else 32
        # Handshake timestamps follow the simulated time, not the real clock: a test that simulates
        # minutes in microseconds must not see its later initiations refused as replays (§5.1).
        clock = Clock(monotonic=lambda: self.now, wall=lambda: 1_700_000_000_000_000_000 + int(self.now * 1e9))
        self.a = Side(Tunnel(clock=clock), ("192.0.2.1", 51820), inner_a, keys.generate_private())
        self.b = Side(Tunnel(clock=clock), ("192.0.2.2", 51820), inner_b, keys.generate_private())
        self.a.tunnel.private_key = self.a.private
        self.b.tunnel.private_key = self.b.private
        self.pa = self.a.tunnel.add_peer(self.b.tunnel.public_key)
        self.pb = self.b.tunnel.add_peer(self.a.tunnel.public_key)
        self.pa.endpoint, self.pb.endpoint = self.b.underlay, self.a.underlay
        self.a.tunnel.add_allowed_ip(self.pa, ipaddress.ip_network(f"{inner_b}/{host}"))
        self.b.tunnel.add_allowed_ip(self.pb, ipaddress.ip_network(f"{inner_a}/{host}"))
        if psk:
            self.pa.preshared_key = self.pb.preshared_key = psk
        self.wire: list[tuple[str, bytes]] = []  # everything that crossed, for inspection

    def other(self, side: Side) -> Side:
        return self.b if side is self.a else self.a

    def carry(self, sender: Side, out: Output, *, drop: bool = False, source: tuple[str, int] | None = None) -> None:
        """Deliver `out` of `sender` to the other side, then keep carrying the replies."""
        sender.delivered.extend(out.tun)
        pending = [(sender, out.datagrams())]
        while pending:
            src_side, datagrams = pending.pop(0)
            if not datagrams:
                continue
            dst_side = self.other(src_side)
            for data, _ in datagrams:
                self.wire.append(("a" if src_side is self.a else "b", data))
            if drop:
                return
            src_addr = source if (source and src_side is sender) else src_side.underlay
            reply = dst_side.tunnel.receive_datagrams([(d, src_addr) for d, _ in datagrams], self.now)
            dst_side.delivered.extend(reply.tun)
            pending.append((dst_side, reply.datagrams()))

    def send(self, sender: Side, payload: bytes = b"ping", **kw) -> None:
        pkt = icmp(sender.inner, self.other(sender).inner, payload)
        self.carry(sender, sender.tunnel.send_packets([pkt], self.now), **kw)

    def advance(self, seconds: float, step: float = 0.1, *, drop: bool = False) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for side in (self.a, self.b):
                self.carry(side, side.tunnel.tick(self.now), drop=drop)
