"""Which gateway talks to which, and through whom.

Direct WireGuard peers need one side reachable.  Two gateways both under NAT cannot
reach each other, so (like Raven) their traffic goes through a *relay* gateway: the
edge adds the other NAT'd gateways' prefixes to the relay peer's AllowedIPs, and the
relay, which peers with everybody, forwards between its peers.

Relay choice, as Raven's ``FindCentralGwFn``: among gateways with an active tunnel
endpoint and not under NAT, the one whose active endpoint's node name sorts last.
Every node computes the same answer from the same cluster, with no coordination.
Raven's optional direct edge<->edge hole punching (by natType) is not attempted.

Failover (:mod:`.failover`): every other candidate of a remote gateway is a peer too, a *standby
peer* whose AllowedIPs hold only its own node's prefixes (node IP and pod subnets): a hot standby
sends its own node's traffic through its own tunnel, so both directions take the same path. A
candidate that takes over is then already known (its handshake is accepted, its CLAIM reaches us
through the tunnel), and moving the rest of the domain's prefixes to it is a change of AllowedIPs,
decided by the liveness view, never by a handshake alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..cluster.addresses import IPNetwork, sorted_networks
from ..cluster.model import Cluster, Endpoint, Gateway
from .failover import candidates
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
    return max(candidates, key=lambda gw: gw.active_tunnel.node_name)  # type: ignore[union-attr]


def plan_peers(cluster: Cluster, local: Gateway, keepalive: int, standby_peers: bool = False) -> PeerSet:
    """The WireGuard peers of ``local``'s active node (also the routes its members need)."""
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
        elif not (local.under_nat and remote.under_nat):
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
        peers.append(_peer(local, remote, extra, tuple(g.name for g in through), keepalive, standbys))
        peers.extend(_standby_peer(local, remote, ep, keepalive) for ep in standbys)

    nat_gateways = [g for g in cluster.gateways if g.active_tunnel and g.under_nat]
    relaying = relay is not None and relay.name == local.name and len(nat_gateways) >= 2
    return PeerSet(tuple(sorted(peers, key=lambda p: (p.gateway, p.standby, p.node_name))), relay, relaying,
                   tuple(warnings))


def _peer(local: Gateway, remote: Gateway, extra: list[IPNetwork],
          relays_for: tuple[str, ...], keepalive: int, standbys: list[Endpoint]) -> PeerPlan:
    active = remote.active_tunnel
    assert active is not None and active.public_key is not None
    # The standby candidates' own addresses stay on their standby peers (AllowedIPs cannot overlap).
    held_back = set()
    for ep in standbys:
        standby_member = remote.member(ep.node_name)
        assert standby_member is not None
        held_back.update(standby_member.prefixes)
    member = remote.member(active.node_name)
    assert member is not None  # the loader checked endpoint nodes are members
    # No public IP: assume one underlay for all domains (a lab) and use the private IP.
    # If the remote is really behind NAT, WireGuard roaming corrects it when it calls in.
    host = active.public_ip or member.private_ip
    port = active.public_port or active.port
    # A NAT mapping on the path expires without traffic; Raven keeps it open at 5 s.
    nat_on_path = local.under_nat or remote.under_nat
    return PeerPlan(
        public_key=active.public_key,
        endpoint=(str(host), port),
        allowed_ips=sorted_networks(p for p in (*remote.prefixes, *extra) if p not in held_back),
        persistent_keepalive=keepalive if nat_on_path else 0,
        gateway=remote.name,
        node_name=active.node_name,
        relays_for=relays_for,
    )


def _standby_peer(local: Gateway, remote: Gateway, ep: Endpoint, keepalive: int) -> PeerPlan:
    """A remote candidate that is not active: a peer for its own node's prefixes only."""
    assert ep.public_key is not None
    member = remote.member(ep.node_name)
    assert member is not None
    return PeerPlan(
        public_key=ep.public_key,
        endpoint=(str(ep.public_ip or member.private_ip), ep.public_port or ep.port),
        allowed_ips=member.prefixes,
        persistent_keepalive=keepalive if (local.under_nat or remote.under_nat) else 0,
        gateway=remote.name,
        node_name=ep.node_name,
        standby=True,
    )
