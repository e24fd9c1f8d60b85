"""Variants of the cluster-object field cases (F11/F12/F15a kind: stale or odd objects), found by
trying related real-world inputs against the loader and planner. Each was a failure before its fix:
Raven carries on with such an object, so ravenvpn must too (a warning naming the object, no error).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ravenvpn.raven.cluster import Cluster, load_cluster
from ravenvpn.raven.plan.planner import Role, plan
from tests.unit.test_raven_field_cases import example_docs, find, load



def nets(prefixes: Any) -> set[str]:
    return {str(p) for p in prefixes}


# --- a pod CIDR written with host bits set --------------------------------------------------------

def test_a_pod_cidr_with_host_bits_routes_its_network_and_the_node_still_plans() -> None:
    """Kubernetes accepts ``spec.podCIDR: 10.244.2.5/24`` (ParseCIDRSloppy) and Raven routes
    10.244.2.0/24 (Go's net.ParseCIDR); ravenvpn made it an error of the node (here the active
    gateway hz-1, so gw-hangzhou went down) and dropped the subnet everywhere else."""
    docs = example_docs()
    find(docs, "Node", "hz-1")["spec"] = {"podCIDR": "10.244.2.5/24", "podCIDRs": ["10.244.2.5/24"]}
    cluster = load(docs)
    assert cluster.node_errors == ()
    assert cluster.warnings == tuple(f"Node hz-1: {field}: invalid CIDR '10.244.2.5/24' (10.244.2.5/24 has "
                                     "host bits set) (10.244.2.0/24 used)" for field in ("spec.podCIDR",
                                                                                          "spec.podCIDRs[0]"))
    hz1 = plan(cluster, "hz-1")
    assert hz1.role is Role.ACTIVE_GATEWAY
    cloud_peer = next(p for p in plan(cluster, "cloud-1").peers if p.gateway == "gw-hangzhou")
    assert "10.244.2.0/24" in nets(cloud_peer.allowed_ips)


def test_a_status_subnet_with_host_bits_is_routed_as_its_network() -> None:
    docs = example_docs()
    find(docs, "Gateway", "gw-qingdao")["status"] = {"nodes": [
        {"nodeName": "qd-1", "privateIP": "192.168.2.11", "subnets": ["10.244.4.9/24"]},
        {"nodeName": "qd-2", "privateIP": "192.168.2.12", "subnets": ["10.244.5.0/24"]}]}
    cluster = load(docs)
    assert cluster.node_errors == ()
    assert cluster.warnings == ("Gateway gw-qingdao: status.nodes[0].subnets[0]: invalid CIDR '10.244.4.9/24' "
                                "(10.244.4.9/24 has host bits set) (10.244.4.0/24 used)",)
    cloud_peer = next(p for p in plan(cluster, "cloud-1").peers if p.gateway == "gw-qingdao")
    assert nets(cloud_peer.allowed_ips) == {"10.244.4.0/24", "10.244.5.0/24", "192.168.2.11/32", "192.168.2.12/32"}


def test_a_malformed_pod_cidr_is_still_skipped_and_an_error_of_its_node() -> None:
    docs = example_docs()
    find(docs, "Node", "hz-2")["spec"] = {"podCIDR": "10.244.3.0/33"}
    cluster = load(docs)
    assert cluster.node_error("hz-2") == "Node hz-2: spec.podCIDR: invalid CIDR '10.244.3.0/33'"


# --- publicIP in IPv6 forms ----------------------------------------------------------------------------

def with_cloud_public_ip(text: str) -> Cluster:
    docs = example_docs()
    for endpoint in find(docs, "Gateway", "gw-cloud")["spec"]["endpoints"]:
        endpoint["publicIP"] = text
    return load(docs)


def test_an_ipv6_public_ip_is_the_peer_endpoint() -> None:
    cluster = with_cloud_public_ip("2001:db8::1")
    assert cluster.warnings == ()
    assert plan(cluster, "hz-1").peers[0].endpoint == ("2001:db8::1", 4500)


def test_an_ipv6_public_ip_in_brackets_is_that_address() -> None:
    """``[2001:db8::1]`` (copied from a ``host:port`` endpoint) skipped both of gw-cloud's endpoints:
    cloud-1 could not plan and the edges had no peer for the cloud."""
    cluster = with_cloud_public_ip("[2001:db8::1]")
    assert cluster.warnings == () and cluster.node_errors == ()
    assert plan(cluster, "cloud-1").role is Role.ACTIVE_GATEWAY
    assert plan(cluster, "hz-1").peers[0].endpoint == ("2001:db8::1", 4500)


def test_an_ipv4_mapped_public_ip_is_the_ipv4_address() -> None:
    """``::ffff:198.51.100.1`` was planned as an IPv6 endpoint: the device's IPv6 socket is IPV6_V6ONLY
    (dual stack is two sockets), and sending to a mapped address from it fails with ENETUNREACH, so
    the edges never reached the cloud."""
    cluster = with_cloud_public_ip("::ffff:198.51.100.1")
    assert plan(cluster, "hz-1").peers[0].endpoint == ("198.51.100.1", 4500)


# --- relay selection: exposeType spelt otherwise ---------------------------------------------------------

CASES = Path(__file__).resolve().parents[1] / "data" / "field_cases"


def relay_of(cluster: Cluster) -> set[str | None]:
    """The relay every node of the cluster plans with (one value when they agree)."""
    return {plan(cluster, n.name).relay_gateway for n in cluster.nodes}


def n04a_with(expose_type: str) -> Cluster:
    """N04a with the branch site's Gateway sorting before gw-cloud, and gw-cloud's exposeType replaced."""
    text = (CASES / "N04a_relay_public_edge.yaml").read_text()
    return load_cluster(text.replace("gw-factory", "gw-branch").replace("exposeType: PublicIP",
                                                                         f"exposeType: {expose_type}"))


def test_exposetype_in_another_case_still_makes_the_exposed_gateway_the_relay() -> None:
    """``exposeType: publicip`` was ignored, so the branch site with a public IP (first by name)
    became every NAT'd site's relay: field case N04a again."""
    assert relay_of(n04a_with("PublicIP")) == {"gw-cloud"}
    cluster = n04a_with("publicip")
    assert cluster.warnings == ("Gateway gw-cloud: spec.exposeType: 'publicip' is spelt 'PublicIP' "
                                "(read as 'PublicIP')",)
    assert relay_of(cluster) == {"gw-cloud"}
    assert relay_of(n04a_with("LOADBALANCER")) == {"gw-cloud"}


def test_an_unknown_exposetype_is_ignored_with_a_warning() -> None:
    cluster = n04a_with("NodePort")
    assert cluster.warnings == ("Gateway gw-cloud: spec.exposeType: unknown exposeType 'NodePort' (expected "
                                "PublicIP or LoadBalancer) (ignored)",)
    assert relay_of(cluster) == {"gw-branch"}


def n04b_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((CASES / "N04b_relay_before.yaml").read_text()) if d]


def test_two_exposed_gateways_give_every_node_the_same_relay_in_any_document_order() -> None:
    docs = n04b_docs()
    relays = {frozenset(relay_of(load(order))) for order in (docs, docs[::-1], docs[3:] + docs[:3])}
    assert relays == {frozenset({"gw-cloud"})}


def test_a_nated_gateway_with_exposetype_is_not_the_relay() -> None:
    """exposeType on a gateway under NAT is ignored (it cannot be reached to relay), even when its
    name sorts first."""
    docs = n04b_docs()
    find(docs, "Gateway", "gw-hangzhou")["spec"]["exposeType"] = "PublicIP"
    cluster = load(docs)
    assert any(w.startswith("Gateway gw-hangzhou: spec.exposeType: 'PublicIP', but") for w in cluster.warnings)
    assert relay_of(cluster) == {"gw-cloud"}


def test_the_relay_stays_while_its_gateway_fails_over_and_moves_only_when_it_has_no_candidate() -> None:
    docs = n04b_docs()
    find(docs, "Node", "ecs-a01")["status"]["conditions"][0]["status"] = "False"
    assert relay_of(load(docs)) == {"gw-cloud"}                 # ecs-c03 took over inside gw-cloud
    find(docs, "Node", "ecs-c03")["status"]["conditions"][0]["status"] = "False"
    assert relay_of(load(docs)) == {"gw-idc"}                   # gw-cloud is down: the other exposed one


# --- F12 at the Node: empty strings for "none" ------------------------------------------------------------

def test_an_empty_pod_cidr_on_a_node_is_no_pod_cidr_not_an_error_of_the_node() -> None:
    """``podCIDR: ""`` (a node without pod CIDR, as F12's yurt-manager writes ``subnets: [""]``)
    made hz-2, a tunnel candidate, unable to plan: ``ravenvpn up`` refused to start there."""
    docs = example_docs()
    find(docs, "Node", "hz-2")["spec"] = {"podCIDR": "", "podCIDRs": [""]}
    cluster = load(docs)
    assert cluster.node_errors == ()
    assert cluster.warnings == ("Node hz-2: spec.podCIDR: empty (skipped)", "Node hz-2: spec.podCIDRs[0]: empty (skipped)")
    assert plan(cluster, "hz-2").role is Role.STANDBY
    cloud_peer = next(p for p in plan(cluster, "cloud-1").peers if p.gateway == "gw-hangzhou")
    assert "192.168.1.12/32" in nets(cloud_peer.allowed_ips)       # its own IP is still routed


def test_an_empty_internal_ip_before_the_real_one_is_skipped() -> None:
    docs = example_docs()
    find(docs, "Node", "hz-2")["status"]["addresses"] = [{"type": "InternalIP", "address": ""},
                                                         {"type": "InternalIP", "address": "192.168.1.12"}]
    cluster = load(docs)
    assert cluster.node_errors == ()
    assert plan(cluster, "hz-2").role is Role.STANDBY
    node = cluster.node("hz-2")
    assert node is not None and str(node.internal_ip) == "192.168.1.12"
