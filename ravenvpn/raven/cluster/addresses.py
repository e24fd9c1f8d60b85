"""IP address and prefix helpers shared by the loader and the planner."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TypeAlias

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip(text: str) -> IPAddress:
    """Parse one IPv4 or IPv6 address (surrounding blanks ignored). An IPv4-mapped IPv6 address
    (``::ffff:198.51.100.1``, as Go prints a 16-byte ``net.IP`` in some paths) is that IPv4 address:
    as an endpoint it would go to the IPv6-only socket, which cannot send to it.

    Raises:
        ValueError: not an address (ipaddress's reason).
    """
    ip = ipaddress.ip_address(text.strip())
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_cidr(text: str, *, strict: bool = True) -> IPNetwork:
    """Parse a CIDR (``10.244.1.0/24``). ``strict``: host bits set (``10.244.1.5/24``) are an error, a
    typo to report; otherwise they are cleared, as Go's ``net.ParseCIDR`` (Raven) and Kubernetes'
    own validation of ``spec.podCIDR`` (``ParseCIDRSloppy``) do.

    Raises:
        ValueError: no prefix length, host bits set (if ``strict``), or not a network (ipaddress's reason).
    """
    text = text.strip()
    if "/" not in text:
        raise ValueError("missing prefix length")
    return ipaddress.ip_network(text, strict=strict)


def host_network(ip: IPAddress) -> IPNetwork:
    """The /32 (or /128) prefix that routes exactly one node address."""
    return ipaddress.ip_network(f"{ip}/{ip.max_prefixlen}")


def network_sort_key(net: IPNetwork) -> tuple[int, int, int]:
    """(version, network address, prefix length): IPv4 and IPv6 networks do not compare with each other,
    so this sorts v4 first, then by address."""
    return (net.version, int(net.network_address), net.prefixlen)


def sorted_networks(nets: Iterable[IPNetwork]) -> tuple[IPNetwork, ...]:
    """Deduplicated and in a stable order, so plans compare equal run to run."""
    return tuple(sorted(set(nets), key=network_sort_key))

