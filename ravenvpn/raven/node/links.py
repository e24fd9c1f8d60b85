"""What the drivers ask the kernel about links and routes (through pyroute2's netlink, never ``ip``).

The underlay of a tunnel is the link its encrypted packets leave by: the route toward each peer's
endpoint, as ``wg-quick`` finds it (``ip route get <endpoint>``), or the default route's link while
no peer has an endpoint, as Raven does. Not every link of the host: an unrelated small link (another
VPN, a CNI bridge) carries none of the tunnel's packets.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ...errors import RavenError

__all__ = ["UnderlayPath", "underlay_path", "underlay_mtu", "FALLBACK_MTU"]

TUNNEL_NAME_PREFIX = "raven"     # ravenvpn tunnels on the host are never the underlay
#: Bytes: the underlay MTU assumed when no route says otherwise (Ethernet; wg-quick's fallback).
FALLBACK_MTU = 1500
_MAIN_TABLE = 254


@dataclass(frozen=True)
class UnderlayPath:
    """The path a tunnel's packets take, as found in the kernel.

    Attributes:
        mtu: bytes the path carries: the route's ``mtu`` metric if it has one, else its link's MTU.
        link: name of the link that decided it (None: nothing found, ``mtu`` is FALLBACK_MTU).
        via: how it was found, for the log: ``route to 198.51.100.2``, ``default route``, or
            ``no route to an endpoint and no default route``.
    """

    mtu: int
    link: str | None
    via: str

    def describe(self) -> str:
        """``link up0 (MTU 1500, route to 198.51.100.2)``, for log lines."""
        if self.link is None:
            return f"{self.via}: assuming MTU {self.mtu}"
        return f"link {self.link} (MTU {self.mtu}, {self.via})"


def _route_mtu(route: Any) -> int | None:
    metrics = route.get_attr("RTA_METRICS")
    return metrics.get_attr("RTAX_MTU") if metrics is not None else None


def _usable_link(links: dict[int, Any], oif: int | None, interface: str) -> Any | None:
    """The link `oif` if tunnel packets could use it: not loopback (a local address is no
    underlay), not our tunnel or another ravenvpn tunnel (a route through it would be a loop)."""
    link = links.get(oif) if oif is not None else None
    if link is None:
        return None
    name = link.get_attr("IFLA_IFNAME") or ""
    if name in ("lo", interface) or name.startswith(TUNNEL_NAME_PREFIX):
        return None
    return link


def _path(route: Any, link: Any, via: str) -> UnderlayPath:
    link_mtu = link.get_attr("IFLA_MTU") or FALLBACK_MTU
    route_mtu = _route_mtu(route)
    return UnderlayPath(min(link_mtu, route_mtu) if route_mtu else link_mtu, link.get_attr("IFLA_IFNAME"), via)


def _route_oifs(route: Any) -> list[int]:
    """The output links of a route: its ``RTA_OIF``, or each nexthop's of a multipath (ECMP) route
    (``ip route add default nexthop via A dev a0 nexthop via B dev b0``), which has none of its own."""
    oif = route.get_attr("RTA_OIF")
    if oif is not None:
        return [oif]
    return [hop["oif"] for hop in route.get_attr("RTA_MULTIPATH") or () if hop.get("oif")]


def _route_path(route: Any, links: dict[int, Any], interface: str, via: str) -> UnderlayPath | None:
    """The path of ``route``: through its link, or the smallest of its nexthops' links (a flow may
    take any of them); None when no link of it may carry tunnel packets (see :func:`_usable_link`)."""
    paths = [_path(route, link, via) for oif in _route_oifs(route)
             if (link := _usable_link(links, oif, interface)) is not None]
    return min(paths, key=lambda p: p.mtu) if paths else None


def _main_table_route(ipr: IPRoute, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Any | None:
    """The main table's most specific route containing ``ip`` (lowest metric among equals), if any."""
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    best, best_key = None, None
    for route in ipr.get_routes(family=family, table=_MAIN_TABLE):
        dst = route.get_attr("RTA_DST")
        length = route["dst_len"]
        if dst is not None and ip not in ipaddress.ip_network(f"{dst}/{length}", strict=False):
            continue
        key = (-length, route.get_attr("RTA_PRIORITY") or 0)
        if _route_oifs(route) and (best_key is None or key < best_key):
            best, best_key = route, key
    return best


def underlay_path(interface: str, endpoints: Iterable[str] = ()) -> UnderlayPath:
    """The path with the smallest MTU among the routes toward ``endpoints`` (IP literals; the
    peers' endpoint addresses), or the default route's when none of them has a usable route.

    A lookup is ``ip route get`` (RTM_GETROUTE: the kernel's own choice, policy rules included);
    one that fails (no route) or leads through loopback is left out; one that leads through
    ``interface`` or a ``raven*`` tunnel is looked up again in the main table, where the tunnel's own
    UDP datagrams are routed. Of several default routes the one with the lowest metric wins, IPv4 before IPv6;
    a multipath (ECMP) route counts with its smallest nexthop link.
    FALLBACK_MTU when there is no route at all.

    Raises:
        RavenError: the kernel cannot be asked over netlink.
    """
    try:
        with IPRoute() as ipr:
            links = {link["index"]: link for link in ipr.get_links()}
            best: UnderlayPath | None = None
            for address in sorted(set(endpoints)):
                try:
                    ip = ipaddress.ip_address(address)
                    (route,) = ipr.route("get", dst=str(ip))[:1]
                except (ValueError, NetlinkError):
                    continue   # not an IP literal, or unreachable: this peer says nothing
                path = _route_path(route, links, interface, f"route to {ip}")
                if path is None:
                    # The kernel's choice for a plain packet may be the tunnel itself: a peer's
                    # endpoint that is also one of its routed node IPs (table 9028 via raven0). The
                    # tunnel's own datagrams leave by the main table (the rule for its UDP port), so
                    # that is the path that counts for them.
                    route = _main_table_route(ipr, ip)
                    path = _route_path(route, links, interface, f"route to {ip}") if route else None
                if path is not None and (best is None or path.mtu < best.mtu):
                    best = path
            if best is not None:
                return best
            for family in (socket.AF_INET, socket.AF_INET6):
                defaults = sorted((r for r in ipr.get_routes(family=family, table=_MAIN_TABLE)
                                   if r["dst_len"] == 0 and _route_oifs(r)),
                                  key=lambda r: r.get_attr("RTA_PRIORITY") or 0)
                for route in defaults:
                    path = _route_path(route, links, interface, "default route")
                    if path is not None:
                        return path
    except NetlinkError as exc:
        raise RavenError(f"cannot read the network links and routes: {exc}") from None
    return UnderlayPath(FALLBACK_MTU, None, "no route to an endpoint and no default route")


def underlay_mtu(interface: str, endpoints: Iterable[str] = ()) -> int:
    """Bytes the underlay carries toward ``endpoints``: ``underlay_path(interface, endpoints).mtu``.

    Raises:
        RavenError: the kernel cannot be asked over netlink.
    """
    return underlay_path(interface, endpoints).mtu
