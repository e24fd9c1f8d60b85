"""veth pairs joining two nodes (:class:`tools.node.Node`), addressed and up, never in the host namespace."""

from __future__ import annotations

import dataclasses
import ipaddress

from tools.node import Node
from tools.process import run_host

__all__ = ["Veth", "veth"]


@dataclasses.dataclass
class Veth:
    """A veth pair between two nodes; ``ip_*`` are addresses without prefix length, ready to use."""

    a: Node
    b: Node
    name_a: str
    name_b: str
    cidr_a: str
    cidr_b: str
    cidr6_a: str | None = None
    cidr6_b: str | None = None

    @property
    def ip_a(self) -> str:
        return str(ipaddress.ip_interface(self.cidr_a).ip)

    @property
    def ip_b(self) -> str:
        return str(ipaddress.ip_interface(self.cidr_b).ip)

    @property
    def ip6_a(self) -> str | None:
        return str(ipaddress.ip_interface(self.cidr6_a).ip) if self.cidr6_a else None

    @property
    def ip6_b(self) -> str | None:
        return str(ipaddress.ip_interface(self.cidr6_b).ip) if self.cidr6_b else None


def veth(
    a: Node,
    b: Node,
    addr_a: str,
    addr_b: str,
    name_a: str | None = None,
    name_b: str | None = None,
    addr6_a: str | None = None,
    addr6_b: str | None = None,
    mtu: int | None = None,
) -> Veth:
    """Join two nodes with a veth pair, address both ends (CIDR strings) and bring them up.

    The pair is created directly inside ``a`` with its peer placed in ``b`` (``ip -n A link add ...
    netns B``), so no interface ever exists in the host namespace. Default names are ``to-<label>``.
    Either IPv4 address may be an IPv6 CIDR too; ``addr6_*`` add a second (IPv6) address.
    """
    name_a = name_a or f"to-{b.label}"[:15]
    name_b = name_b or f"to-{a.label}"[:15]
    if len(name_a) > 15 or len(name_b) > 15:
        raise ValueError("interface names are limited to 15 characters")
    run_host(["ip", "-n", a.name, "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", b.name])
    ends = ((a, name_a, (addr_a, addr6_a)), (b, name_b, (addr_b, addr6_b)))
    # Up first, addresses after: an IPv6 address added while the link is down is not answered for in
    # neighbour discovery until the kernel has processed the link-up, costing the first ping ~1 s.
    for node, name, _ in ends:
        node.link_up(name, mtu)
    for node, name, addrs in ends:
        for cidr in addrs:
            if cidr:
                node.add_addr(name, cidr)
    return Veth(a, b, name_a, name_b, addr_a, addr_b, addr6_a, addr6_b)
