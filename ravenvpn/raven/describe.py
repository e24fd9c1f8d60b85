"""describe(plan): a human summary of a NodePlan, for debugging and tests (no CLI command prints it yet)."""

from __future__ import annotations

import base64

from .nodeplan import NodePlan, Role, Route, Rule


def describe(plan: NodePlan) -> str:
    """In the spirit of ``wg show`` followed by ``ip route``/``ip rule``/``sysctl``."""
    lines = [_headline(plan)]
    if plan.public_key is not None:
        lines.append(f"  public key: {_b64(plan.public_key)}")
    if plan.role is Role.ACTIVE_GATEWAY:
        lines.append(f"  interface: {plan.interface}, listening on UDP {plan.listen_port}, mtu {plan.mtu}")
        if plan.relay_gateway:
            relay = "this gateway" if plan.relay else plan.relay_gateway
            lines.append(f"  relay for NAT<->NAT traffic: {relay}"
                         + (" (forwards between its peers)" if plan.relay else ""))
    for peer in plan.peers:
        endpoint = f"{peer.endpoint[0]}:{peer.endpoint[1]}" if peer.endpoint else "(none: waits for the peer)"
        lines.append(f"  peer {peer.gateway} ({peer.node_name}) key {peer.public_key_b64}")
        lines.append(f"    endpoint: {endpoint}")
        lines.append(f"    allowed ips: {', '.join(str(p) for p in peer.allowed_ips)}")
        if peer.persistent_keepalive:
            lines.append(f"    persistent keepalive: every {peer.persistent_keepalive} seconds")
        if peer.relays_for:
            lines.append(f"    relays for: {', '.join(peer.relays_for)}")
    if plan.rules:
        lines.append("  rules:")
        lines += [f"    {_rule(r)}" for r in plan.rules]
    if plan.routes:
        lines.append("  routes:")
        lines += [f"    {_route(r)}" for r in plan.routes]
    if plan.sysctls:
        lines.append("  sysctls:")
        lines += [f"    {key} = {value}" for key, value in plan.sysctls]
    lines += [f"  warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def _headline(plan: NodePlan) -> str:
    if plan.role is Role.NONE:
        return f"node {plan.node_name}: none (in no gateway; nothing to do)"
    return f"node {plan.node_name}: {plan.role.value} of {plan.gateway}"


def _route(route: Route) -> str:
    parts = [str(route.dst)]
    if route.gateway is not None:
        parts.append(f"via {route.gateway}")
    if route.dev is not None:
        parts.append(f"dev {route.dev}")
    parts.append(f"table {route.table}")
    if route.src is not None:
        parts.append(f"src {route.src}")
    if route.mtu is not None:
        parts.append(f"mtu {route.mtu}")
    return " ".join(parts)


def _rule(rule: Rule) -> str:
    match = f"ipproto {rule.ip_proto} sport {rule.sport}" if rule.ip_proto else "from all"
    table = "main" if rule.table == 254 else str(rule.table)
    return f"{'-6 ' if rule.family == 6 else ''}priority {rule.priority} {match} lookup {table}"


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()
