"""Cross-object consistency checks; each raises the first problem as a ClusterError.

Every check names the object and field at fault, in Raven's field names
(``Gateway gw-hangzhou: spec.endpoints[1].underNAT: ...``). Field-level problems (bad CIDR, port, key encoding) are caught while parsing;
what is checked here needs several objects at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .addresses import IPNetwork, host_network
from ...errors import ClusterError
from .gateway_parser import ParsedGateway
from .model import GATEWAY_LABEL, TUNNEL, Node, NodeInfo

LABEL_FIELD = f"metadata.labels[{GATEWAY_LABEL}]"


def check_unique_names(kind: str, names: Iterable[str]) -> None:
    """Each ``metadata.name`` of ``kind`` (``"Node"``, ``"Gateway"``) at most once.

    Raises:
        ClusterError: the first name defined twice.
    """
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ClusterError(f"{kind} {name}: metadata.name: defined twice")
        seen.add(name)


def check_gateway_spec(gw: ParsedGateway) -> None:
    """One Gateway's ``spec`` on its own: no duplicate (node, type) endpoint, one ``underNAT`` for all
    endpoints, no exposed gateway under NAT, at most one tunnel replica.

    Raises:
        ClusterError: the first violation, naming the endpoint index.
    """
    first: dict[tuple[str, str], int] = {}
    for ep in gw.endpoints:
        key = (ep.node_name, ep.type)
        if key in first:
            raise ClusterError(f"{gw.label}: spec.endpoints[{ep.index}]: duplicate of "
                               f"spec.endpoints[{first[key]}] (node {ep.node_name}, type {ep.type})")
        first[key] = ep.index
    if gw.endpoints:
        head = gw.endpoints[0]
        for ep in gw.endpoints[1:]:
            if ep.under_nat != head.under_nat:
                raise ClusterError(
                    f"{gw.label}: spec.endpoints[{ep.index}].underNAT: {_yaml_bool(ep.under_nat)}, "
                    f"but spec.endpoints[{head.index}].underNAT is {_yaml_bool(head.under_nat)} "
                    "(all endpoints of a gateway share underNAT)")
        if gw.expose_type and head.under_nat:
            raise ClusterError(f"{gw.label}: spec.endpoints[{head.index}].underNAT: true, but "
                               f"spec.exposeType is {gw.expose_type!r} (an exposed gateway is not under NAT)")
    if gw.tunnel_replicas > 1:
        # Two active tunnel nodes would be two WireGuard peers for the same AllowedIPs
        # on every remote gateway, which WireGuard's cryptokey routing cannot express.
        raise ClusterError(f"{gw.label}: spec.tunnelConfig.Replicas: {gw.tunnel_replicas} not "
                           "supported (at most 1 active tunnel endpoint per gateway)")


def check_labels(nodes: Iterable[Node], gateway_names: set[str]) -> None:
    """Every ``raven.openyurt.io/gateway`` label names a Gateway of the cluster.

    Raises:
        ClusterError: a label naming an unknown Gateway.
    """
    for node in nodes:
        if node.gateway_label is not None and node.gateway_label not in gateway_names:
            raise ClusterError(f"Node {node.name}: {LABEL_FIELD}: unknown Gateway {node.gateway_label!r}")


def check_written_status_nodes(gw: ParsedGateway, nodes: Mapping[str, Node]) -> None:
    """A ``status.nodes`` written in the file must agree with the Node objects: known nodes, each once,
    privateIP equal to the Node's InternalIP, and every labelled member listed.

    Raises:
        ClusterError: the first disagreement, naming ``status.nodes[i]``.
    """
    assert gw.status_nodes is not None
    listed: set[str] = set()
    for i, info in enumerate(gw.status_nodes):
        where = f"{gw.label}: status.nodes[{i}]"
        node = nodes.get(info.node_name)
        if node is None:
            raise ClusterError(f"{where}.nodeName: unknown Node {info.node_name!r}")
        if info.node_name in listed:
            raise ClusterError(f"{where}.nodeName: Node {info.node_name!r} listed twice")
        listed.add(info.node_name)
        if node.internal_ip is not None and node.internal_ip != info.private_ip:
            raise ClusterError(f"{where}.privateIP: {info.private_ip} differs from Node "
                               f"{node.name} InternalIP {node.internal_ip}")
    for node in nodes.values():
        if node.gateway_label == gw.name and node.name not in listed:
            raise ClusterError(f"{gw.label}: status.nodes: does not list Node {node.name} "
                               f"(labelled {GATEWAY_LABEL}={gw.name})")


def check_claims(nodes: Iterable[Node], gateways: Sequence[ParsedGateway]) -> None:
    """A node belongs to at most one gateway, whether by label or by a written status.

    Raises:
        ClusterError: a node claimed by two gateways (names both claims).
    """
    for node in nodes:
        claims: dict[str, str] = {}
        if node.gateway_label is not None:
            claims[node.gateway_label] = LABEL_FIELD
        for gw in gateways:
            for i, info in enumerate(gw.status_nodes or ()):
                if info.node_name == node.name:
                    claims.setdefault(gw.name, f"status.nodes[{i}]")
        if len(claims) > 1:
            (a, a_src), (b, b_src) = sorted(claims.items())[:2]
            raise ClusterError(f"Node {node.name}: claimed by two gateways: "
                               f"{a} ({a_src}) and {b} ({b_src})")


def check_endpoint_references(gw: ParsedGateway, members: Sequence[NodeInfo],
                              nodes: Mapping[str, Node]) -> None:
    """Every ``spec.endpoints[].nodeName`` and written ``status.activeEndpoints[]`` names a known Node
    that is a member of ``gw``; an active endpoint matches a spec endpoint (type, public key).

    Raises:
        ClusterError: the first endpoint that does not.
    """
    member_names = {m.node_name for m in members}
    how = "not in status.nodes" if gw.status_nodes is not None else f"no {GATEWAY_LABEL}={gw.name} label"
    for ep in gw.endpoints:
        field = f"{gw.label}: spec.endpoints[{ep.index}].nodeName"
        if ep.node_name not in nodes:
            raise ClusterError(f"{field}: unknown Node {ep.node_name!r}")
        if ep.node_name not in member_names:
            raise ClusterError(f"{field}: Node {ep.node_name!r} is not a member of this gateway ({how})")
    for current in gw.status_active:
        ep = current.endpoint
        if ep.node_name not in nodes:
            raise ClusterError(f"{gw.label}: {current.path}.nodeName: unknown Node {ep.node_name!r}")
        spec = next((s for s in gw.endpoints if (s.node_name, s.type) == (ep.node_name, ep.type)), None)
        if spec is None:
            raise ClusterError(f"{gw.label}: {current.path}: no {ep.type} endpoint for node "
                               f"{ep.node_name!r} in spec.endpoints")
        if ep.public_key is not None and ep.public_key != spec.public_key:
            raise ClusterError(f"{gw.label}: {current.path}.config.publicKey: differs from "
                               f"spec.endpoints[{spec.index}].config.publicKey")


def check_unique_keys(gateways: Sequence[ParsedGateway]) -> None:
    """No two tunnel endpoints share a ``config.publicKey``: WireGuard identifies peers by public key,
    so two nodes sharing one is a copy-paste slip.

    Raises:
        ClusterError: the second endpoint with a key, naming the first.
    """
    owner: dict[bytes, tuple[str, int, str]] = {}
    for gw in gateways:
        for ep in gw.endpoints:
            if ep.type != TUNNEL or ep.public_key is None:
                continue
            if ep.public_key in owner:
                other_gw, other_index, other_node = owner[ep.public_key]
                raise ClusterError(f"{gw.label}: spec.endpoints[{ep.index}].config.publicKey: same key "
                                   f"as Gateway {other_gw} spec.endpoints[{other_index}] (node {other_node})")
            owner[ep.public_key] = (gw.name, ep.index, ep.node_name)


@dataclass(frozen=True)
class _Claim:
    prefix: IPNetwork
    gateway: str
    obj: str     # "Gateway gw-hangzhou" for a written status, else "Node hz-1"
    field: str   # "status.nodes[0].subnets[1]", "spec.podCIDR", ...

    @property
    def described(self) -> str:
        owner = "" if self.obj == f"Gateway {self.gateway}" else f" (Gateway {self.gateway})"
        return f"{self.obj} {self.field}{owner}"


def check_overlaps(members: Mapping[str, tuple[NodeInfo, ...]], written: set[str]) -> None:
    """No address may live behind two gateways: routes and AllowedIPs would be ambiguous.

    ``members`` maps gateway name to its members; ``written`` names the gateways
    whose status.nodes came from the file (errors then point into the Gateway).

    Raises:
        ClusterError: the first overlap between prefixes of two gateways, naming both fields.
    """
    claims = sorted(
        (c for gw, infos in members.items() for c in _claims(gw, infos, gw in written)),
        key=lambda c: (c.prefix.version, int(c.prefix.network_address), c.prefix.prefixlen, c.gateway),
    )
    # Interval sweep: after sorting by start, only later prefixes starting inside
    # this one can overlap it, so the inner loop stops early.
    for i, a in enumerate(claims):
        end = int(a.prefix.broadcast_address)
        for b in claims[i + 1:]:
            if b.prefix.version != a.prefix.version or int(b.prefix.network_address) > end:
                break
            if b.gateway != a.gateway:
                raise ClusterError(f"{b.obj}: {b.field}: {b.prefix} overlaps {a.prefix} of {a.described}")


def _claims(gw: str, infos: Sequence[NodeInfo], written: bool) -> list[_Claim]:
    out = []
    for i, info in enumerate(infos):
        ip = host_network(info.private_ip)
        if written:
            obj = f"Gateway {gw}"
            out.append(_Claim(ip, gw, obj, f"status.nodes[{i}].privateIP"))
            out += [_Claim(s, gw, obj, f"status.nodes[{i}].subnets[{j}]") for j, s in enumerate(info.subnets)]
        else:
            obj = f"Node {info.node_name}"
            out.append(_Claim(ip, gw, obj, "status.addresses[InternalIP]"))
            one = len(info.subnets) == 1
            out += [_Claim(s, gw, obj, "spec.podCIDR" if one else f"spec.podCIDRs[{j}]")
                    for j, s in enumerate(info.subnets)]
    return out


def _yaml_bool(value: bool) -> str:
    return "true" if value else "false"
