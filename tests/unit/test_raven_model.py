"""Loading Raven clusters: document shapes, status derivation, election, validation."""

from __future__ import annotations

import base64
import copy
import io
import ipaddress
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ravenvpn.raven.cluster import (
    GATEWAY_LABEL, PROXY, TUNNEL, Cluster, ClusterError, load_cluster, load_cluster_file,
)
from ravenvpn.raven.plan.planner import Role, plan

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cluster-three-domains.yaml"
KEYS = ROOT / "examples" / "keys"


# --- helpers ------------------------------------------------------------------

def example_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def dump(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def load(docs: list[dict[str, Any]]) -> Cluster:
    return load_cluster(dump(docs))


def key(seed: int) -> str:
    return base64.b64encode(bytes([seed]) * 32).decode()


def set_ready(docs: list[dict[str, Any]], node: str, ready: bool) -> None:
    conditions = find(docs, "Node", node)["status"]["conditions"]
    next(c for c in conditions if c["type"] == "Ready")["status"] = "True" if ready else "False"


def node_doc(name: str, gateway: str | None, ip: str, cidr: str | None, ready: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {GATEWAY_LABEL: gateway} if gateway else {}},
        "spec": {"podCIDR": cidr} if cidr else {},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }
    return doc


def gateway_doc(name: str, endpoints: list[dict[str, Any]], version: str = "v1beta1",
                **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"raven.openyurt.io/{version}", "kind": "Gateway",
            "metadata": {"name": name}, "spec": {"endpoints": endpoints, **spec}}


def error_of(docs_or_text: list[dict[str, Any]] | str) -> str:
    text = docs_or_text if isinstance(docs_or_text, str) else dump(docs_or_text)
    with pytest.raises(ClusterError) as info:
        load_cluster(text)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- the example and document shapes -------------------------------------------

def test_example_loads_with_derived_status() -> None:
    cluster = load_cluster_file(EXAMPLE)
    assert [g.name for g in cluster.gateways] == ["gw-cloud", "gw-hangzhou", "gw-qingdao"]
    assert [n.name for n in cluster.nodes] == ["cloud-1", "cloud-2", "hz-1", "hz-2", "qd-1", "qd-2"]
    hz = cluster.gateway("gw-hangzhou")
    assert hz is not None and hz.status_derived and hz.under_nat
    assert [(m.node_name, str(m.private_ip), [str(s) for s in m.subnets]) for m in hz.nodes] == [
        ("hz-1", "192.168.1.11", ["10.244.2.0/24"]),
        ("hz-2", "192.168.1.12", ["10.244.3.0/24"]),
    ]
    assert hz.active_tunnel is not None and hz.active_tunnel.node_name == "hz-1"
    assert [(e.node_name, e.type) for e in hz.active_endpoints] == [("hz-1", PROXY), ("hz-1", TUNNEL)]
    cloud = cluster.gateway("gw-cloud")
    assert cloud is not None and not cloud.under_nat and cloud.expose_type == "PublicIP"
    assert cloud.active_tunnel is not None
    assert str(cloud.active_tunnel.public_ip) == "198.51.100.1"
    assert cluster.gateway_of("qd-2").name == "gw-qingdao"  # type: ignore[union-attr]


def test_example_keys_match_the_demo_private_keys() -> None:
    cluster = load_cluster_file(EXAMPLE)
    endpoints = [ep for gw in cluster.gateways for ep in gw.tunnel_endpoints]
    assert sorted(ep.node_name for ep in endpoints) == ["cloud-1", "hz-1", "hz-2", "qd-1", "qd-2"]
    for ep in endpoints:
        private = base64.b64decode((KEYS / f"{ep.node_name}.key").read_text().strip())
        public = X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw)
        assert ep.public_key == public, ep.node_name


def test_kind_list_equals_multi_document() -> None:
    docs = example_docs()
    as_list = {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": docs}
    assert load_cluster(yaml.safe_dump(as_list)) == load(docs)


def test_typed_lists_and_mixed_documents() -> None:
    docs = example_docs()
    gateways = [d for d in docs if d["kind"] == "Gateway"]
    nodes = [d for d in docs if d["kind"] == "Node"]
    # API servers omit kind/apiVersion on the items of a typed list.
    bare = [{k: v for k, v in d.items() if k not in ("kind", "apiVersion")} for d in nodes]
    text = dump([
        {"apiVersion": "raven.openyurt.io/v1beta1", "kind": "GatewayList", "items": gateways[:2]},
        gateways[2],
        {"apiVersion": "v1", "kind": "NodeList", "items": bare},
    ])
    assert load_cluster(text) == load(docs)


def test_unrelated_kinds_are_ignored() -> None:
    docs = example_docs()
    docs.append({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                 "metadata": {"name": "traefik-gateway"}, "spec": {"listeners": []}})
    docs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "busy-box"}})
    assert load(docs) == load(example_docs())


def test_empty_input_is_an_empty_cluster() -> None:
    assert load_cluster("") == Cluster(gateways=(), nodes=())
    assert load_cluster("---\n---\n") == Cluster(gateways=(), nodes=())


def test_load_cluster_file_reads_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(EXAMPLE.read_text()))
    assert load_cluster_file("-") == load_cluster_file(EXAMPLE)


def test_load_cluster_file_accepts_paths_and_reports_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(EXAMPLE.read_text())
    assert load_cluster_file(path) == load_cluster_file(str(path))
    with pytest.raises(ClusterError, match=r"nope\.yaml: cannot read"):
        load_cluster_file(tmp_path / "nope.yaml")


def test_seed_shaped_gateway() -> None:
    # As the Raven guide writes it: `Replicas` capitalised, proxy endpoints next to the
    # tunnel one, a duplicated underNAT key, and a status written by the controller.
    text = f"""
apiVersion: raven.openyurt.io/v1beta1
kind: Gateway
metadata:
  name: gw-hangzhou
spec:
  proxyConfig:
    Replicas: 1
  tunnelConfig:
    Replicas: 1
  endpoints:
  - nodeName: hz-1
    underNAT: true
    port: 10262
    type: proxy
  - nodeName: hz-1
    underNAT: true
    port: 4500
    underNAT: true
    type: tunnel
    config:
      publicKey: {key(1)}
status:
  activeEndpoints:
  - config:
      enable-l3-tunnel: "true"
    nodeName: hz-1
    port: 4500
    publicIP: 120.79.0.1
    type: tunnel
  nodes:
  - nodeName: hz-1
    privateIP: 172.16.2.103
    subnets:
    - 10.224.1.128/26
---
{yaml.safe_dump(node_doc("hz-1", "gw-hangzhou", "172.16.2.103", "10.244.18.0/24"))}
"""
    gw = load_cluster(text).gateway("gw-hangzhou")
    assert gw is not None and not gw.status_derived
    # The written status wins over podCIDR (Calico IPAM blocks are what Raven reports).
    assert [str(s) for s in gw.nodes[0].subnets] == ["10.224.1.128/26"]
    tunnel = gw.active_tunnel
    assert tunnel is not None and tunnel.port == 4500 and tunnel.under_nat
    # The public IP the agent observed (status) is used over the empty spec value.
    assert str(tunnel.public_ip) == "120.79.0.1"


def test_v1alpha1_gateway() -> None:
    docs = [
        {"apiVersion": "raven.openyurt.io/v1alpha1", "kind": "Gateway", "metadata": {"name": "gw-a"},
         "spec": {"endpoints": [
             {"nodeName": "a-1", "underNAT": True, "config": {"publicKey": key(1)}},
             {"nodeName": "a-2", "underNAT": True, "config": {"publicKey": key(2)}}]},
         "status": {"activeEndpoint": {"nodeName": "a-2", "underNAT": True, "publicIP": "203.0.113.9"}}},
        node_doc("a-1", "gw-a", "192.168.9.1", "10.9.1.0/24"),
        node_doc("a-2", "gw-a", "192.168.9.2", "10.9.2.0/24"),
    ]
    gw = load(docs).gateway("gw-a")
    assert gw is not None and gw.tunnel_replicas == 1
    assert [(e.type, e.port) for e in gw.endpoints] == [(TUNNEL, 4500), (TUNNEL, 4500)]
    # The singular activeEndpoint is the current choice and is kept while Ready.
    assert gw.active_tunnel is not None and gw.active_tunnel.node_name == "a-2"
    assert str(gw.active_tunnel.public_ip) == "203.0.113.9"


def test_v1alpha1_with_plural_active_endpoints_as_in_the_seed() -> None:
    docs = [
        gateway_doc("gw-cloud", [{"nodeName": "c-1", "type": "tunnel", "port": 4500, "config": {"publicKey": key(1)}},
                                 {"nodeName": "c-2", "type": "tunnel", "port": 4500, "config": {"publicKey": key(2)}}],
                    version="v1alpha1", exposeType="PublicIP", tunnelConfig={"Replicas": 1}),
        node_doc("c-1", "gw-cloud", "192.168.0.195", "10.224.0.128/26"),
        node_doc("c-2", "gw-cloud", "192.168.0.196", "10.224.0.0/26"),
    ]
    docs[0]["status"] = {"activeEndpoints": [{"nodeName": "c-2", "type": "tunnel", "port": 4500}]}
    gw = load(docs).gateway("gw-cloud")
    assert gw is not None and gw.active_tunnel is not None and gw.active_tunnel.node_name == "c-2"


def test_dual_stack_pod_cidrs() -> None:
    docs = example_docs()
    spec = find(docs, "Node", "qd-2")["spec"]
    spec["podCIDRs"] = ["10.244.5.0/24", "fd00:10:244:5::/64"]
    gw = load(docs).gateway("gw-qingdao")
    assert gw is not None
    assert gw.member("qd-2").subnets == (  # type: ignore[union-attr]
        ipaddress.ip_network("10.244.5.0/24"), ipaddress.ip_network("fd00:10:244:5::/64"))


# --- election -------------------------------------------------------------------

def active_tunnel_node(docs: list[dict[str, Any]], gateway: str = "gw-hangzhou") -> str | None:
    gw = load(docs).gateway(gateway)
    assert gw is not None
    return gw.active_tunnel.node_name if gw.active_tunnel else None


def test_election_takes_ready_endpoints_in_spec_order() -> None:
    docs = example_docs()
    assert active_tunnel_node(docs) == "hz-1"
    set_ready(docs, "hz-1", False)
    assert active_tunnel_node(docs) == "hz-2"
    set_ready(docs, "hz-2", False)
    assert active_tunnel_node(docs) is None


def test_missing_ready_condition_means_not_ready() -> None:
    docs = example_docs()
    find(docs, "Node", "hz-1")["status"]["conditions"] = []
    assert active_tunnel_node(docs) == "hz-2"


def test_election_keeps_the_current_endpoint_while_ready() -> None:
    docs = example_docs()
    find(docs, "Gateway", "gw-hangzhou")["status"] = {
        "activeEndpoints": [{"nodeName": "hz-2", "type": "tunnel", "port": 4500}]}
    assert active_tunnel_node(docs) == "hz-2"   # spec order would pick hz-1: no flapping
    set_ready(docs, "hz-2", False)
    assert active_tunnel_node(docs) == "hz-1"   # failover driven by the Node condition


def test_current_proxy_endpoint_does_not_count_as_tunnel() -> None:
    docs = example_docs()
    find(docs, "Gateway", "gw-hangzhou")["status"] = {
        "activeEndpoints": [{"nodeName": "hz-1", "type": "proxy", "port": 10262}]}
    gw = load(docs).gateway("gw-hangzhou")
    assert gw is not None
    assert [(e.node_name, e.type) for e in gw.active_endpoints] == [("hz-1", PROXY), ("hz-1", TUNNEL)]


def test_zero_replicas_elects_nothing() -> None:
    docs = example_docs()
    find(docs, "Gateway", "gw-hangzhou")["spec"]["tunnelConfig"] = {"Replicas": 0}
    assert active_tunnel_node(docs) is None


def test_replicas_default_to_one() -> None:
    docs = example_docs()
    del find(docs, "Gateway", "gw-hangzhou")["spec"]["tunnelConfig"]
    gw = load(docs).gateway("gw-hangzhou")
    assert gw is not None and gw.tunnel_replicas == 1 and gw.active_tunnel is not None


def test_endpoint_of_a_member_without_label_in_written_status() -> None:
    # A written status.nodes defines membership even for nodes lacking the label.
    docs = example_docs()
    del find(docs, "Node", "hz-2")["metadata"]["labels"][GATEWAY_LABEL]
    find(docs, "Gateway", "gw-hangzhou")["status"] = {"nodes": [
        {"nodeName": "hz-1", "privateIP": "192.168.1.11", "subnets": ["10.244.2.0/24"]},
        {"nodeName": "hz-2", "privateIP": "192.168.1.12", "subnets": ["10.244.3.0/24"]}]}
    set_ready(docs, "hz-1", False)
    assert active_tunnel_node(docs) == "hz-2"


# --- validation -----------------------------------------------------------------

Mutation = Callable[[list[dict[str, Any]]], None]


def _gw(docs: list[dict[str, Any]], name: str = "gw-hangzhou") -> dict[str, Any]:
    return find(docs, "Gateway", name)


def _node(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return find(docs, "Node", name)


def _tunnel(docs: list[dict[str, Any]], index: int = 1, gw: str = "gw-hangzhou") -> dict[str, Any]:
    return _gw(docs, gw)["spec"]["endpoints"][index]


def _written_status(docs: list[dict[str, Any]]) -> None:
    _gw(docs)["status"] = {"nodes": [
        {"nodeName": "hz-1", "privateIP": "192.168.1.11", "subnets": ["10.244.2.0/24"]},
        {"nodeName": "hz-2", "privateIP": "192.168.1.12", "subnets": ["10.244.3.0/24"]}]}


def _set(path: Callable[[list[dict[str, Any]]], dict[str, Any]], field: str, value: Any) -> Mutation:
    def mutate(docs: list[dict[str, Any]]) -> None:
        path(docs)[field] = value
    return mutate


def _del(path: Callable[[list[dict[str, Any]]], dict[str, Any]], field: str) -> Mutation:
    def mutate(docs: list[dict[str, Any]]) -> None:
        del path(docs)[field]
    return mutate


def _then(*mutations: Mutation) -> Mutation:
    def mutate(docs: list[dict[str, Any]]) -> None:
        for m in mutations:
            m(docs)
    return mutate


def _podcidr(node: str, cidr: str) -> Mutation:
    return _then(_set(lambda d: _node(d, node)["spec"], "podCIDR", cidr),
                 _set(lambda d: _node(d, node)["spec"], "podCIDRs", [cidr]))


def _internal_ip(node: str, ip: str) -> Mutation:
    return _set(lambda d: _node(d, node)["status"]["addresses"][0], "address", ip)


# (case, mutation, start of the warning, the node whose own plan it breaks or None)
SKIP_CASES: list[tuple[str, Mutation, str, str | None]] = [
    ("missing public key",
     _del(lambda d: _tunnel(d)["config"], "publicKey"),
     "Gateway gw-hangzhou: spec.endpoints[1].config.publicKey: missing",
     "hz-1"),
    ("public key without config",
     _del(lambda d: _tunnel(d), "config"),
     "Gateway gw-hangzhou: spec.endpoints[1].config.publicKey: missing",
     "hz-1"),
    ("public key of 31 bytes",
     _set(lambda d: _tunnel(d)["config"], "publicKey", base64.b64encode(bytes(31)).decode()),
     "Gateway gw-hangzhou: spec.endpoints[1].config.publicKey: invalid WireGuard public key",
     "hz-1"),
    ("public key not base64",
     _set(lambda d: _tunnel(d)["config"], "publicKey", "not-a-key!"),
     "Gateway gw-hangzhou: spec.endpoints[1].config.publicKey: invalid WireGuard public key 'not-a-key!' (not base64)",
     "hz-1"),
    ("duplicate public key",
     _set(lambda d: _tunnel(d, 2, "gw-qingdao")["config"], "publicKey",
          "D+xuENS9VdZB30+0w/jKwavBmjJW9CHzswiFhit5Yn8="),
     "Gateway gw-qingdao: spec.endpoints[2].config.publicKey: same key as Gateway gw-hangzhou spec.endpoints[1]",
     "qd-2"),
    ("endpoint names an unknown node",
     _set(lambda d: _tunnel(d, 2), "nodeName", "hz-9"),
     "Gateway gw-hangzhou: spec.endpoints[2].nodeName: unknown Node 'hz-9'",
     None),
    ("endpoint node is in another gateway",
     _set(lambda d: _tunnel(d, 2), "nodeName", "qd-1"),
     "Gateway gw-hangzhou: spec.endpoints[2].nodeName: Node 'qd-1' is not a member of this gateway",
     None),
    ("endpoint without nodeName",
     _del(lambda d: _tunnel(d, 2), "nodeName"),
     "Gateway gw-hangzhou: spec.endpoints[2].nodeName: missing",
     None),
    ("endpoint without type (v1beta1)",
     _del(lambda d: _tunnel(d, 2), "type"),
     "Gateway gw-hangzhou: spec.endpoints[2].type: missing",
     "hz-2"),
    ("unknown endpoint type",
     _set(lambda d: _tunnel(d, 2), "type", "vxlan"),
     "Gateway gw-hangzhou: spec.endpoints[2].type: unknown endpoint type 'vxlan'",
     None),
    ("port out of range",
     _set(lambda d: _tunnel(d), "port", 99999),
     "Gateway gw-hangzhou: spec.endpoints[1].port: invalid port 99999",
     "hz-1"),
    ("port as a string",
     _set(lambda d: _tunnel(d), "port", "4500"),
     "Gateway gw-hangzhou: spec.endpoints[1].port: invalid port '4500'",
     "hz-1"),
    ("negative publicPort",
     _set(lambda d: _tunnel(d), "publicPort", -1),
     "Gateway gw-hangzhou: spec.endpoints[1].publicPort: invalid port -1",
     "hz-1"),
    ("bad publicIP",
     _set(lambda d: _tunnel(d, 1, "gw-cloud"), "publicIP", "198.51.100.300"),
     "Gateway gw-cloud: spec.endpoints[1].publicIP: invalid IP address or hostname '198.51.100.300'",
     "cloud-1"),
    ("underNAT not a boolean",
     _set(lambda d: _tunnel(d), "underNAT", "yes please"),
     "Gateway gw-hangzhou: spec.endpoints[1].underNAT: expected true or false",
     "hz-1"),
    ("endpoints disagree on underNAT",
     _set(lambda d: _tunnel(d, 2), "underNAT", False),
     "Gateway gw-hangzhou: spec.endpoints[2].underNAT: false, but spec.endpoints[0].underNAT is true "
     "(all endpoints of a gateway share underNAT) (the gateway is taken as under NAT)",
     None),
    ("exposed gateway under NAT",
     _set(lambda d: _gw(d)["spec"], "exposeType", "LoadBalancer"),
     "Gateway gw-hangzhou: spec.exposeType: 'LoadBalancer', but spec.endpoints[0].underNAT is true",
     None),
    ("duplicate endpoint",
     lambda d: _gw(d)["spec"]["endpoints"].append(copy.deepcopy(_tunnel(d))),
     "Gateway gw-hangzhou: spec.endpoints[3]: duplicate of spec.endpoints[1] (node hz-1, type tunnel)",
     None),
    ("two tunnel replicas",
     _set(lambda d: _gw(d)["spec"], "tunnelConfig", {"Replicas": 2}),
     "Gateway gw-hangzhou: spec.tunnelConfig.Replicas: 2 not supported",
     None),
    ("replicas not an integer",
     _set(lambda d: _gw(d)["spec"], "tunnelConfig", {"Replicas": "one"}),
     "Gateway gw-hangzhou: spec.tunnelConfig.Replicas: expected an integer",
     None),
    ("negative proxy replicas",
     _set(lambda d: _gw(d)["spec"], "proxyConfig", {"replicas": -1}),
     "Gateway gw-hangzhou: spec.proxyConfig.replicas: must be >= 0",
     None),
    ("endpoints not a list",
     _set(lambda d: _gw(d)["spec"], "endpoints", "hz-1"),
     "Gateway gw-hangzhou: spec.endpoints: expected a list, got a string",
     None),
    ("spec not a mapping",
     _set(lambda d: _gw(d), "spec", ["endpoints"]),
     "Gateway gw-hangzhou: spec: expected a mapping, got a list",
     None),
    ("invalid podCIDR",
     _set(lambda d: _node(d, "hz-1")["spec"], "podCIDR", "10.0.0.0/33"),
     "Node hz-1: spec.podCIDR: invalid CIDR '10.0.0.0/33'",
     "hz-1"),
    ("podCIDR with host bits",
     _podcidr("hz-1", "10.244.2.1/24"),
     # Kubernetes and Raven accept host bits (the network is routed): a warning, not a node error.
     "Node hz-1: spec.podCIDRs[0]: invalid CIDR '10.244.2.1/24' (10.244.2.1/24 has host bits set) "
     "(10.244.2.0/24 used)",
     None),
    ("podCIDR differs from podCIDRs[0]",
     _set(lambda d: _node(d, "hz-1")["spec"], "podCIDR", "10.244.9.0/24"),
     "Node hz-1: spec.podCIDR: 10.244.9.0/24 differs from spec.podCIDRs[0] 10.244.2.0/24",
     "hz-1"),
    ("invalid InternalIP",
     _internal_ip("hz-2", "192.168.1.256"),
     "Node hz-2: status.addresses[0].address: invalid IP address '192.168.1.256'",
     "hz-2"),
    ("gateway member without InternalIP",
     _set(lambda d: _node(d, "hz-2")["status"], "addresses", [{"type": "Hostname", "address": "hz-2"}]),
     "Node hz-2: status.addresses: no InternalIP",
     "hz-2"),
    ("label names an unknown gateway",
     _set(lambda d: _node(d, "qd-2")["metadata"]["labels"], GATEWAY_LABEL, "gw-qd"),
     f"Node qd-2: metadata.labels[{GATEWAY_LABEL}]: unknown Gateway 'gw-qd'",
     None),
    ("overlapping subnets between gateways",
     _podcidr("qd-2", "10.244.2.128/25"),
     "Node qd-2: spec.podCIDR: 10.244.2.128/25 overlaps 10.244.2.0/24 of Node hz-1 spec.podCIDR (Gateway gw-hangzhou)",
     None),
    ("node IP inside another gateway's subnet",
     _internal_ip("qd-2", "10.244.2.7"),
     "Node qd-2: status.addresses[InternalIP]: 10.244.2.7/32 overlaps 10.244.2.0/24 of Node hz-1 spec.podCIDR",
     None),
    ("same node IP in two gateways",
     _internal_ip("qd-2", "192.168.1.12"),
     "Node qd-2: status.addresses[InternalIP]: 192.168.1.12/32 overlaps 192.168.1.12/32 of Node hz-2 "
     "status.addresses[InternalIP] (Gateway gw-hangzhou)",
     None),
    ("overlap in a written status",
     _then(_written_status, _set(lambda d: _gw(d)["status"]["nodes"][1], "subnets", ["10.244.0.0/16"])),
     # The stray /16 overlaps every other domain's pod subnets: it goes, they stay.
     "Gateway gw-hangzhou: status.nodes[1].subnets[0]: 10.244.0.0/16 overlaps 10.244.0.0/24 of Node cloud-1 "
     "spec.podCIDR (Gateway gw-cloud)",
     None),
    ("status.nodes names an unknown node",
     _then(_written_status, _set(lambda d: _gw(d)["status"]["nodes"][1], "nodeName", "hz-9")),
     "Gateway gw-hangzhou: status.nodes[1].nodeName: unknown Node 'hz-9'",
     None),
    ("status.nodes lists a node twice",
     _then(_written_status, _set(lambda d: _gw(d)["status"]["nodes"][1], "nodeName", "hz-1")),
     "Gateway gw-hangzhou: status.nodes[1].nodeName: Node 'hz-1' listed twice",
     None),
    ("status.nodes privateIP differs from InternalIP",
     _then(_written_status, _set(lambda d: _gw(d)["status"]["nodes"][1], "privateIP", "192.168.1.99")),
     "Gateway gw-hangzhou: status.nodes[1].privateIP: 192.168.1.99 differs from Node hz-2 InternalIP 192.168.1.12",
     None),
    ("status.nodes privateIP invalid",
     _then(_written_status, _set(lambda d: _gw(d)["status"]["nodes"][1], "privateIP", "nope")),
     "Gateway gw-hangzhou: status.nodes[1].privateIP: invalid IP address 'nope'",
     None),
    ("status.nodes misses a labelled node",
     _then(_written_status, lambda d: _gw(d)["status"]["nodes"].pop()),
     f"Gateway gw-hangzhou: status.nodes: does not list Node hz-2 (labelled {GATEWAY_LABEL}=gw-hangzhou)",
     None),
    ("two gateways claim a node",
     _set(lambda d: _gw(d, "gw-qingdao"), "status", {"nodes": [
         {"nodeName": "qd-1", "privateIP": "192.168.2.11", "subnets": ["10.244.4.0/24"]},
         {"nodeName": "qd-2", "privateIP": "192.168.2.12", "subnets": ["10.244.5.0/24"]},
         {"nodeName": "hz-2", "privateIP": "192.168.1.12", "subnets": ["10.244.3.0/24"]}]}),
     f"Gateway gw-qingdao: status.nodes[2].nodeName: Node hz-2 is claimed by Gateway gw-hangzhou "
     f"(metadata.labels[{GATEWAY_LABEL}])",
     None),
    ("status.activeEndpoints names an unknown node",
     _set(lambda d: _gw(d), "status", {"activeEndpoints": [{"nodeName": "hz-9", "type": "tunnel"}]}),
     "Gateway gw-hangzhou: status.activeEndpoints[0].nodeName: unknown Node 'hz-9'",
     None),
    ("status.activeEndpoints names a node without such endpoint",
     _set(lambda d: _gw(d), "status", {"activeEndpoints": [{"nodeName": "hz-2", "type": "proxy"}]}),
     "Gateway gw-hangzhou: status.activeEndpoints[0]: no proxy endpoint for node 'hz-2' in spec.endpoints",
     None),
    ("status.activeEndpoints key differs from the spec",
     _set(lambda d: _gw(d), "status", {"activeEndpoints": [
         {"nodeName": "hz-1", "type": "tunnel", "config": {"publicKey": key(7)}}]}),
     "Gateway gw-hangzhou: status.activeEndpoints[0].config.publicKey: differs from spec.endpoints[1].config.publicKey",
     None),
    ("both activeEndpoint and activeEndpoints",
     _set(lambda d: _gw(d), "status", {"activeEndpoints": [{"nodeName": "hz-1"}],
                                         "activeEndpoint": {"nodeName": "hz-1"}}),
     "Gateway gw-hangzhou: status.activeEndpoint: given together with status.activeEndpoints",
     None),
    ("gateway without name",
     _del(lambda d: _gw(d)["metadata"], "name"),
     "Gateway (document 2): metadata.name: missing",
     None),
    ("node without name",
     _set(lambda d: _node(d, "cloud-2"), "metadata", {"labels": {}}),
     "Node (document 5): metadata.name: missing",
     "cloud-2"),
    ("duplicate gateway",
     lambda d: d.append(copy.deepcopy(_gw(d))),
     "Gateway gw-hangzhou: metadata.name: defined twice",
     None),
    ("duplicate node",
     lambda d: d.append(copy.deepcopy(_node(d, "qd-2"))),
     "Node qd-2: metadata.name: defined twice",
     "qd-2"),
    ("unsupported Gateway version",
     _set(lambda d: _gw(d), "apiVersion", "raven.openyurt.io/v2"),
     "Gateway gw-hangzhou: apiVersion: unsupported 'raven.openyurt.io/v2'",
     None),
    ("unsupported Node version",
     _set(lambda d: _node(d, "hz-1"), "apiVersion", "v2"),
     "Node hz-1: apiVersion: unsupported 'v2' (expected v1)",
     "hz-1"),
    ("document without kind",
     _del(lambda d: _node(d, "hz-1"), "kind"),
     "document 6: kind: missing",
     "hz-1"),
    ("document without apiVersion",
     _del(lambda d: _node(d, "hz-1"), "apiVersion"),
     "document 6 (kind Node): apiVersion: missing",
     "hz-1"),
    ("document that is not a mapping",
     lambda d: d.append(["not", "an", "object"]),
     "document 11: expected a Kubernetes object (a mapping), got list",
     None),
]


EXAMPLE_NODES = ("cloud-1", "cloud-2", "hz-1", "hz-2", "qd-1", "qd-2")


@pytest.mark.parametrize("mutate, problem, broken_node", [(m, w, n) for _, m, w, n in SKIP_CASES],
                         ids=[name for name, _, _, _ in SKIP_CASES])
def test_one_broken_part_is_skipped_with_a_warning_and_every_other_node_plans(
        mutate: Mutation, problem: str, broken_node: str | None) -> None:
    """These were load errors that stopped every node of the cluster (issue 14, kind 6)."""
    docs = example_docs()
    mutate(docs)
    cluster = load(docs)
    # "Kind name: field: problem (what was skipped)": the object comes first, then the field.
    assert any(w.startswith(problem) for w in cluster.warnings), cluster.warnings
    assert all("\n" not in w for w in cluster.warnings)
    for name in EXAMPLE_NODES:
        if name == broken_node:
            # Its own Node or tunnel endpoint is unusable: its plan would be guesswork.
            with pytest.raises(ClusterError) as info:
                plan(cluster, name)
            own = cluster.node_error(name)
            assert str(info.value).startswith(problem if own else f"Node {name}: not found"), str(info.value)
        else:
            assert any(w.startswith(problem) for w in plan(cluster, name).warnings)


def test_yaml_syntax_error_is_one_line_with_line_number() -> None:
    text = EXAMPLE.read_text() + "---\nfoo: [bar\n"
    lines = len(EXAMPLE.read_text().splitlines())
    message = error_of(text)
    assert message.startswith("YAML syntax error at line ")
    assert int(message.split("line ")[1].split(",")[0]) > lines


def test_yaml_error_in_the_middle_names_its_line() -> None:
    text = "apiVersion: v1\nkind: Node\nmetadata:\n  name: a\n   bad: indent\n"
    assert error_of(text).startswith("YAML syntax error at line 5")


def test_list_items_are_located_in_warnings() -> None:
    as_list = {"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1"}]}
    assert load_cluster(yaml.safe_dump(as_list)).warnings == (
        "document 1 items[0]: kind: missing (object skipped)",)


def test_cluster_error_is_always_one_line() -> None:
    assert str(ClusterError("a\nb\n  c")) == "a b c"


def test_cluster_error_is_a_raven_error_and_a_value_error() -> None:
    from ravenvpn.errors import RavenError
    assert issubclass(ClusterError, RavenError) and issubclass(ClusterError, ValueError)


def test_zero_ports_mean_defaults_like_go_zero_values() -> None:
    docs = example_docs()
    _tunnel(docs)["port"] = 0
    _tunnel(docs)["publicPort"] = 0
    gw = load(docs).gateway("gw-hangzhou")
    assert gw is not None and gw.active_tunnel is not None
    assert gw.active_tunnel.port == 4500 and gw.active_tunnel.public_port is None


def test_a_bad_key_skips_only_its_endpoint_and_fails_only_its_node() -> None:
    docs = example_docs()
    _tunnel(docs, 2, "gw-qingdao")["config"]["publicKey"] = "x"
    cluster = load(docs)
    problem = "Gateway gw-qingdao: spec.endpoints[2].config.publicKey: invalid WireGuard public key 'x'"
    assert cluster.node_error("qd-2") is not None and cluster.node_error("qd-2").startswith(problem)
    gw = cluster.gateway("gw-qingdao")
    assert gw is not None and [ep.node_name for ep in gw.tunnel_endpoints] == ["qd-1"]
    with pytest.raises(ClusterError, match=r"^Gateway gw-qingdao: spec\.endpoints\[2\]\.config\.publicKey"):
        plan(cluster, "qd-2")
    assert plan(cluster, "qd-1").role is Role.ACTIVE_GATEWAY
