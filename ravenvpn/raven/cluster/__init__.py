"""Cluster input: Raven Gateway and core Node objects → a validated, immutable :class:`Cluster`.

The pipeline, one module per step: :mod:`.documents` (YAML/dicts → Kubernetes objects),
:mod:`.gateway_parser` and :mod:`.node_parser` (fields, one-line errors naming them),
:mod:`.election` (Raven's controller: membership and the elected active endpoints),
:mod:`.checks` (cross-object consistency), :mod:`.loader` (the whole pipeline), and
:mod:`.model` (the result).
"""
from __future__ import annotations

from ...errors import ClusterError
from .loader import load_cluster, load_cluster_file, load_cluster_objects
from .model import GATEWAY_LABEL, PROXY, TUNNEL, Cluster, Endpoint, Gateway, Node, NodeInfo

__all__ = [
    "load_cluster", "load_cluster_file", "load_cluster_objects", "Cluster", "Gateway", "Endpoint", "Node", "NodeInfo",
    "ClusterError", "GATEWAY_LABEL", "TUNNEL", "PROXY",
]
