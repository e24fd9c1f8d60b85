"""Planning: one node's desired state (:class:`NodePlan`), computed from the cluster alone by :func:`plan`.

Pure and deterministic; :mod:`.topology` chooses peers and the relay, :mod:`.routing` routes, rules and
sysctls, :mod:`.nodeplan` holds the result's types.
"""
from __future__ import annotations

from .nodeplan import NodePlan, PeerPlan, Role, Route, Rule
from .planner import (
    DEFAULT_INTERFACE, GATEWAY_TABLE, KEEPALIVE, MEMBER_TABLE, RULE_PRIORITY, WIREGUARD_OVERHEAD, plan,
)

__all__ = ["plan", "NodePlan", "PeerPlan", "Role", "Route", "Rule", "DEFAULT_INTERFACE", "GATEWAY_TABLE",
           "MEMBER_TABLE", "RULE_PRIORITY", "KEEPALIVE", "WIREGUARD_OVERHEAD"]
