"""IP address and prefix helpers shared by the loader and the planner."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TypeAlias

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip(text: str) -> IPAddress:
    """Parse one IP address; raises ValueError with ipaddress's reason."""
    return ipaddress.ip_address(text.strip())


def parse_cidr(text: str) -> IPNetwork:
    """Parse a CIDR strictly: host bits set is a typo we want to report, not mask away."""
    text = text.strip()
    if "/" not in text:
        raise ValueError("missing prefix length")
    return ipaddress.ip_network(text, strict=True)


def host_network(ip: IPAddress) -> IPNetwork:
    """The /32 (or /128) prefix that routes exactly one node address."""
    return ipaddress.ip_network(f"{ip}/{ip.max_prefixlen}")


def network_sort_key(net: IPNetwork) -> tuple[int, int, int]:
    # IPv4 and IPv6 networks do not compare with each other; sort v4 first.
    return (net.version, int(net.network_address), net.prefixlen)


def sorted_networks(nets: Iterable[IPNetwork]) -> tuple[IPNetwork, ...]:
    """Deduplicated and in a stable order, so plans compare equal run to run."""
    return tuple(sorted(set(nets), key=network_sort_key))


def networks_overlap(a: IPNetwork, b: IPNetwork) -> bool:
    return a.version == b.version and a.overlaps(b)
