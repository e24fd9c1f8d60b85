"""Cross-object consistency: each check keeps what holds and skips what is broken, with a warning.

Field-level problems (bad CIDR, port, key encoding) are caught while parsing;
what is checked here needs several objects at once.  The rule everywhere: skip
exactly the stale or contradictory part (an entry, an endpoint, a prefix), keep
the first of two claims (spec over status, label over a written status, document
order between equals), and name the object and field in a one-line warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from .addresses import IPNetwork, host_network
from .gateway_parser import ParsedGateway
from .model import GATEWAY_LABEL, TUNNEL, Endpoint, Node, NodeInfo
from .problems import Problems

LABEL_FIELD = f"metadata.labels[{GATEWAY_LABEL}]"
Named = TypeVar("Named", Node, ParsedGateway)


def unique_names(kind: str, objects: Iterable[Named], problems: Problems) -> list[Named]:
    """The first object of each name; a later one is skipped (and a Node's own plan fails)."""
    seen: set[str] = set()
    kept = []
    for obj in objects:
        if obj.name in seen:
            problems.skip(f"{kind} {obj.name}: metadata.name: defined twice", "the first one used",
                          node=obj.name if kind == "Node" else None)
            continue
        seen.add(obj.name)
        kept.append(obj)
    return kept


def clean_gateway_spec(gw: ParsedGateway, problems: Problems) -> ParsedGateway:
    """One Gateway's ``spec`` on its own: a duplicate (node, type) endpoint is skipped; endpoints
    disagreeing on ``underNAT`` make the gateway under NAT; an ``exposeType`` on a gateway under NAT
    is ignored; more than one tunnel replica is taken as one."""
    first: dict[tuple[str, str], int] = {}
    endpoints: list[Endpoint] = []
    for ep in gw.endpoints:
        key = (ep.node_name, ep.type)
        if key in first:
            problems.skip(f"{gw.label}: spec.endpoints[{ep.index}]: duplicate of spec.endpoints[{first[key]}] "
                          f"(node {ep.node_name}, type {ep.type})", "endpoint skipped")
            continue
        first[key] = ep.index
        endpoints.append(ep)
    nat = [ep for ep in endpoints if ep.under_nat]
    if nat and len(nat) < len(endpoints):
        # Taking the gateway as under NAT is safe either way: its peers then wait for it to
        # call in and NAT<->NAT traffic is relayed; the other guess breaks a NAT'd gateway.
        head = nat[0]
        other = next(ep for ep in endpoints if not ep.under_nat)
        problems.skip(f"{gw.label}: spec.endpoints[{other.index}].underNAT: false, but "
                      f"spec.endpoints[{head.index}].underNAT is true (all endpoints of a gateway share "
                      "underNAT)", "the gateway is taken as under NAT")
        endpoints = [replace(ep, under_nat=True) for ep in endpoints]
    gw = replace(gw, endpoints=tuple(endpoints))
    if gw.expose_type and endpoints and endpoints[0].under_nat:
        problems.skip(f"{gw.label}: spec.exposeType: {gw.expose_type!r}, but spec.endpoints[{endpoints[0].index}]"
                      ".underNAT is true (an exposed gateway is not under NAT)", "exposeType ignored")
        gw = replace(gw, expose_type="")
    if gw.tunnel_replicas > 1:
        # Two active tunnel nodes would be two WireGuard peers for the same AllowedIPs
        # on every remote gateway, which WireGuard's cryptokey routing cannot express.
        problems.skip(f"{gw.label}: spec.tunnelConfig.Replicas: {gw.tunnel_replicas} not supported "
                      "(at most 1 active tunnel endpoint per gateway)", "1 used")
        gw = replace(gw, tunnel_replicas=1)
    return gw


def known_labels(nodes: Iterable[Node], gateway_names: set[str], problems: Problems) -> list[Node]:
    """A label naming no Gateway (deleted, or not created yet) puts its node in no gateway."""
    out = []
    for node in nodes:
        if node.gateway_label is not None and node.gateway_label not in gateway_names:
            problems.skip(f"Node {node.name}: {LABEL_FIELD}: unknown Gateway {node.gateway_label!r}",
                          "the node is in no gateway")
            node = replace(node, gateway_label=None)
        out.append(node)
    return out


def settle_claims(nodes: Iterable[Node], gateways: Sequence[ParsedGateway],
                  problems: Problems) -> list[ParsedGateway]:
    """A node belongs to one gateway: its label wins over a written status.nodes, and the
    first gateway by name wins between two written statuses.  Losing entries are dropped."""
    owner: dict[str, str] = {n.name: n.gateway_label for n in nodes if n.gateway_label is not None}
    for gw in sorted(gateways, key=lambda g: g.name):
        for info in gw.status_nodes or ():
            owner.setdefault(info.node_name, gw.name)
    out = []
    for gw in gateways:
        if gw.status_nodes is not None:
            kept = []
            for i, info in enumerate(gw.status_nodes):
                claimed = owner.get(info.node_name, gw.name)
                if claimed != gw.name:
                    how = LABEL_FIELD if any(n.name == info.node_name and n.gateway_label == claimed
                                             for n in nodes) else "status.nodes"
                    problems.skip(f"{gw.label}: status.nodes[{i}].nodeName: Node {info.node_name} is "
                                  f"claimed by Gateway {claimed} ({how})", "entry skipped")
                    continue
                kept.append(info)
            gw = replace(gw, status_nodes=tuple(kept))
        out.append(gw)
    return out


def written_members(gw: ParsedGateway, nodes: Mapping[str, Node], problems: Problems) -> tuple[NodeInfo, ...]:
    """A written status.nodes, reconciled with the Node objects (which are newer: the
    controller writes the status from them and may lag behind a deletion or a label)."""
    assert gw.status_nodes is not None
    members: dict[str, NodeInfo] = {}
    for i, info in enumerate(gw.status_nodes):
        where = f"{gw.label}: status.nodes[{i}]"
        node = nodes.get(info.node_name)
        if node is None:
            problems.skip(f"{where}.nodeName: unknown Node {info.node_name!r}", "entry skipped")
            continue
        if info.node_name in members:
            problems.skip(f"{where}.nodeName: Node {info.node_name!r} listed twice", "entry skipped")
            continue
        if node.internal_ip is not None and node.internal_ip != info.private_ip:
            problems.skip(f"{where}.privateIP: {info.private_ip} differs from Node {node.name} InternalIP "
                          f"{node.internal_ip}", "the InternalIP used")
            info = replace(info, private_ip=node.internal_ip)
        members[info.node_name] = info
    for node in nodes.values():
        if node.gateway_label == gw.name and node.name not in members:
            if node.internal_ip is None:
                problems.skip(f"Node {node.name}: status.addresses: no InternalIP (needed as privateIP "
                              f"in Gateway {gw.name} status.nodes)", "not a member", node=node.name)
                continue
            problems.skip(f"{gw.label}: status.nodes: does not list Node {node.name} "
                          f"(labelled {GATEWAY_LABEL}={gw.name})", "added from the Node")
            members[node.name] = NodeInfo(node.name, node.internal_ip, node.pod_cidrs)
    return tuple(sorted(members.values(), key=lambda n: n.node_name))


def clean_endpoint_references(gw: ParsedGateway, members: Sequence[NodeInfo], nodes: Mapping[str, Node],
                              problems: Problems) -> ParsedGateway:
    """Endpoints of a deleted node or of a non-member are skipped; a status entry that no
    longer matches the spec is ignored (election then picks from the spec)."""
    member_names = {m.node_name for m in members}
    how = "not in status.nodes" if gw.status_nodes is not None else f"no {GATEWAY_LABEL}={gw.name} label"
    endpoints = []
    for ep in gw.endpoints:
        field = f"{gw.label}: spec.endpoints[{ep.index}].nodeName"
        if ep.node_name not in nodes:
            problems.skip(f"{field}: unknown Node {ep.node_name!r}", "endpoint skipped")
        elif ep.node_name not in member_names:
            problems.skip(f"{field}: Node {ep.node_name!r} is not a member of this gateway ({how})",
                          "endpoint skipped")
        else:
            endpoints.append(ep)
    active = []
    for current in gw.status_active:
        ep = current.endpoint
        spec = next((s for s in endpoints if (s.node_name, s.type) == (ep.node_name, ep.type)), None)
        if ep.node_name not in nodes:
            problems.skip(f"{gw.label}: {current.path}.nodeName: unknown Node {ep.node_name!r}", "entry ignored")
        elif spec is None:
            problems.skip(f"{gw.label}: {current.path}: no {ep.type} endpoint for node {ep.node_name!r} "
                          "in spec.endpoints", "entry ignored")
        elif ep.public_key is not None and ep.public_key != spec.public_key:
            problems.skip(f"{gw.label}: {current.path}.config.publicKey: differs from "
                          f"spec.endpoints[{spec.index}].config.publicKey", "entry ignored")
        else:
            active.append(current)
    return replace(gw, endpoints=tuple(endpoints), status_active=tuple(active))


def unique_keys(gateways: Sequence[ParsedGateway], problems: Problems) -> list[ParsedGateway]:
    """WireGuard identifies peers by public key; two nodes sharing one is a copy-paste slip.
    The first endpoint (document order) keeps the key; the other node cannot plan."""
    owner: dict[bytes, tuple[str, int, str]] = {}
    out = []
    for gw in gateways:
        endpoints = []
        for ep in gw.endpoints:
            if ep.type == TUNNEL and ep.public_key is not None:
                if ep.public_key in owner:
                    other_gw, other_index, other_node = owner[ep.public_key]
                    problems.skip(f"{gw.label}: spec.endpoints[{ep.index}].config.publicKey: same key as Gateway "
                                  f"{other_gw} spec.endpoints[{other_index}] (node {other_node})",
                                  "endpoint skipped", node=ep.node_name)
                    continue
                owner[ep.public_key] = (gw.name, ep.index, ep.node_name)
            endpoints.append(ep)
        out.append(replace(gw, endpoints=tuple(endpoints)))
    return out


@dataclass(frozen=True)
class _Claim:
    prefix: IPNetwork
    gateway: str
    node: str
    obj: str     # "Gateway gw-hangzhou" for a written status, else "Node hz-1"
    field: str   # "status.nodes[0].subnets[1]", "spec.podCIDR", ...
    is_ip: bool  # the node's own address, not a pod subnet

    @property
    def described(self) -> str:
        owner = "" if self.obj == f"Gateway {self.gateway}" else f" (Gateway {self.gateway})"
        return f"{self.obj} {self.field}{owner}"


def drop_overlaps(members: Mapping[str, tuple[NodeInfo, ...]], written: set[str],
                  problems: Problems) -> dict[str, tuple[NodeInfo, ...]]:
    """No address may live behind two gateways: routes and AllowedIPs would be ambiguous.

    ``members`` maps gateway name to its members; ``written`` names the gateways
    whose status.nodes came from the file (warnings then point into the Gateway).
    Which prefix is the broken one is a guess; the guess that spares the most: the
    prefix overlapping the most prefixes of other gateways is dropped first (a stray
    10.244.0.0/16 goes, not every node's /24 inside it); on a tie the more specific
    one (a /25 or a node IP inside another domain's pod subnet), then the gateway
    whose name sorts last.  A dropped prefix is not routed to its node.
    """
    claims = sorted(
        (c for gw, infos in members.items() for c in _claims(gw, infos, gw in written)),
        key=lambda c: (c.prefix.version, int(c.prefix.network_address), c.prefix.prefixlen, c.gateway),
    )
    partners: dict[_Claim, list[_Claim]] = {}
    # Interval sweep: after sorting by start, only later prefixes starting inside
    # this one can overlap it, so the inner loop stops early.
    for i, a in enumerate(claims):
        end = int(a.prefix.broadcast_address)
        for b in claims[i + 1:]:
            if b.prefix.version != a.prefix.version or int(b.prefix.network_address) > end:
                break
            if b.gateway != a.gateway:
                partners.setdefault(a, []).append(b)
                partners.setdefault(b, []).append(a)
    dropped: set[_Claim] = set()
    while partners:
        worst = max(partners, key=lambda c: (len(partners[c]), c.prefix.prefixlen, c.gateway, c.field))
        other = partners[worst][0]
        problems.skip(f"{worst.obj}: {worst.field}: {worst.prefix} overlaps {other.prefix} of {other.described}",
                      "not routed")
        dropped.add(worst)
        for c in partners.pop(worst):
            partners[c].remove(worst)
            if not partners[c]:
                del partners[c]
    if not dropped:
        return dict(members)
    out = {}
    for gw, infos in members.items():
        gone = {(d.node, d.prefix, d.is_ip) for d in dropped if d.gateway == gw}
        out[gw] = tuple(replace(info, subnets=tuple(s for s in info.subnets if (info.node_name, s, False) not in gone),
                                ip_routed=(info.node_name, host_network(info.private_ip), True) not in gone)
                        for info in infos)
    return out


def _claims(gw: str, infos: Sequence[NodeInfo], written: bool) -> list[_Claim]:
    out = []
    for i, info in enumerate(infos):
        ip = host_network(info.private_ip)
        if written:
            obj = f"Gateway {gw}"
            out.append(_Claim(ip, gw, info.node_name, obj, f"status.nodes[{i}].privateIP", True))
            out += [_Claim(s, gw, info.node_name, obj, f"status.nodes[{i}].subnets[{j}]", False)
                    for j, s in enumerate(info.subnets)]
        else:
            obj = f"Node {info.node_name}"
            out.append(_Claim(ip, gw, info.node_name, obj, "status.addresses[InternalIP]", True))
            one = len(info.subnets) == 1
            out += [_Claim(s, gw, info.node_name, obj, "spec.podCIDR" if one else f"spec.podCIDRs[{j}]", False)
                    for j, s in enumerate(info.subnets)]
    return out
