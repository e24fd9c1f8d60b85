"""load_cluster: YAML (or parsed dicts) -> parsed objects -> derived status -> validated :class:`Cluster`.

Tolerant, because one file serves every node: a stale or odd object is skipped
with a one-line warning naming its object and field (see :mod:`.problems`), and
the rest is loaded.  Only text that is not YAML at all is an error.  Steps run
in document order, so the same file always gives the same warnings.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from . import checks
from .documents import KubeObject, collect_objects, read_objects
from .election import derive_members, elect
from ...errors import ClusterError
from .gateway_parser import ParsedGateway, parse_gateway
from .model import Cluster, Gateway, Node, NodeInfo
from .node_parser import parse_node
from .problems import Problems


__all__ = ["load_cluster", "load_cluster_file", "load_cluster_objects"]


def load_cluster(text: str) -> Cluster:
    """Parse, derive and validate a cluster from YAML text.

    ``text`` holds ``raven.openyurt.io/v1beta1`` or ``v1alpha1`` Gateways and ``v1`` Nodes: several
    documents, a ``kind: List`` (as ``kubectl get gateways,nodes -o yaml`` prints), typed lists or a
    mix; other kinds are skipped. Where a Gateway has no ``status``, membership (the
    ``raven.openyurt.io/gateway`` label) and the active endpoints are derived as Raven's controller
    does (:mod:`.election`). A stale or malformed part is skipped with a warning
    (``Cluster.warnings``; a node's own broken part also in ``Cluster.node_errors``).

    Raises:
        ClusterError: the text is not YAML (one line, with line and column).
    """
    problems = Problems()
    return _load(read_objects(text, problems), problems)


def load_cluster_objects(objects: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> Cluster:
    """Like :func:`load_cluster`, from objects already parsed: what ``json.loads`` or
    ``yaml.safe_load``/``safe_load_all`` return for the same input: one dict (a ``kind: List``
    such as ``kubectl get gateways,nodes -o json`` prints) or an iterable of them.

    The dicts are only read; the Cluster shares nothing with them. Unusable entries are skipped
    with a warning (they are named ``object N`` when unnamed).

    Raises:
        ClusterError: ``objects`` is neither a dict nor an iterable of dicts.
    """
    if isinstance(objects, Mapping):
        objects = [objects]
    elif isinstance(objects, (str, bytes)) or not isinstance(objects, Iterable):
        raise ClusterError(f"cluster objects: expected a dict or a list of dicts, "
                           f"got {type(objects).__name__}")
    problems = Problems()
    return _load(collect_objects(objects, problems), problems)


def _load(objects: list[KubeObject], problems: Problems) -> Cluster:
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
    """Like :func:`load_cluster`, reading the UTF-8 file ``path``, or standard input when it is ``-``.

    Raises:
        ClusterError: the file cannot be read or is not UTF-8 (naming the file), or is not YAML.
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
