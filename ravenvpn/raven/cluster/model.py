"""The cluster as Raven sees it: Gateways, their Endpoints and member Nodes.

Everything here is an immutable, already-validated snapshot.  A :class:`Cluster`
only comes out of :func:`~ravenvpn.raven.cluster.loader.load_cluster` (and its
siblings in :mod:`.loader`), which either return a fully consistent cluster or
raise a one-line :class:`~ravenvpn.errors.ClusterError`.  This module imports
nothing that builds these classes: the loader depends on the model, never the
other way round.

Field names follow Raven's ``raven.openyurt.io/v1beta1`` Gateway API in snake_case.
v1alpha1 objects are converted the way OpenYurt's conversion webhook does it: every
endpoint is a ``tunnel`` endpoint on port 4500 and ``tunnelConfig.Replicas`` is 1.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Final

from .addresses import IPAddress, IPNetwork, host_network, sorted_networks

__all__ = [
    "Endpoint", "NodeInfo", "Node", "Gateway", "Cluster",
    "GATEWAY_LABEL", "TUNNEL", "PROXY", "DEFAULT_TUNNEL_PORT", "DEFAULT_PROXY_PORT",
]

GATEWAY_LABEL: Final = "raven.openyurt.io/gateway"
TUNNEL: Final = "tunnel"
PROXY: Final = "proxy"
DEFAULT_TUNNEL_PORT: Final = 4500   # UDP, WireGuard (Raven's VPN port)
DEFAULT_PROXY_PORT: Final = 10262   # TCP, Raven's L7 proxy


@dataclass(frozen=True)
class Endpoint:
    """One entry of ``spec.endpoints`` (or an elected copy of it in the status)."""

    node_name: str
    type: str                        # TUNNEL or PROXY
    port: int
    under_nat: bool = False
    nat_type: str = ""
    public_ip: IPAddress | None = None
    public_port: int | None = None   # NAT-mapped port; None when not known
    config: tuple[tuple[str, str], ...] = ()
    public_key: bytes | None = None  # decoded config.publicKey (32 bytes) if present
    index: int = 0                   # position in spec.endpoints, for error messages

    @property
    def public_key_b64(self) -> str | None:
        """``config.publicKey`` as base64 text, None when the endpoint has none."""
        return None if self.public_key is None else base64.b64encode(self.public_key).decode()


@dataclass(frozen=True)
class NodeInfo:
    """One entry of ``status.nodes``: a node managed by a gateway."""

    node_name: str
    private_ip: IPAddress
    subnets: tuple[IPNetwork, ...] = ()

    @property
    def prefixes(self) -> tuple[IPNetwork, ...]:
        """What the rest of the cluster must route to this node: pod subnets and its own IP."""
        return sorted_networks((*self.subnets, host_network(self.private_ip)))


@dataclass(frozen=True)
class Node:
    """The parts of a core/v1 Node that Raven uses."""

    name: str
    gateway_label: str | None = None        # metadata.labels[raven.openyurt.io/gateway]
    internal_ip: IPAddress | None = None    # first status.addresses[type=InternalIP]
    pod_cidrs: tuple[IPNetwork, ...] = ()   # spec.podCIDRs, else spec.podCIDR
    ready: bool = False                     # status.conditions[type=Ready].status == "True"


@dataclass(frozen=True)
class Gateway:
    """A network domain: its candidate endpoints, members and elected endpoints."""

    name: str
    api_version: str
    endpoints: tuple[Endpoint, ...]
    nodes: tuple[NodeInfo, ...]              # effective status.nodes, sorted by node name
    active_endpoints: tuple[Endpoint, ...]   # effective status.activeEndpoints
    tunnel_replicas: int = 1
    proxy_replicas: int = 1
    expose_type: str = ""
    node_selector: tuple[tuple[str, str], ...] = ()  # informational; membership is by label
    status_derived: bool = False             # status.nodes computed from Node objects

    @property
    def under_nat(self) -> bool:
        """``spec.endpoints[].underNAT``: the domain is behind NAT (the loader guarantees that all
        endpoints of a gateway agree)."""
        return any(ep.under_nat for ep in self.endpoints)

    @property
    def active_tunnel(self) -> Endpoint | None:
        """The endpoint whose node terminates this domain's WireGuard tunnels, if any."""
        return next((ep for ep in self.active_endpoints if ep.type == TUNNEL), None)

    @property
    def tunnel_endpoints(self) -> tuple[Endpoint, ...]:
        """The candidates for terminating tunnels: ``spec.endpoints`` of type tunnel, in spec order."""
        return tuple(ep for ep in self.endpoints if ep.type == TUNNEL)

    def member(self, node_name: str) -> NodeInfo | None:
        """The ``status.nodes`` entry of ``node_name``, None if it is no member."""
        return next((n for n in self.nodes if n.node_name == node_name), None)

    @property
    def prefixes(self) -> tuple[IPNetwork, ...]:
        """Every prefix that lives behind this gateway: member pod subnets and node IPs."""
        return sorted_networks(p for n in self.nodes for p in n.prefixes)


@dataclass(frozen=True)
class Cluster:
    """Every Gateway and Node of the input, validated together; immutable, comparable, hashable."""

    gateways: tuple[Gateway, ...]   # sorted by name
    nodes: tuple[Node, ...]         # sorted by name

    def gateway(self, name: str) -> Gateway | None:
        """The Gateway called ``name``, if any."""
        return next((gw for gw in self.gateways if gw.name == name), None)

    def node(self, name: str) -> Node | None:
        """The Node called ``name``, if any."""
        return next((n for n in self.nodes if n.name == name), None)

    def gateway_of(self, node_name: str) -> Gateway | None:
        """The gateway whose status.nodes contains the node (at most one, by validation)."""
        return next((gw for gw in self.gateways if gw.member(node_name)), None)

