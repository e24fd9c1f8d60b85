"""load_cluster: YAML (or parsed dicts) -> parsed objects -> derived status -> validated :class:`Cluster`.

Nothing partial: every step either succeeds for all objects or raises the first
ClusterError, in document order, so the same file always reports the same error.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from . import checks
from .documents import KubeObject, collect_objects, read_objects
from ...errors import ClusterError
from .gateway_parser import ParsedGateway, parse_gateway
from .model import Cluster, Gateway, Node, NodeInfo
from .node_parser import parse_node
from .election import derive_members, elect


__all__ = ["load_cluster", "load_cluster_file", "load_cluster_objects"]


def load_cluster(text: str) -> Cluster:
    """Parse, derive and validate a cluster from YAML text.

    ``text`` holds ``raven.openyurt.io/v1beta1`` or ``v1alpha1`` Gateways and ``v1`` Nodes: several
    documents, a ``kind: List`` (as ``kubectl get gateways,nodes -o yaml`` prints), typed lists or a
    mix; other kinds are skipped. Where a Gateway has no ``status``, membership (the
    ``raven.openyurt.io/gateway`` label) and the active endpoints are derived as Raven's controller
    does (:mod:`.election`).

    Raises:
        ClusterError: the first problem, in document order, as one line naming object and field.
    """
    return _load(read_objects(text))


def load_cluster_objects(objects: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> Cluster:
    """Like :func:`load_cluster`, from objects already parsed: what ``json.loads`` or
    ``yaml.safe_load``/``safe_load_all`` return for the same input: one dict (a ``kind: List``
    such as ``kubectl get gateways,nodes -o json`` prints) or an iterable of them.

    The dicts are only read; the Cluster shares nothing with them.

    Raises:
        ClusterError: the first problem in order (objects are named ``object N`` when unnamed), or
            ``objects`` is neither a dict nor an iterable of dicts.
    """
    if isinstance(objects, Mapping):
        objects = [objects]
    elif isinstance(objects, (str, bytes)) or not isinstance(objects, Iterable):
        raise ClusterError(f"cluster objects: expected a dict or a list of dicts, "
                           f"got {type(objects).__name__}")
    return _load(collect_objects(objects))


def _load(objects: list[KubeObject]) -> Cluster:
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
    """Like :func:`load_cluster`, reading the UTF-8 file ``path``, or standard input when it is ``-``.

    Raises:
        ClusterError: the file cannot be read or is not UTF-8 (naming the file), or the cluster in it
            is inconsistent.
    """
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
