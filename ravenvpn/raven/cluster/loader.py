"""load_cluster: YAML -> parsed objects -> derived status -> validated :class:`Cluster`.

Nothing partial: every step either succeeds for all objects or raises the first
ClusterError, in document order, so the same file always reports the same error.
"""

from __future__ import annotations

import os
import sys

from . import checks
from .documents import read_objects
from .errors import ClusterError
from .gateway_parser import ParsedGateway, parse_gateway
from .model import Cluster, Gateway, Node, NodeInfo
from .node_parser import parse_node
from .election import derive_members, elect


def load_cluster(text: str) -> Cluster:
    objects = read_objects(text)
    nodes = [parse_node(o) for o in objects if o.kind == "Node"]
    parsed = [parse_gateway(o) for o in objects if o.kind == "Gateway"]
    checks.check_unique_names("Node", (n.name for n in nodes))
    checks.check_unique_names("Gateway", (g.name for g in parsed))

    by_name = {n.name: n for n in nodes}
    for gw in parsed:
        checks.check_gateway_spec(gw)
    checks.check_labels(nodes, {g.name for g in parsed})
    checks.check_claims(nodes, parsed)

    members: dict[str, tuple[NodeInfo, ...]] = {}
    for gw in parsed:
        if gw.status_nodes is not None:
            checks.check_written_status_nodes(gw, by_name)
            members[gw.name] = tuple(sorted(gw.status_nodes, key=lambda n: n.node_name))
        else:
            members[gw.name] = derive_members(gw, nodes)
        checks.check_endpoint_references(gw, members[gw.name], by_name)
    checks.check_unique_keys(parsed)
    checks.check_overlaps(members, {g.name for g in parsed if g.status_nodes is not None})

    gateways = [_build(gw, members[gw.name], by_name) for gw in parsed]
    return Cluster(
        gateways=tuple(sorted(gateways, key=lambda g: g.name)),
        nodes=tuple(sorted(nodes, key=lambda n: n.name)),
    )


def load_cluster_file(path: str | os.PathLike[str]) -> Cluster:
    if os.fspath(path) == "-":
        return load_cluster(sys.stdin.read())
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ClusterError(f"{os.fspath(path)}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ClusterError(f"{os.fspath(path)}: not UTF-8 text: {exc.reason}") from None
    return load_cluster(text)


def _build(gw: ParsedGateway, members: tuple[NodeInfo, ...], nodes: dict[str, Node]) -> Gateway:
    member_names = {m.node_name for m in members}

    def is_candidate(node_name: str) -> bool:
        node = nodes.get(node_name)
        return node is not None and node.ready and node_name in member_names

    return Gateway(
        name=gw.name,
        api_version=gw.api_version,
        endpoints=gw.endpoints,
        nodes=members,
        active_endpoints=elect(gw, is_candidate),
        tunnel_replicas=gw.tunnel_replicas,
        proxy_replicas=gw.proxy_replicas,
        expose_type=gw.expose_type,
        node_selector=gw.node_selector,
        status_derived=gw.status_nodes is None,
    )
