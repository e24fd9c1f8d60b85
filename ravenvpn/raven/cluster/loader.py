"""load_cluster: YAML -> parsed objects -> derived status -> validated :class:`Cluster`.

Tolerant, because one file serves every node: a stale or odd object is skipped
with a one-line warning naming its object and field (see :mod:`.problems`), and
the rest is loaded.  Only text that is not YAML at all is an error.  Steps run
in document order, so the same file always gives the same warnings.
"""

from __future__ import annotations

import os
import sys

from . import checks
from .documents import read_objects
from .election import derive_members, elect
from .errors import ClusterError
from .gateway_parser import ParsedGateway, parse_gateway
from .model import Cluster, Gateway, Node, NodeInfo
from .node_parser import parse_node
from .problems import Problems


def load_cluster(text: str) -> Cluster:
    """The cluster described by ``text`` (YAML, as :mod:`.documents` accepts it).

    Raises:
        ClusterError: the text is not YAML (one line, with the line number).
    """
    problems = Problems()
    objects = read_objects(text, problems)
    nodes = [n for o in objects if o.kind == "Node" if (n := parse_node(o, problems)) is not None]
    parsed = [g for o in objects if o.kind == "Gateway" if (g := parse_gateway(o, problems)) is not None]
    nodes = checks.unique_names("Node", nodes, problems)
    parsed = checks.unique_names("Gateway", parsed, problems)

    parsed = [checks.clean_gateway_spec(gw, problems) for gw in parsed]
    nodes = checks.known_labels(nodes, {g.name for g in parsed}, problems)
    parsed = checks.settle_claims(nodes, parsed, problems)
    by_name = {n.name: n for n in nodes}

    members: dict[str, tuple[NodeInfo, ...]] = {}
    cleaned = []
    for gw in parsed:
        if gw.status_nodes is not None:
            members[gw.name] = checks.written_members(gw, by_name, problems)
        else:
            members[gw.name] = derive_members(gw, nodes, problems)
        cleaned.append(checks.clean_endpoint_references(gw, members[gw.name], by_name, problems))
    parsed = checks.unique_keys(cleaned, problems)
    members = checks.drop_overlaps(members, {g.name for g in parsed if g.status_nodes is not None}, problems)

    gateways = [_build(gw, members[gw.name], by_name) for gw in parsed]
    return Cluster(
        gateways=tuple(sorted(gateways, key=lambda g: g.name)),
        nodes=tuple(sorted(nodes, key=lambda n: n.name)),
        warnings=tuple(sorted(set(problems.warnings))),
        node_errors=tuple(sorted(problems.node_errors.items())),
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
