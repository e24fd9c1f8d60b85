"""Planning per node: roles, peers and NAT relaying, routes, rules, sysctls, failover."""

from __future__ import annotations

import base64
import random
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ravenvpn.raven.cluster import GATEWAY_LABEL, Cluster, ClusterError, load_cluster, load_cluster_file
from ravenvpn.raven.plan.planner import NodePlan, PeerPlan, Role, Route, Rule, plan

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cluster-three-domains.yaml"
KEYS = ROOT / "examples" / "keys"

CLOUD = ["10.244.0.0/24", "10.244.1.0/24", "172.16.0.11/32", "172.16.0.12/32"]
HANGZHOU = ["10.244.2.0/24", "10.244.3.0/24", "192.168.1.11/32", "192.168.1.12/32"]
QINGDAO = ["10.244.4.0/24", "10.244.5.0/24", "192.168.2.11/32", "192.168.2.12/32"]


# --- helpers ------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return load_cluster_file(EXAMPLE)


def docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]


def find(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name)


def load(documents: list[dict[str, Any]]) -> Cluster:
    return load_cluster(yaml.safe_dump_all(documents))


def set_ready(documents: list[dict[str, Any]], node: str, ready: bool) -> None:
    for condition in find(documents, "Node", node)["status"]["conditions"]:
        if condition["type"] == "Ready":
            condition["status"] = "True" if ready else "False"


def public_key_of(node: str) -> bytes:
    private = base64.b64decode((KEYS / f"{node}.key").read_text())
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def nets(plan_part: Any) -> list[str]:
    return [str(n) for n in plan_part]


def peer(node_plan: NodePlan, gateway: str) -> PeerPlan:
    return next(p for p in node_plan.peers if p.gateway == gateway)


def key(seed: int) -> str:
    return base64.b64encode(bytes([seed]) * 32).decode()


def add_gateway(documents: list[dict[str, Any]], name: str, node: str, ip: str, cidr: str,
                *, under_nat: bool, seed: int, public_ip: str | None = None) -> None:
    endpoint: dict[str, Any] = {"nodeName": node, "type": "tunnel", "port": 4500, "underNAT": under_nat,
                                "config": {"publicKey": key(seed)}}
    if public_ip:
        endpoint["publicIP"] = public_ip
    documents.append({"apiVersion": "raven.openyurt.io/v1beta1", "kind": "Gateway",
                      "metadata": {"name": name}, "spec": {"endpoints": [endpoint]}})
    documents.append({"apiVersion": "v1", "kind": "Node",
                      "metadata": {"name": node, "labels": {GATEWAY_LABEL: name}},
                      "spec": {"podCIDR": cidr},
                      "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                                 "conditions": [{"type": "Ready", "status": "True"}]}})


# --- roles ------------------------------------------------------------------------

def test_roles_in_the_three_domain_example(cluster: Cluster) -> None:
    roles = {n.name: plan(cluster, n.name).role for n in cluster.nodes}
    assert roles == {
        "cloud-1": Role.ACTIVE_GATEWAY, "cloud-2": Role.MEMBER,
        "hz-1": Role.ACTIVE_GATEWAY, "hz-2": Role.STANDBY,
        "qd-1": Role.ACTIVE_GATEWAY, "qd-2": Role.STANDBY,
    }
    assert plan(cluster, "hz-2").gateway == "gw-hangzhou"


def test_node_in_no_gateway_has_an_empty_plan() -> None:
    documents = docs()
    documents.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "lonely"},
                      "status": {"addresses": [{"type": "InternalIP", "address": "10.9.9.9"}]}})
    node_plan = plan(load(documents), "lonely")
    assert node_plan.role is Role.NONE and node_plan.gateway is None
    assert (node_plan.peers, node_plan.routes, node_plan.rules, node_plan.sysctls) == ((), (), (), ())


def test_proxy_only_endpoint_is_a_member() -> None:
    documents = docs()
    find(documents, "Gateway", "gw-cloud")["spec"]["endpoints"].append(
        {"nodeName": "cloud-2", "type": "proxy", "port": 10262})
    assert plan(load(documents), "cloud-2").role is Role.MEMBER


def test_unknown_node_is_an_error(cluster: Cluster) -> None:
    with pytest.raises(ClusterError, match=r"^Node nobody: not found in the cluster$"):
        plan(cluster, "nobody")


# --- peers and NAT relaying -----------------------------------------------------

def test_nat_gateway_peers_only_with_the_relay(cluster: Cluster) -> None:
    hz = plan(cluster, "hz-1")
    assert [p.gateway for p in hz.peers] == ["gw-cloud"]      # no direct peer to qingdao
    cloud = hz.peers[0]
    assert cloud.public_key == public_key_of("cloud-1")
    assert cloud.endpoint == ("198.51.100.1", 4500)
    assert cloud.persistent_keepalive == 5
    assert cloud.node_name == "cloud-1"
    assert cloud.relays_for == ("gw-qingdao",)
    # The relay peer carries the cloud's own prefixes plus qingdao's, node IPs included.
    assert nets(cloud.allowed_ips) == sorted(CLOUD + QINGDAO, key=lambda n: ip_network(n).network_address)
    assert hz.relay is False and hz.relay_gateway == "gw-cloud"


def test_relay_gateway_peers_with_everybody_and_forwards(cluster: Cluster) -> None:
    cloud = plan(cluster, "cloud-1")
    assert cloud.relay is True and cloud.relay_gateway == "gw-cloud"
    assert [p.gateway for p in cloud.peers] == ["gw-hangzhou", "gw-qingdao"]
    hz, qd = peer(cloud, "gw-hangzhou"), peer(cloud, "gw-qingdao")
    assert nets(hz.allowed_ips) == HANGZHOU and nets(qd.allowed_ips) == QINGDAO
    assert hz.public_key == public_key_of("hz-1") and qd.public_key == public_key_of("qd-1")
    # Changed on purpose (issue 14 kind 7, F14b): under NAT without a public IP there is no endpoint
    # until the edge calls in; its private IP (it was used here) means nothing in the cloud's domain.
    assert hz.endpoint is None and qd.endpoint is None
    assert hz.persistent_keepalive == 5 and hz.relays_for == ()


def test_public_port_overrides_port() -> None:
    documents = docs()
    endpoint = find(documents, "Gateway", "gw-cloud")["spec"]["endpoints"][1]
    endpoint["publicPort"] = 45000
    assert peer(plan(load(documents), "hz-1"), "gw-cloud").endpoint == ("198.51.100.1", 45000)


def test_status_public_ip_is_used_for_the_current_endpoint() -> None:
    documents = docs()
    find(documents, "Gateway", "gw-hangzhou")["status"] = {"activeEndpoints": [
        {"nodeName": "hz-1", "type": "tunnel", "port": 4500, "publicIP": "203.0.113.7", "publicPort": 61000}]}
    assert peer(plan(load(documents), "cloud-1"), "gw-hangzhou").endpoint == ("203.0.113.7", 61000)


def test_no_keepalive_between_gateways_without_nat() -> None:
    documents = docs()
    add_gateway(documents, "gw-beijing", "bj-1", "172.17.0.11", "10.244.6.0/24",
                under_nat=False, seed=9, public_ip="198.51.100.9")
    node_plan = plan(load(documents), "bj-1")
    assert peer(node_plan, "gw-cloud").persistent_keepalive == 0
    assert peer(node_plan, "gw-hangzhou").persistent_keepalive == 5


def test_relay_is_the_exposed_gateway_then_the_first_by_gateway_name() -> None:
    # Changed on purpose (issue 14 kind 9): it was the last non-NAT gateway by active node name.
    documents = docs()
    # gw-shanghai has a public IP but no exposeType; its node "shanghai-1" sorts after "cloud-1",
    # which made it the relay by Raven's rule. The exposed gw-cloud stays the relay.
    add_gateway(documents, "gw-shanghai", "shanghai-1", "172.18.0.11", "10.244.7.0/24",
                under_nat=False, seed=10, public_ip="198.51.100.10")
    cluster = load(documents)
    hz = plan(cluster, "hz-1")
    assert hz.relay_gateway == "gw-cloud"
    assert peer(hz, "gw-cloud").relays_for == ("gw-qingdao",) and peer(hz, "gw-shanghai").relays_for == ()
    assert plan(cluster, "cloud-1").relay is True and plan(cluster, "shanghai-1").relay is False
    # The non-NAT shanghai gateway gets a direct peer from hangzhou, without qingdao's prefixes.
    assert [p.gateway for p in hz.peers] == ["gw-cloud", "gw-shanghai"]
    assert nets(peer(hz, "gw-shanghai").allowed_ips) == ["10.244.7.0/24", "172.18.0.11/32"]

    # Two exposed gateways: the first by Gateway name ("gw-beijing" < "gw-cloud").
    add_gateway(documents, "gw-beijing", "bj-1", "172.17.0.11", "10.244.6.0/24",
                under_nat=False, seed=9, public_ip="198.51.100.9")
    find(documents, "Gateway", "gw-beijing")["spec"]["exposeType"] = "LoadBalancer"
    cluster = load(documents)
    assert plan(cluster, "hz-1").relay_gateway == "gw-beijing"
    assert plan(cluster, "bj-1").relay is True and plan(cluster, "cloud-1").relay is False

    # Without any exposed gateway: the first non-NAT gateway by name, whatever its node is called.
    for d in documents:
        if d["kind"] == "Gateway":
            d["spec"].pop("exposeType", None)
    assert plan(load(documents), "hz-1").relay_gateway == "gw-beijing"


def test_a_failover_inside_the_relay_gateway_keeps_the_relay() -> None:
    documents = docs()
    # gw-idc's node "cloud-1b" sorts between cloud-1 and cloud-2: by Raven's rule (last active node
    # name) the relay was gw-idc before and gw-cloud after cloud-1 -> cloud-2 (field case N04b).
    add_gateway(documents, "gw-idc", "cloud-1b", "172.17.0.11", "10.244.6.0/24",
                under_nat=False, seed=9, public_ip="198.51.100.9")
    find(documents, "Gateway", "gw-idc")["spec"]["exposeType"] = "PublicIP"
    before = load(documents)
    set_ready(documents, "cloud-1", False)
    find(documents, "Gateway", "gw-cloud")["spec"]["endpoints"].append(
        {"nodeName": "cloud-2", "type": "tunnel", "port": 4500, "publicIP": "198.51.100.2",
         "config": {"publicKey": key(11)}})
    after = load(documents)
    for cluster in (before, after):
        assert {plan(cluster, n).relay_gateway for n in ("hz-1", "qd-1", "cloud-1b")} == {"gw-cloud"}
    assert plan(after, "cloud-2").role is Role.ACTIVE_GATEWAY and plan(after, "cloud-2").relay is True
    # The relayed prefixes stay on the same Gateway's peer: only its key and endpoint change.
    hz_before, hz_after = plan(before, "hz-1"), plan(after, "hz-1")
    assert peer(hz_before, "gw-cloud").relays_for == peer(hz_after, "gw-cloud").relays_for == ("gw-qingdao",)
    assert peer(hz_after, "gw-idc") == peer(hz_before, "gw-idc")


def test_without_a_non_nat_gateway_nat_pairs_are_unreachable_with_a_warning() -> None:
    documents = [d for d in docs() if not (d["kind"] == "Gateway" and d["metadata"]["name"] == "gw-cloud")
                 and not (d["kind"] == "Node" and d["metadata"]["name"].startswith("cloud"))]
    node_plan = plan(load(documents), "hz-1")
    assert node_plan.peers == () and node_plan.routes == () and node_plan.relay_gateway is None
    assert node_plan.warnings == ("Gateways gw-hangzhou and gw-qingdao are both under NAT and no gateway "
                                  "without NAT exists to relay: they cannot reach each other",)
    assert "cannot reach each other" in plan(load(documents), "hz-2").warnings[0]


def test_relay_flag_needs_two_nat_gateways() -> None:
    documents = [d for d in docs() if not (d["kind"] == "Gateway" and d["metadata"]["name"] == "gw-qingdao")
                 and not (d["kind"] == "Node" and d["metadata"]["name"].startswith("qd"))]
    cloud = plan(load(documents), "cloud-1")
    assert cloud.relay is False and cloud.relay_gateway == "gw-cloud"
    assert [p.gateway for p in cloud.peers] == ["gw-hangzhou"]


def test_remote_gateway_without_active_endpoint_is_skipped_with_a_warning() -> None:
    documents = docs()
    set_ready(documents, "qd-1", False)
    set_ready(documents, "qd-2", False)
    cluster = load(documents)
    cloud = plan(cluster, "cloud-1")
    assert [p.gateway for p in cloud.peers] == ["gw-hangzhou"]
    assert cloud.warnings == ("Gateway gw-qingdao has no active tunnel endpoint "
                              "(no Ready tunnel candidate): its nodes are unreachable",)
    assert not any(r.dst == ip_network("10.244.4.0/24") for r in cloud.routes)
    # Hangzhou's relay peer no longer carries qingdao's prefixes.
    assert nets(plan(cluster, "hz-1").peers[0].allowed_ips) == CLOUD


# --- routes, rules, sysctls -----------------------------------------------------

def test_active_gateway_routes_remote_prefixes_into_raven0(cluster: Cluster) -> None:
    hz = plan(cluster, "hz-1")
    assert all(r.dev == "raven0" and r.gateway is None and r.table == 9028 for r in hz.routes)
    assert all(r.src == ip_address("192.168.1.11") and r.mtu == 1420 for r in hz.routes)
    assert sorted(nets(r.dst for r in hz.routes)) == sorted(CLOUD + QINGDAO)
    # The gateway's own domain never goes into the tunnel.
    assert not set(nets(r.dst for r in hz.routes)) & set(HANGZHOU)
    assert hz.rules == (Rule(priority=100, table=254, family=4, ip_proto="udp", sport=4500),
                        Rule(priority=101, table=9028, family=4))


def test_member_routes_go_via_the_active_gateway_node(cluster: Cluster) -> None:
    member = plan(cluster, "cloud-2")
    assert member.peers == () and member.relay is False and member.sysctls == ()
    assert member.routes == tuple(Route(dst=ip_network(n), dev=None, gateway=ip_address("172.16.0.11"),
                                        table=9027, mtu=1420)
                                  for n in sorted(HANGZHOU + QINGDAO, key=lambda n: ip_network(n).network_address))
    assert member.rules == (Rule(priority=101, table=9027),)


def test_standby_candidate_routes_like_a_member(cluster: Cluster) -> None:
    standby = plan(cluster, "hz-2")
    assert standby.role is Role.STANDBY and standby.peers == () and standby.sysctls == ()
    assert standby.public_key == public_key_of("hz-2")
    assert {r.gateway for r in standby.routes} == {ip_address("192.168.1.11")}
    assert sorted(nets(r.dst for r in standby.routes)) == sorted(CLOUD + QINGDAO)


def test_sysctls_of_the_active_gateway(cluster: Cluster) -> None:
    assert plan(cluster, "hz-1").sysctls == (("net.ipv4.conf.raven0.rp_filter", "2"),
                                             ("net.ipv4.ip_forward", "1"))


def test_ipv6_subnets_enable_ipv6_forwarding_and_v6_rules() -> None:
    documents = docs()
    find(documents, "Node", "qd-2")["spec"]["podCIDRs"] = ["10.244.5.0/24", "fd00:10:244:5::/64"]
    cluster = load(documents)
    hz = plan(cluster, "hz-1")
    assert hz.sysctl("net.ipv6.conf.all.forwarding") == "1"
    assert ip_network("fd00:10:244:5::/64") in peer(hz, "gw-cloud").allowed_ips
    assert Rule(priority=101, table=9028, family=6) in hz.rules
    v6_route = next(r for r in hz.routes if r.dst.version == 6)
    assert v6_route.src is None   # no IPv6 node address to pin as source
    # A member cannot route IPv6 via the gateway's IPv4 address: skipped, with a warning.
    member = plan(cluster, "hz-2")
    assert all(r.dst.version == 4 for r in member.routes)
    assert any("fd00:10:244:5::/64" in w for w in member.warnings)


def test_custom_interface_tables_and_priority(cluster: Cluster) -> None:
    hz = plan(cluster, "hz-1", interface="wg-raven", gateway_table=200, rule_priority=50, listen_port=4600)
    assert {r.dev for r in hz.routes} == {"wg-raven"} and {r.table for r in hz.routes} == {200}
    assert hz.rules == (Rule(priority=49, table=254, ip_proto="udp", sport=4600), Rule(priority=50, table=200))
    assert hz.sysctl("net.ipv4.conf.wg-raven.rp_filter") == "2"
    assert hz.listen_port == 4600 and hz.interface == "wg-raven"
    assert any("spec.endpoints[1].port is 4500 but the listen port is 4600" in w for w in hz.warnings)
    member = plan(cluster, "cloud-2", member_table=300, rule_priority=50)
    assert {r.table for r in member.routes} == {300} and member.rules == (Rule(priority=50, table=300),)


def test_member_of_a_gateway_without_active_endpoint_gets_no_routes() -> None:
    documents = docs()
    set_ready(documents, "hz-1", False)
    set_ready(documents, "hz-2", False)
    member = plan(load(documents), "hz-2")
    assert member.role is Role.STANDBY and member.routes == () and member.rules == ()
    assert any("gw-hangzhou has no active tunnel endpoint" in w for w in member.warnings)


# --- MTU and parameters -----------------------------------------------------------

def test_mtu_defaults_to_underlay_minus_80(cluster: Cluster) -> None:
    assert plan(cluster, "hz-1").mtu == 1420
    assert plan(cluster, "hz-1", underlay_mtu=9000).mtu == 8920
    assert plan(cluster, "hz-1", mtu=1380, underlay_mtu=9000).mtu == 1380
    assert {r.mtu for r in plan(cluster, "cloud-2", mtu=1300).routes} == {1300}


@pytest.mark.parametrize("kwargs", [
    {"mtu": 100}, {"underlay_mtu": 600}, {"listen_port": 0}, {"listen_port": 70000},
    {"interface": ""}, {"interface": "a-very-long-interface-name"}, {"interface": "eth0.100"},
    {"gateway_table": 254},
    {"member_table": 0}, {"rule_priority": 1}, {"keepalive": -1}, {"local_public_key": b"short"},
])
def test_bad_parameters_are_value_errors(cluster: Cluster, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        plan(cluster, "hz-1", **kwargs)


# --- local key check ------------------------------------------------------------

def test_local_public_key_matching_the_cluster_is_accepted(cluster: Cluster) -> None:
    assert plan(cluster, "hz-1", local_public_key=public_key_of("hz-1")).role is Role.ACTIVE_GATEWAY
    assert plan(cluster, "hz-2", local_public_key=public_key_of("hz-2")).role is Role.STANDBY
    # Not an endpoint: nothing to compare with.
    assert plan(cluster, "cloud-2", local_public_key=public_key_of("hz-1")).role is Role.MEMBER


def test_local_public_key_mismatch_names_the_field(cluster: Cluster) -> None:
    with pytest.raises(ClusterError) as info:
        plan(cluster, "hz-1", local_public_key=public_key_of("hz-2"))
    message = str(info.value)
    assert message.startswith("Gateway gw-hangzhou: spec.endpoints[1].config.publicKey: ")
    assert "does not match the local public key" in message and "\n" not in message
    with pytest.raises(ClusterError, match=r"spec\.endpoints\[2\]\.config\.publicKey"):
        plan(cluster, "hz-2", local_public_key=public_key_of("hz-1"))


# --- failover -------------------------------------------------------------------

def test_failover_when_the_active_node_goes_not_ready(cluster: Cluster) -> None:
    documents = docs()
    set_ready(documents, "hz-1", False)
    after = load(documents)

    new_gateway = plan(after, "hz-2")
    assert new_gateway.role is Role.ACTIVE_GATEWAY
    assert new_gateway.peers == plan(cluster, "hz-1").peers       # same view of the world
    assert {r.src for r in new_gateway.routes} == {ip_address("192.168.1.12")}

    old_gateway = plan(after, "hz-1")
    assert old_gateway.role is Role.STANDBY and old_gateway.peers == ()
    assert {r.gateway for r in old_gateway.routes} == {ip_address("192.168.1.12")}

    # Remote gateways now talk to hz-2's key, at the address hz-2 calls in from (under NAT).
    cloud_peer = peer(plan(after, "cloud-1"), "gw-hangzhou")
    assert cloud_peer.public_key == public_key_of("hz-2")
    assert cloud_peer.endpoint is None and cloud_peer.node_name == "hz-2"
    # Qingdao still reaches hangzhou through the cloud, with unchanged prefixes.
    assert plan(after, "qd-1").peers == plan(cluster, "qd-1").peers


def test_failover_from_a_written_status() -> None:
    documents = docs()
    find(documents, "Gateway", "gw-hangzhou")["status"] = {
        "activeEndpoints": [{"nodeName": "hz-1", "type": "tunnel", "port": 4500}]}
    assert plan(load(documents), "hz-1").role is Role.ACTIVE_GATEWAY
    set_ready(documents, "hz-1", False)
    assert plan(load(documents), "hz-2").role is Role.ACTIVE_GATEWAY
    assert plan(load(documents), "hz-1").role is Role.STANDBY


# --- determinism ----------------------------------------------------------------

def test_plans_are_deterministic_whatever_the_document_order(cluster: Cluster) -> None:
    shuffled = docs()
    random.Random(4).shuffle(shuffled)
    other = load(shuffled)
    for node in cluster.nodes:
        a, b = plan(cluster, node.name), plan(other, node.name)
        assert a == b and hash(a) == hash(b)
        assert list(a.routes) == sorted(a.routes, key=lambda r: (r.dst.version, int(r.dst.network_address)))
        assert list(a.sysctls) == sorted(a.sysctls)
