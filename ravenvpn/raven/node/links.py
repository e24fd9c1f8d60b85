"""What the drivers ask the kernel about links (through pyroute2's netlink, never ``ip``)."""
from __future__ import annotations

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ...errors import RavenError

__all__ = ["underlay_mtu"]

IFF_UP = 0x1                     # linux/if.h: the link is administratively up
TUNNEL_NAME_PREFIX = "raven"     # other ravenvpn tunnels on the host are not underlay either


def underlay_mtu(interface: str) -> int:
    """The smallest MTU, in bytes, among up, non-loopback links: the tunnel must fit in any of them.

    ``interface`` (our own tunnel) is left out, as is any link named ``raven*``: counting a tunnel
    would shrink the MTU by the WireGuard overhead on every reconcile. 1500 when no link qualifies.

    Raises:
        RavenError: the links cannot be listed over netlink.
    """
    try:
        with IPRoute() as ipr:
            mtus = [link.get("mtu") for link in ipr.get_links()
                    if link.get("ifname") not in ("lo", interface) and link["flags"] & IFF_UP
                    and not link.get("ifname", "").startswith(TUNNEL_NAME_PREFIX)]
    except NetlinkError as exc:
        raise RavenError(f"cannot list the network links: {exc}") from None
    return min((m for m in mtus if m), default=1500)
