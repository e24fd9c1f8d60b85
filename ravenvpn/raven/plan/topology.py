"""Which gateway talks to which, and through whom.

Direct WireGuard peers need one side reachable.  Two gateways both under NAT cannot
reach each other, so (like Raven) their traffic goes through a *relay* gateway: the
edge adds the other NAT'd gateways' prefixes to the relay peer's AllowedIPs, and the
relay, which peers with everybody, forwards between its peers.

Relay choice (deliberately not Raven's): among gateways not under NAT that have an
active tunnel endpoint, a Gateway with ``spec.exposeType`` (PublicIP or LoadBalancer)
first, then the first by Gateway name.  Raven's ``FindCentralGwFn`` takes the last
non-NAT *active endpoint* by node name, which (a) makes any branch site that merely has
a public IP everyone's relay (field case N04a) and (b) depends on which candidate of a
gateway is active, so a failover inside one exposed gateway moved every relayed
NAT<->NAT flow of the cluster to another gateway (N04b).  Here the choice depends on
Gateways only: a failover inside a domain keeps the relay, and with it every other
domain's relayed paths.  Every node computes the same answer from the same cluster,
with no coordination.  Direct edge<->edge paths between NAT'd gateways (hole punching,
the relay as rendezvous) are planned in :mod:`.direct` and opened at run time by
:mod:`ravenvpn.raven.node.holepunch`; the relayed peers planned here stay the fallback.

Failover (:mod:`.failover`): every other candidate of a remote gateway is a peer too, a *standby
peer* whose AllowedIPs hold only its own node's prefixes (node IP and pod subnets): a hot standby
sends its own node's traffic through its own tunnel, so both directions take the same path. A
candidate that takes over is then already known (its handshake is accepted, its CLAIM reaches us
through the tunnel), and moving the rest of the domain's prefixes to it is a change of AllowedIPs,
decided by the liveness view, never by a handshake alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..cluster.addresses import IPAddress, IPNetwork, sorted_networks
from ..cluster.model import Cluster, Endpoint, Gateway
from .failover import candidates
from .direct import has_port_forward
from .nodeplan import PeerPlan


@dataclass(frozen=True)
class PeerSet:
    """The peers of one gateway's active node, with the relay decision and what could not be planned."""

    peers: tuple[PeerPlan, ...]
    relay: Gateway | None          # the relay gateway of the cluster
    relaying: bool                 # the local gateway is the relay and NAT<->NAT pairs exist
    warnings: tuple[str, ...]

    @property
    def remote_prefixes(self) -> tuple[IPNetwork, ...]:
        """Every prefix reachable through a peer (the union of their allowed IPs), sorted."""
        return sorted_networks(p for peer in self.peers for p in peer.allowed_ips)


def find_relay(cluster: Cluster) -> Gateway | None:
    """The gateway that relays NAT<->NAT traffic (see the module doc), None if no gateway qualifies."""
    candidates = [gw for gw in cluster.gateways if gw.active_tunnel and not gw.under_nat]
    if not candidates:
        return None
    # Gateway-level keys only: which node of a gateway is active must not move the relay.
    return min(candidates, key=lambda gw: (not gw.expose_type, gw.name))


def plan_peers(cluster: Cluster, local: Gateway, keepalive: int,
               resolved: Mapping[str, IPAddress | str] | None = None, standby_peers: bool = False) -> PeerSet:
    """The WireGuard peers of ``local``'s active node (also the routes its members need).

    ``resolved``: the addresses of publicIP hostnames (or why there is none), see
    :func:`~ravenvpn.raven.cluster.hostnames.resolve_hostnames`. ``standby_peers``: the other
    candidates of each remote gateway are peers too (failover, :mod:`.failover`).
    """
    resolved = resolved or {}
    relay = find_relay(cluster)
    warnings: list[str] = []
    direct: list[Gateway] = []
    relayed: list[Gateway] = []     # NAT'd remotes reached through the relay
    for remote in cluster.gateways:
        if remote.name == local.name:
            continue
        if remote.active_tunnel is None:
            warnings.append(f"Gateway {remote.name} has no active tunnel endpoint "
                            "(no Ready tunnel candidate): its nodes are unreachable")
        elif not (local.under_nat and remote.under_nat) or has_port_forward(local) or has_port_forward(remote):
            # One side reachable (not under NAT, or a port forward on its NAT: Raven's publicIP +
            # publicPort on an underNAT endpoint): a plain peer; the other side calls in.
            direct.append(remote)
        elif relay is not None:
            relayed.append(remote)
        else:
            warnings.append(f"Gateways {local.name} and {remote.name} are both under NAT and no "
                            "gateway without NAT exists to relay: they cannot reach each other")

    peers = []
    for remote in direct:
        # The relay is always a direct peer: it is not under NAT.
        through = relayed if relay is not None and remote.name == relay.name else []
        extra = [p for g in through for p in g.prefixes]
        standbys = [ep for ep in candidates(cluster, remote) if standby_peers
                    and ep.node_name != remote.active_tunnel.node_name]  # type: ignore[union-attr]
        endpoint = _endpoint(remote, remote.active_tunnel, resolved, warnings)  # type: ignore[arg-type]
        peers.append(_peer(local, remote, endpoint, extra, tuple(g.name for g in through), keepalive, standbys))
        peers.extend(_standby_peer(local, remote, ep, _endpoint(remote, ep, resolved, warnings), keepalive)
                     for ep in standbys)

    nat_gateways = [g for g in cluster.gateways if g.active_tunnel and g.under_nat]
    relaying = relay is not None and relay.name == local.name and len(nat_gateways) >= 2
    return PeerSet(tuple(sorted(peers, key=lambda p: (p.gateway, p.standby, p.node_name))), relay, relaying,
                   tuple(warnings))


def _endpoint(remote: Gateway, ep: Endpoint, resolved: Mapping[str, IPAddress | str],
              warnings: list[str]) -> tuple[str, int] | None:
    """Where to send to ``remote``'s endpoint ``ep``, None to wait for it to call in."""
    member = remote.member(ep.node_name)
    assert member is not None  # the loader checked endpoint nodes are members
    port = ep.public_port or ep.port
    if ep.public_ip is not None:
        return (str(ep.public_ip), port)
    if ep.public_host is not None:
        address = resolved.get(ep.public_host, "not resolved")
        if isinstance(address, str):
            # A warning for this endpoint, not a failure: it may still call in (roaming).
            warnings.append(f"Gateway {remote.name}: spec.endpoints[{ep.index}].publicIP: cannot resolve "
                            f"{ep.public_host!r} ({address}): no endpoint until it calls in")
            return None
        return (str(address), port)
    if remote.under_nat:
        # Behind NAT with no known public address: its private IP means nothing (or another
        # host) in our domain.  No endpoint: the peer calls in (it has ours and keeps the NAT
        # mapping open with keepalives) and WireGuard learns its address from that handshake.
        return None
    # Not under NAT but no publicIP: its node IP is its address (domains share an underlay).
    return (str(member.private_ip), port)


def _peer(local: Gateway, remote: Gateway, endpoint: tuple[str, int] | None, extra: list[IPNetwork],
          relays_for: tuple[str, ...], keepalive: int, standbys: list[Endpoint]) -> PeerPlan:
    active = remote.active_tunnel
    assert active is not None and active.public_key is not None
    # The standby candidates' own addresses stay on their standby peers (AllowedIPs cannot overlap).
    held_back = set()
    for ep in standbys:
        standby_member = remote.member(ep.node_name)
        assert standby_member is not None
        held_back.update(standby_member.prefixes)
    # A NAT mapping on the path expires without traffic; Raven keeps it open at 5 s.
    nat_on_path = local.under_nat or remote.under_nat
    return PeerPlan(
        public_key=active.public_key,
        endpoint=endpoint,
        allowed_ips=sorted_networks(p for p in (*remote.prefixes, *extra) if p not in held_back),
        persistent_keepalive=keepalive if nat_on_path else 0,
        gateway=remote.name,
        node_name=active.node_name,
        relays_for=relays_for,
    )


def _standby_peer(local: Gateway, remote: Gateway, ep: Endpoint, endpoint: tuple[str, int] | None,
                  keepalive: int) -> PeerPlan:
    """A remote candidate that is not active: a peer for its own node's prefixes only."""
    assert ep.public_key is not None
    member = remote.member(ep.node_name)
    assert member is not None
    return PeerPlan(
        public_key=ep.public_key,
        endpoint=endpoint,
        allowed_ips=member.prefixes,
        persistent_keepalive=keepalive if (local.under_nat or remote.under_nat) else 0,
        gateway=remote.name,
        node_name=ep.node_name,
        standby=True,
    )
