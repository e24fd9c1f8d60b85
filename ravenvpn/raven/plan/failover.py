"""Liveness as an input of planning: who may be active (the file) meets who is (liveness).

Pure, like :func:`~.planner.plan`: :func:`liveness_config` reads from the cluster what the liveness
protocol needs (the candidates in preference order, the domain's node addresses, the remote
gateways' candidates), and :func:`apply_liveness` returns the cluster with each Gateway's elected
tunnel endpoint replaced by the one liveness reports, where that is allowed:

* only a *candidate* can be made active: a tunnel endpoint with a key whose node is a Ready member
  in the file. A node the file marks NotReady never becomes active, whatever liveness says;
* the local node is the active gateway of its domain only when its own liveness says it holds the
  role (a starting node listens first, see :data:`~ravenvpn.raven.liveness.machine.SETTLE`), even
  when the file elects it;
* a gateway liveness says nothing about keeps the file's election.
"""

from __future__ import annotations

from dataclasses import replace

from ..cluster.model import TUNNEL, Cluster, Endpoint, Gateway
from ..liveness.machine import Candidate, DomainConfig, LivenessView
from ..liveness.wire import LIVENESS_PORT

__all__ = ["candidates", "liveness_config", "apply_liveness"]


def candidates(cluster: Cluster, gw: Gateway) -> tuple[Endpoint, ...]:
    """The tunnel endpoints of ``gw`` that may be active, in preference order.

    Ready member nodes with a public key; the file's elected endpoint (``status.activeEndpoints``)
    first — preferred, not binding — then the others in ``spec.endpoints`` order.
    """
    ready = []
    for ep in gw.tunnel_endpoints:
        node = cluster.node(ep.node_name)
        if (node is not None and node.ready and gw.member(ep.node_name) is not None
                and ep.public_key is not None and all(r.node_name != ep.node_name for r in ready)):
            ready.append(ep)
    preferred = gw.active_tunnel
    first = [ep for ep in ready if preferred is not None and ep.node_name == preferred.node_name]
    return (*first, *(ep for ep in ready if ep not in first))


def _as_candidates(cluster: Cluster, gw: Gateway) -> tuple[Candidate, ...]:
    out = []
    for ep in candidates(cluster, gw):
        member = gw.member(ep.node_name)
        assert member is not None and ep.public_key is not None
        out.append(Candidate(ep.node_name, str(member.private_ip), ep.public_key))
    return tuple(out)


def liveness_config(cluster: Cluster, node_name: str, port: int = LIVENESS_PORT) -> DomainConfig | None:
    """What the liveness protocol of ``node_name`` needs from the file; None for a node in no gateway."""
    gw = cluster.gateway_of(node_name)
    if gw is None:
        return None
    remote = tuple((other.name, _as_candidates(cluster, other)) for other in cluster.gateways
                   if other.name != gw.name)
    me = gw.member(node_name)
    assert me is not None
    return DomainConfig(gateway=gw.name, local_node=node_name, candidates=_as_candidates(cluster, gw),
                        watchers=frozenset(str(n.private_ip) for n in gw.nodes), remote=remote, port=port,
                        address=str(me.private_ip))


def apply_liveness(cluster: Cluster, node_name: str, view: LivenessView) -> Cluster:
    """``cluster`` with the active tunnel endpoints that ``view`` reports (module docstring rules)."""
    local_gw = cluster.gateway_of(node_name)
    said = dict(view.active)
    gateways = []
    for gw in cluster.gateways:
        allowed = {ep.node_name: ep for ep in candidates(cluster, gw)}
        current = gw.active_tunnel
        if local_gw is not None and gw.name == local_gw.name:
            if view.local_active and node_name in allowed:
                chosen: Endpoint | None = allowed[node_name]
            elif said.get(gw.name) in allowed and said.get(gw.name) != node_name:
                chosen = allowed[said[gw.name]]   # type: ignore[index]
            elif gw.name in said or (current is not None and current.node_name == node_name):
                chosen = None                     # nobody known yet, and not us before we claimed
            else:
                chosen = current
        elif said.get(gw.name) in allowed:
            chosen = allowed[said[gw.name]]       # type: ignore[index]
        else:
            chosen = current
        if chosen is not None and current is not None and chosen.node_name == current.node_name:
            chosen = current                      # keep what agents observed into the status
        if chosen != current:
            gw = _with_active_tunnel(gw, chosen)
        gateways.append(gw)
    return replace(cluster, gateways=tuple(gateways))


def _with_active_tunnel(gw: Gateway, tunnel: Endpoint | None) -> Gateway:
    others = tuple(ep for ep in gw.active_endpoints if ep.type != TUNNEL)
    chosen = (tunnel,) if tunnel is not None else ()
    return replace(gw, active_endpoints=tuple(sorted((*others, *chosen), key=lambda ep: (ep.node_name, ep.type))))
