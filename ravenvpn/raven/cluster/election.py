"""Gateway status as yurt-manager's gateway-pickup controller would compute it.

* Members (status.nodes): the nodes labelled ``raven.openyurt.io/gateway=<name>``,
  with privateIP = InternalIP and subnets = pod CIDRs; a written status.nodes is
  taken as-is (after the consistency checks in :mod:`checks`).
* Election (status.activeEndpoints), per endpoint type: keep each current active
  endpoint while its node is a Ready member, then take Ready member endpoints in
  spec order until ``replicas`` are active.  Election always runs, with the written
  status as "current": marking the active node NotReady in the YAML is therefore
  exactly how an operator drives (and a test simulates) a failover.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from ...errors import ClusterError
from .gateway_parser import ParsedGateway, StatusEndpoint
from .model import PROXY, TUNNEL, Endpoint, Node, NodeInfo


def derive_members(gw: ParsedGateway, nodes: Iterable[Node]) -> tuple[NodeInfo, ...]:
    """``status.nodes`` for a gateway whose status was not written: the nodes labelled
    ``raven.openyurt.io/gateway=<gw>``, with privateIP = first InternalIP and subnets = pod CIDRs,
    sorted by node name (as yurt-manager's gateway-pickup controller computes them).

    Raises:
        ClusterError: a labelled node without an InternalIP.
    """
    members = []
    for node in nodes:
        if node.gateway_label != gw.name:
            continue
        if node.internal_ip is None:
            raise ClusterError(f"Node {node.name}: status.addresses: no InternalIP "
                               f"(needed as privateIP in Gateway {gw.name} status.nodes)")
        members.append(NodeInfo(node.name, node.internal_ip, node.pod_cidrs))
    return tuple(sorted(members, key=lambda n: n.node_name))


def elect(gw: ParsedGateway, is_candidate: Callable[[str], bool]) -> tuple[Endpoint, ...]:
    """``status.activeEndpoints``: the elected tunnel and proxy endpoints, sorted by node name like the
    controller does. ``is_candidate(node_name)`` says whether a node may be elected (a Ready member);
    see the module doc for the rule."""
    chosen = [*_elect_type(gw, TUNNEL, gw.tunnel_replicas, is_candidate),
              *_elect_type(gw, PROXY, gw.proxy_replicas, is_candidate)]
    return tuple(sorted(chosen, key=lambda ep: (ep.node_name, ep.type)))


def _elect_type(gw: ParsedGateway, etype: str, replicas: int,
                is_candidate: Callable[[str], bool]) -> list[Endpoint]:
    spec = [ep for ep in gw.endpoints if ep.type == etype]
    chosen: list[Endpoint] = []

    # 1. Stickiness: a still-competent current endpoint keeps its role, so a healthy
    #    gateway is never moved just because spec order would prefer another node.
    for current in gw.status_active:
        if len(chosen) == replicas:
            break
        ep = current.endpoint
        if ep.type != etype or not is_candidate(ep.node_name):
            continue
        match = next((s for s in spec if s.node_name == ep.node_name), None)
        if match is not None and all(c.node_name != match.node_name for c in chosen):
            chosen.append(_with_observations(match, current))

    # 2. Fill the remaining replicas in spec order.
    for ep in spec:
        if len(chosen) == replicas:
            break
        if is_candidate(ep.node_name) and all(c.node_name != ep.node_name for c in chosen):
            chosen.append(ep)
    return chosen


def _with_observations(spec_ep: Endpoint, current: StatusEndpoint) -> Endpoint:
    """The spec endpoint, updated with what the agents observed and wrote into the status.

    Raven agents fill in the discovered public address (and NAT mapping) of the
    active endpoint in the status; the spec may hold an older or empty value.
    Keys are configuration, not observation: a differing one is an error (checks).
    """
    seen = current.endpoint
    return replace(
        spec_ep,
        public_ip=seen.public_ip or spec_ep.public_ip,
        public_port=seen.public_port or spec_ep.public_port,
        nat_type=seen.nat_type or spec_ep.nat_type,
    )
