"""plan(): the desired dataplane state of one node, computed from the cluster alone.

Pure and deterministic: no kernel, no clock, no randomness; outputs are sorted.
Every node of the cluster can run it on the same YAML and get a consistent view
(the same relay, the same active endpoints), which is what Raven agents get from
the Gateway objects.  See :mod:`topology` for peers/relaying and :mod:`routing`
for routes, rules and sysctls.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ...errors import ClusterError
from ..cluster.addresses import IPAddress
from ..cluster.model import Cluster, Endpoint, Gateway
from ..cluster.problems import OBJECT_SKIPPED
from .failover import candidates
from .nodeplan import NodePlan, PeerPlan, Role, Route, Rule
from .routing import gateway_routes, lookup_rules, member_routes, sysctls_for, tunnel_bypass_rules
from .direct import plan_direct
from .topology import PeerSet, plan_peers

__all__ = ["plan", "NodePlan", "PeerPlan", "Role", "Route", "Rule",
           "DEFAULT_INTERFACE", "GATEWAY_TABLE", "MEMBER_TABLE", "RULE_PRIORITY",
           "KEEPALIVE", "WIREGUARD_OVERHEAD"]

DEFAULT_INTERFACE = "raven0"
GATEWAY_TABLE = 9028       # Raven's WireGuard driver table
MEMBER_TABLE = 9027        # Raven's route-driver table on non-gateway nodes
RULE_PRIORITY = 101        # Raven's rule priority; the tunnel bypass rule sits just above
KEEPALIVE = 5              # seconds, Raven's KeepAliveInterval toward NAT'd peers
# IPv6 outer header (40) + UDP (8) + WireGuard data header (16) + tag (16) = 80: the
# worst case, so one MTU works whichever family the underlay uses.  Raven uses 80 too.
WIREGUARD_OVERHEAD = 80


def plan(cluster: Cluster, node_name: str, *, local_public_key: bytes | None = None,
         mtu: int | None = None, underlay_mtu: int = 1500, listen_port: int = 4500,
         interface: str = DEFAULT_INTERFACE, gateway_table: int = GATEWAY_TABLE,
         member_table: int = MEMBER_TABLE, rule_priority: int = RULE_PRIORITY,
         keepalive: int = KEEPALIVE, resolved: Mapping[str, IPAddress | str] | None = None,
         failover: bool = False) -> NodePlan:
    """The plan for ``node_name``.

    ``local_public_key`` is the public half of the key the node's daemon will use;
    when the node is a tunnel endpoint, it must match ``config.publicKey`` in the
    cluster (a mismatch is a ClusterError naming the field).

    ``mtu`` is the tunnel MTU in bytes; without it, ``underlay_mtu`` minus :data:`WIREGUARD_OVERHEAD`.
    ``listen_port`` is the tunnel's UDP port, ``keepalive`` the persistent keepalive (seconds) toward
    peers with a NAT on the path (Raven's KeepAliveInterval), the tables and rule priority Raven's.

    ``resolved`` maps the hostnames of ``Cluster.hostnames`` (``publicIP`` given as a DNS name) to
    their addresses, or to why they have none (a warning; the peer then has no endpoint): the
    caller resolves (:func:`~ravenvpn.raven.cluster.hostnames.resolve_hostnames`), the planner
    does no I/O.  A hostname missing from it counts as not resolved.

    The plan's ``warnings`` start with the cluster's (what the loader skipped), so
    every node shows what is stale in the shared file.

    Raises:
        ValueError: a parameter out of range (MTU 576-65535, port, table, interface name, key size).
        ClusterError: this node's own plan is impossible: its Node is missing or was
            unusable, its own tunnel endpoint was unusable (the loader's
            ``Cluster.node_errors``), or its endpoint's key is not ``local_public_key``.
    """
    tunnel_mtu = mtu if mtu is not None else underlay_mtu - WIREGUARD_OVERHEAD
    _check_parameters(tunnel_mtu, listen_port, interface, gateway_table, member_table,
                      rule_priority, keepalive, local_public_key)
    own_error = cluster.node_error(node_name)
    if own_error is not None:
        raise ClusterError(own_error)
    if cluster.node(node_name) is None:
        # The Node may be one of the objects the loader could not read: say which were skipped.
        skipped = [w for w in cluster.warnings if w.endswith(f"({OBJECT_SKIPPED})")]
        hint = f" (objects skipped: {'; '.join(skipped[:3])}{'; ...' if len(skipped) > 3 else ''})" if skipped else ""
        raise ClusterError(f"Node {node_name}: not found in the cluster{hint}")
    base = NodePlan(node_name=node_name, role=Role.NONE, gateway=None, interface=interface,
                    listen_port=listen_port, mtu=tunnel_mtu, warnings=cluster.warnings)
    gw = cluster.gateway_of(node_name)
    if gw is None:
        return replace(base, warnings=(*cluster.warnings, f"Node {node_name} is in no Gateway: role none "
                                       "(Raven leaves it alone)"))

    own = next((ep for ep in gw.tunnel_endpoints if ep.node_name == node_name), None)
    active = gw.active_tunnel
    role = (Role.ACTIVE_GATEWAY if active is not None and active.node_name == node_name
            else Role.STANDBY if own is not None else Role.MEMBER)
    if own is not None and local_public_key is not None and own.public_key != local_public_key:
        raise ClusterError(
            f"Gateway {gw.name}: spec.endpoints[{own.index}].config.publicKey: {own.public_key_b64} "
            f"does not match the local public key {base64.b64encode(local_public_key).decode()}")

    peer_set = plan_peers(cluster, gw, keepalive, resolved, standby_peers=failover)
    ipv6 = any(p.version == 6 for p in (*gw.prefixes, *peer_set.remote_prefixes))
    warnings = [*cluster.warnings, *peer_set.warnings]
    if tunnel_mtu < 1280 and ipv6:
        warnings.append(f"MTU {tunnel_mtu} is below IPv6's minimum of 1280")
    common: dict[str, Any] = dict(role=role, gateway=gw.name, public_key=own.public_key if own else None,
                  relay_gateway=peer_set.relay.name if peer_set.relay else None,
                  sysctls=sysctls_for(role, interface, ipv6))

    if role is Role.ACTIVE_GATEWAY:
        assert active is not None
        return replace(base, **common, **_gateway_parts(
            cluster, gw, active, peer_set, warnings, interface, tunnel_mtu, listen_port,
            gateway_table, rule_priority))
    if role is Role.STANDBY and failover and own in candidates(cluster, gw):
        # A hot standby: its device, peers, routes and rules are the active's, for its own node's
        # traffic (remote gateways route its pods and node IP to it: see topology). Members still
        # route through the active, so a takeover changes no route here, only members' routes and
        # remote gateways' AllowedIPs.
        assert own is not None
        common["sysctls"] = sysctls_for(Role.ACTIVE_GATEWAY, interface, ipv6)
        return replace(base, **common, **_gateway_parts(
            cluster, gw, own, peer_set, warnings, interface, tunnel_mtu, listen_port,
            gateway_table, rule_priority))
    return replace(base, **common, **_member_parts(gw, peer_set, warnings, tunnel_mtu,
                                                    member_table, rule_priority))


def _gateway_parts(cluster: Cluster, gw: Gateway, active: Endpoint, peer_set: PeerSet, warnings: list[str],
                   interface: str, mtu: int, listen_port: int, table: int,
                   priority: int) -> dict[str, Any]:
    member = gw.member(active.node_name)
    assert member is not None
    routes = gateway_routes(peer_set.remote_prefixes, interface, table, mtu, member.private_ip)
    if active.port != listen_port:
        warnings.append(f"Gateway {gw.name}: spec.endpoints[{active.index}].port is {active.port} "
                        f"but the listen port is {listen_port}: remote gateways will not reach us")
    relay_peer = next((p for p in peer_set.peers if peer_set.relay and p.gateway == peer_set.relay.name), None)
    direct = (plan_direct(cluster, gw, peer_set.relay, set(relay_peer.allowed_ips) if relay_peer else None)
              if active == gw.active_tunnel else None)   # a hot standby takes no part
    return dict(peers=peer_set.peers, routes=routes, relay=peer_set.relaying,
                rules=_sorted_rules(tunnel_bypass_rules(routes, priority - 1, listen_port)
                                    + lookup_rules(routes, priority, table)),
                warnings=tuple(warnings) + (direct.warnings if direct else ()), direct=direct)


def _member_parts(gw: Gateway, peer_set: PeerSet, warnings: list[str], mtu: int,
                  table: int, priority: int) -> dict[str, Any]:
    active = gw.active_tunnel
    if active is None:
        warnings.append(f"Gateway {gw.name} has no active tunnel endpoint "
                        "(no Ready tunnel candidate): remote domains are unreachable")
        return dict(warnings=tuple(warnings))
    gateway_node = gw.member(active.node_name)
    assert gateway_node is not None
    routes, skipped = member_routes(peer_set.remote_prefixes, gateway_node.private_ip, table, mtu)
    return dict(routes=routes, rules=lookup_rules(routes, priority, table),
                warnings=tuple(warnings) + skipped)


def _check_parameters(mtu: int, listen_port: int, interface: str, gateway_table: int,
                      member_table: int, rule_priority: int, keepalive: int,
                      local_public_key: bytes | None) -> None:
    if not 576 <= mtu <= 65535:
        raise ValueError(f"mtu {mtu} out of range 576-65535")
    if not 1 <= listen_port <= 65535:
        raise ValueError(f"listen_port {listen_port} out of range 1-65535")
    # IFNAMSIZ allows 15 characters.  A dot is legal in Linux names (eth0.100) but would
    # make the sysctl key net.ipv4.conf.<iface>.rp_filter ambiguous, so it is refused.
    if not interface or len(interface) > 15 or any(c in interface for c in "/. \t\n:"):
        raise ValueError(f"invalid interface name {interface!r}")
    for name, table in (("gateway_table", gateway_table), ("member_table", member_table)):
        # 0 is unspec, 253-255 are the kernel's default/main/local tables.
        if not 1 <= table < 2**32 or table in (253, 254, 255):
            raise ValueError(f"{name} {table} is not a usable routing table")
    if not 2 <= rule_priority < 32766:  # 0 is the local table, 32766 main; -1 is used too
        raise ValueError(f"rule_priority {rule_priority} out of range 2-32765")
    if keepalive < 0 or keepalive > 65535:
        raise ValueError(f"keepalive {keepalive} out of range 0-65535")
    if local_public_key is not None and len(local_public_key) != 32:
        raise ValueError(f"local_public_key must be 32 bytes, got {len(local_public_key)}")


def _sorted_rules(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    return tuple(sorted(rules, key=lambda r: (r.family, r.priority, r.table)))
