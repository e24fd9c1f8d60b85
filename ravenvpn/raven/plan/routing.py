"""Routes, policy rules and sysctls per role.

Active gateway: remote prefixes go ``dev raven0`` in a dedicated table (9028, as
Raven's WireGuard driver), looked up by a ``from all`` rule at priority 101.  The
table only holds remote prefixes, so every other lookup falls through to main.

Members and standbys: remote prefixes go ``via`` the active gateway node's private
IP in their own table (9027, Raven's route-driver table).  Raven tunnels that hop in
VXLAN; here it is plain routing, which needs the gateway on-link (same L2 segment),
as nodes of one Raven network domain are.  A local gateway prefix is never routed
anywhere: same-domain traffic stays on the CNI.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..cluster.addresses import IPAddress, IPNetwork
from .nodeplan import MAIN_TABLE, Role, Route, Rule


def gateway_routes(prefixes: Iterable[IPNetwork], interface: str, table: int, mtu: int,
                   src: IPAddress | None) -> tuple[Route, ...]:
    """The active gateway's routes: each remote prefix ``dev <interface> table <table> mtu <mtu>``.

    ``src`` (the node's private IP) pins the source of the gateway's own traffic to its node IP,
    which the remote side accepts (it is in their AllowedIPs); raven0 itself may carry no address.
    It is set on routes of its own family only.
    """
    return tuple(Route(dst=p, dev=interface, gateway=None, table=table,
                       src=src if src is not None and src.version == p.version else None, mtu=mtu)
                 for p in prefixes)


def member_routes(prefixes: Iterable[IPNetwork], via: IPAddress, table: int,
                  mtu: int) -> tuple[tuple[Route, ...], tuple[str, ...]]:
    """A member's (or standby's) routes: each remote prefix ``via`` the active gateway node's private
    IP in ``table``, and warnings for the prefixes of the other family, which that next hop cannot
    carry (they are left unrouted)."""
    routes, skipped = [], []
    for p in prefixes:
        if p.version != via.version:
            skipped.append(str(p))  # an IPv6 prefix cannot be routed via an IPv4 next hop
            continue
        routes.append(Route(dst=p, dev=None, gateway=via, table=table, mtu=mtu))
    warnings = (f"no IPv{6 if via.version == 4 else 4} address for the gateway node {via}: "
                f"not routed: {', '.join(skipped)}",) if skipped else ()
    return tuple(routes), warnings


def lookup_rules(routes: Iterable[Route], priority: int, table: int) -> tuple[Rule, ...]:
    """``ip [-6] rule add priority <priority> lookup <table>`` for each address family the routes use."""
    return tuple(Rule(priority=priority, table=table, family=f) for f in _families(routes))


def tunnel_bypass_rules(routes: Iterable[Route], priority: int, listen_port: int) -> tuple[Rule, ...]:
    """Keep the tunnel's own UDP packets out of the tunnel table.

    A peer endpoint may itself be inside a routed remote prefix (a gateway without
    public IP is reached at its node IP, which is also in AllowedIPs).  Without this
    rule the encrypted packet would be routed back into raven0: a loop.  Kernel
    WireGuard avoids it with a fwmark; matching our source port needs nothing from
    the daemon's socket.
    """
    return tuple(Rule(priority=priority, table=MAIN_TABLE, family=f, ip_proto="udp", sport=listen_port)
                 for f in _families(routes))


def sysctls_for(role: Role, interface: str, ipv6: bool) -> tuple[tuple[str, str], ...]:
    """Kernel settings the role needs.

    Only the active gateway forwards.  Reverse-path filtering: the kernel applies
    max(conf.all.rp_filter, conf.<iface>.rp_filter), and 2 (loose) is the maximum,
    so setting it on raven0 alone suffices whatever ``all`` is; relayed and roaming
    traffic arrives on raven0 with sources that strict mode could reject while
    routes are being replaced.  ``conf.all`` is deliberately left untouched.
    IPv6 has no rp_filter sysctl (it is done by netfilter's rpfilter match).
    """
    if role is not Role.ACTIVE_GATEWAY:
        return ()
    settings = {"net.ipv4.ip_forward": "1", f"net.ipv4.conf.{interface}.rp_filter": "2"}
    if ipv6:
        settings["net.ipv6.conf.all.forwarding"] = "1"
    return tuple(sorted(settings.items()))


def _families(routes: Iterable[Route]) -> list[int]:
    return sorted({r.dst.version for r in routes})
