"""Field cases of issue 14 (tests/data/field_cases, copied from shared/field-cases): the cluster side.

Kind 6, tolerant cluster input: one stale or odd object in the shared cluster file must not stop every
node. Each field case (F11, F12, F15a) is asserted as its header says; then every single field of the
example cluster (with a written status, so status paths are covered too) is replaced by odd values in
turn, and no replacement may make the loader fail, make the planner raise anything but a one-line
ClusterError, or stop more than the one node whose own object it broke.
Kind 7 (F14b): no endpoint for a NATed gateway without a known public address.
Kind 8 (cluster part): a publicIP that is a hostname, resolved outside the planner.
Kind 9 (N04a, N04b): the relay is chosen by Gateway, not by which candidate is active.
Namespace counterparts: tests/test_raven_endpoints_netns.py.
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
import yaml

from ravenvpn.raven.cluster import Cluster, ClusterError, load_cluster, load_cluster_file
from ravenvpn.raven.plan.planner import Role, plan

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).resolve().parents[1] / "data" / "field_cases"
EXAMPLE = ROOT / "examples" / "cluster-three-domains.yaml"


def load_case(name: str) -> Cluster:
    return load_cluster_file(CASES / f"{name}.yaml")


def nets(prefixes: Any) -> set[str]:
    return {str(p) for p in prefixes}


# --- kind 6: the field cases ---------------------------------------------------------------------

def test_f11_label_naming_a_deleted_gateway_leaves_that_node_in_no_gateway() -> None:
    cluster = load_case("F11_stale_gateway_label")
    warning = ("Node edge-3: metadata.labels[raven.openyurt.io/gateway]: unknown Gateway 'gw-edge-old' "
               "(the node is in no gateway)")
    assert cluster.warnings == (warning,)
    edge3 = plan(cluster, "edge-3")
    assert edge3.role is Role.NONE and edge3.gateway is None and edge3.routes == ()
    assert edge3.warnings == (warning, "Node edge-3 is in no Gateway: role none (Raven leaves it alone)")
    cloud, edge1 = plan(cluster, "cloud-1"), plan(cluster, "edge-1")
    assert cloud.role is Role.ACTIVE_GATEWAY and edge1.role is Role.ACTIVE_GATEWAY
    assert [p.gateway for p in cloud.peers] == ["gw-edge"]
    # Planned as without edge-3: its pod CIDR and IP are routed nowhere.
    assert nets(cloud.peers[0].allowed_ips) == {"10.244.2.0/24", "192.168.1.11/32"}
    assert warning in cloud.warnings and warning in edge1.warnings   # `ravenvpn status` shows it everywhere


def test_f12_empty_subnet_written_by_yurt_manager_is_skipped_and_the_node_stays_a_member() -> None:
    cluster = load_case("F12_status_empty_subnet")
    assert cluster.warnings == ("Gateway gw-edge: status.nodes[1].subnets[0]: empty (skipped)",)
    gw = cluster.gateway("gw-edge")
    assert gw is not None and [m.node_name for m in gw.nodes] == ["edge-1", "edge-2"]
    edge2 = gw.member("edge-2")
    assert edge2 is not None and edge2.subnets == ()
    assert plan(cluster, "edge-2").role is Role.MEMBER
    peer = plan(cluster, "cloud-1").peers[0]
    assert nets(peer.allowed_ips) == {"10.244.2.0/24", "192.168.1.11/32", "192.168.1.12/32"}


def test_f15a_deleted_node_in_a_written_status_fails_over_to_the_remaining_endpoint() -> None:
    cluster = load_case("F15a_deleted_node_written_status")
    assert cluster.warnings == (
        "Gateway gw-edge: spec.endpoints[0].nodeName: unknown Node 'edge-1' (endpoint skipped)",
        "Gateway gw-edge: status.activeEndpoints[0].nodeName: unknown Node 'edge-1' (entry ignored)",
        "Gateway gw-edge: status.nodes[0].nodeName: unknown Node 'edge-1' (entry skipped)",
    )
    gw = cluster.gateway("gw-edge")
    assert gw is not None and gw.active_tunnel is not None and gw.active_tunnel.node_name == "edge-2"
    assert plan(cluster, "edge-2").role is Role.ACTIVE_GATEWAY
    peer = plan(cluster, "cloud-1").peers[0]
    assert peer.node_name == "edge-2"
    assert peer.public_key_b64 == "HJPijRUu50SDe8dhwwp11zb0Vi8wwIAN3muHwBuKLVg="
    # edge-1's pod CIDR and IP are no longer routed.
    assert nets(peer.allowed_ips) == {"10.244.3.0/24", "192.168.1.12/32"}
    with pytest.raises(ClusterError, match=r"^Node edge-1: not found in the cluster$"):
        plan(cluster, "edge-1")


# --- kind 6: more of the kind ----------------------------------------------------------------------

def example_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d.get("kind") == kind and d["metadata"]["name"] == name)


def load(docs: list[dict[str, Any]]) -> Cluster:
    return load_cluster(yaml.safe_dump_all(docs, sort_keys=False))


def test_a_gateway_with_no_endpoints_leaves_its_members_without_routes_and_the_rest_planned() -> None:
    docs = example_docs()
    find(docs, "Gateway", "gw-qingdao")["spec"]["endpoints"] = []
    cluster = load(docs)
    qd2 = plan(cluster, "qd-2")
    assert qd2.role is Role.MEMBER and qd2.routes == ()
    assert any("Gateway gw-qingdao has no active tunnel endpoint" in w for w in qd2.warnings)
    hz = plan(cluster, "hz-1")
    assert [p.gateway for p in hz.peers] == ["gw-cloud"]
    assert any("Gateway gw-qingdao has no active tunnel endpoint" in w for w in hz.warnings)


def test_a_stray_wide_prefix_is_dropped_not_the_subnets_it_covers() -> None:
    docs = example_docs()
    find(docs, "Node", "qd-2")["spec"] = {"podCIDR": "10.244.0.0/16"}
    cluster = load(docs)
    assert any(w.startswith("Node qd-2: spec.podCIDR: 10.244.0.0/16 overlaps") for w in cluster.warnings)
    hz_peer = plan(cluster, "hz-1").peers[0]
    assert {"10.244.0.0/24", "10.244.1.0/24", "10.244.4.0/24"} <= nets(hz_peer.allowed_ips)
    assert "10.244.0.0/16" not in nets(hz_peer.allowed_ips)
    assert "192.168.2.12/32" in nets(hz_peer.allowed_ips)      # qd-2 itself is still reached


def test_the_same_pod_cidr_in_two_gateways_is_kept_by_the_first_gateway_name() -> None:
    docs = example_docs()
    find(docs, "Node", "qd-2")["spec"] = {"podCIDR": "10.244.2.0/24"}   # hz-1's
    cluster = load(docs)
    cloud = plan(cluster, "cloud-1")
    hz = next(p for p in cloud.peers if p.gateway == "gw-hangzhou")
    qd = next(p for p in cloud.peers if p.gateway == "gw-qingdao")
    assert "10.244.2.0/24" in nets(hz.allowed_ips) and "10.244.2.0/24" not in nets(qd.allowed_ips)


def test_the_node_s_own_endpoint_key_missing_is_an_error_for_that_node_only() -> None:
    docs = example_docs()
    del find(docs, "Gateway", "gw-hangzhou")["spec"]["endpoints"][1]["config"]["publicKey"]
    cluster = load(docs)
    with pytest.raises(ClusterError, match=r"^Gateway gw-hangzhou: spec\.endpoints\[1\]\.config\.publicKey: missing$"):
        plan(cluster, "hz-1")
    # hz-2, the other candidate, takes over; everybody else plans with a warning.
    assert plan(cluster, "hz-2").role is Role.ACTIVE_GATEWAY
    assert plan(cluster, "cloud-1").peers[0].node_name == "hz-2"


def test_a_node_in_no_gateway_gets_role_none_with_a_warning() -> None:
    docs = example_docs()
    docs.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker-9"},
                 "status": {"addresses": [{"type": "InternalIP", "address": "10.9.9.9"}]}})
    node_plan = plan(load(docs), "worker-9")
    assert node_plan.role is Role.NONE
    assert node_plan.warnings == ("Node worker-9 is in no Gateway: role none (Raven leaves it alone)",)


def test_unparseable_yaml_is_still_an_error() -> None:
    with pytest.raises(ClusterError, match=r"^YAML syntax error at line 3"):
        load_cluster("apiVersion: v1\nkind: [Node\n")


# --- kind 6: every field, odd values ---------------------------------------------------------------

# Absent, empty, a wrong string (not an IP, CIDR, key, type or name), a wrong number, a wrong shape.
ODD_VALUES: tuple[Any, ...] = (None, "", "x", -1, {}, [""])
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)   # libyaml: 5x faster, same output
NODES = ("cloud-1", "cloud-2", "hz-1", "hz-2", "qd-1", "qd-2")


def swept_docs() -> list[dict[str, Any]]:
    """The example with a written status on gw-hangzhou, so status fields are swept too."""
    docs = [d for d in example_docs() if d["kind"] in ("Gateway", "Node")]
    find(docs, "Gateway", "gw-hangzhou")["status"] = {
        "nodes": [{"nodeName": "hz-1", "privateIP": "192.168.1.11", "subnets": ["10.244.2.0/24"]},
                  {"nodeName": "hz-2", "privateIP": "192.168.1.12", "subnets": ["10.244.3.0/24"]}],
        "activeEndpoints": [{"nodeName": "hz-1", "type": "tunnel", "port": 4500, "publicIP": "203.0.113.7",
                             "config": {"publicKey": "D+xuENS9VdZB30+0w/jKwavBmjJW9CHzswiFhit5Yn8="}}]}
    return docs


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key or index below ``value``, parents before children."""
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def replaced(docs: list[dict[str, Any]], path: tuple[Any, ...], value: Any) -> list[dict[str, Any]]:
    out = copy.deepcopy(docs)
    parent: Any = out
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = copy.deepcopy(value)
    return out


def test_no_single_odd_field_stops_more_than_its_own_node() -> None:
    docs = swept_docs()
    tried = 0
    for path in paths(docs):
        if len(path) < 2:
            continue     # whole documents: covered by the cases in test_raven_model
        for value in ODD_VALUES:
            text = yaml.dump_all(replaced(docs, path, value), Dumper=DUMPER, sort_keys=False)
            where = f"{'.'.join(map(str, path))} = {value!r}"
            cluster = load_cluster(text)      # never raises: only unparseable YAML does
            failed = []
            for name in NODES:
                try:
                    plan(cluster, name)
                except ClusterError as exc:
                    message = str(exc)
                    assert "\n" not in message, where
                    assert message == cluster.node_error(name) or message.startswith(f"Node {name}: not found"), \
                        f"{where}: {message}"
                    failed.append(name)
            assert len(failed) <= 1, f"{where}: stops {failed}"
            tried += 1
    assert tried > 1000



# --- kind 9: relay selection -------------------------------------------------------------------------

def relay_of(cluster: Cluster) -> set[str | None]:
    """The relay every node of the cluster plans with (one value when they agree)."""
    return {plan(cluster, n.name).relay_gateway for n in cluster.nodes}


def test_n04a_the_exposed_gateway_relays_not_a_branch_site_with_a_public_ip() -> None:
    cluster = load_case("N04a_relay_public_edge")
    assert relay_of(cluster) == {"gw-cloud"}
    assert plan(cluster, "ecs-a01").relay is True and plan(cluster, "factory-1").relay is False
    hz = plan(cluster, "hz-1")
    relayed = next(p for p in hz.peers if p.gateway == "gw-cloud")
    assert relayed.relays_for == ("gw-qingdao",) and "10.244.4.0/24" in nets(relayed.allowed_ips)
    assert "10.244.4.0/24" not in nets(next(p for p in hz.peers if p.gateway == "gw-factory").allowed_ips)


def test_n04b_a_failover_inside_the_relay_gateway_keeps_the_relay_and_the_relayed_paths() -> None:
    before, after = load_case("N04b_relay_before"), load_case("N04b_relay_after_failover")
    assert relay_of(before) == relay_of(after) == {"gw-cloud"}
    assert plan(before, "ecs-a01").relay is True and plan(after, "ecs-c03").relay is True
    for name in ("hz-1", "qd-1"):
        b, a = plan(before, name), plan(after, name)
        # Same gateways, same allowed IPs: only gw-cloud's key and endpoint follow its failover.
        assert [(p.gateway, p.allowed_ips, p.relays_for) for p in b.peers] == \
               [(p.gateway, p.allowed_ips, p.relays_for) for p in a.peers]
        assert next(p for p in b.peers if p.gateway == "gw-idc") == next(p for p in a.peers if p.gateway == "gw-idc")
    # The other exposed gateway's plan does not change at all.
    assert plan(before, "ecs-b02").peers[1:] == plan(after, "ecs-b02").peers[1:]


# --- kind 7: endpoints of NATed peers ------------------------------------------------------------------

def test_f14b_an_edge_under_nat_without_public_ip_has_no_endpoint_until_it_calls_in() -> None:
    cluster = load_case("F14b_edge_nat_no_public_ip")
    edge = plan(cluster, "cloud-1").peers[0]
    assert edge.gateway == "gw-edge-a" and edge.endpoint is None        # not 192.168.1.11:4500
    assert edge.persistent_keepalive == 5       # once it has called in, the NAT mapping is kept open
    cloud = plan(cluster, "edge-a1").peers[0]
    assert cloud.endpoint == ("203.0.113.10", 4500) and cloud.persistent_keepalive == 5


def test_a_known_public_address_of_a_nated_edge_is_used() -> None:
    # F12's gw-edge is under NAT too, but its agent wrote the discovered address into the status.
    peer = plan(load_case("F12_status_empty_subnet"), "cloud-1").peers[0]
    assert peer.endpoint == ("203.0.113.77", 4500)


def test_a_gateway_not_under_nat_without_public_ip_is_reached_at_its_node_ip() -> None:
    docs = example_docs()
    for ep in find(docs, "Gateway", "gw-cloud")["spec"]["endpoints"]:
        del ep["publicIP"]
    cloud = plan(load(docs), "hz-1").peers[0]
    assert cloud.gateway == "gw-cloud" and cloud.endpoint == ("172.16.0.11", 4500)


# --- kind 8 (cluster part): a publicIP that is a hostname ---------------------------------------------

def with_cloud_hostname(name: str = "Cloud.Raven.Test.") -> list[dict[str, Any]]:
    docs = example_docs()
    for ep in find(docs, "Gateway", "gw-cloud")["spec"]["endpoints"]:
        ep["publicIP"] = name
    return docs


def test_a_hostname_public_ip_is_kept_as_a_name_for_the_runtime_to_resolve() -> None:
    cluster = load(with_cloud_hostname())
    assert cluster.warnings == ()
    gw = cluster.gateway("gw-cloud")
    assert gw is not None and gw.active_tunnel is not None
    assert gw.active_tunnel.public_host == "cloud.raven.test" and gw.active_tunnel.public_ip is None
    assert cluster.hostnames == ("cloud.raven.test",)


def test_the_planner_uses_the_resolved_address_and_does_no_io_itself() -> None:
    cluster = load(with_cloud_hostname())
    hz = plan(cluster, "hz-1", resolved={"cloud.raven.test": ip_address("198.51.100.1")})
    assert hz.peers[0].endpoint == ("198.51.100.1", 4500)
    assert not any("resolve" in w for w in hz.warnings)
    # Re-resolved to another address on a reload: the plan follows.
    moved = plan(cluster, "hz-1", resolved={"cloud.raven.test": ip_address("198.51.100.77")})
    assert moved.peers[0].endpoint == ("198.51.100.77", 4500)


def test_an_unresolvable_hostname_is_a_warning_for_that_endpoint_not_a_failure() -> None:
    cluster = load(with_cloud_hostname())
    hz = plan(cluster, "hz-1", resolved={"cloud.raven.test": "Name or service not known"})
    assert hz.role is Role.ACTIVE_GATEWAY and hz.peers[0].endpoint is None
    assert ("Gateway gw-cloud: spec.endpoints[1].publicIP: cannot resolve 'cloud.raven.test' "
            "(Name or service not known): no endpoint until it calls in") in hz.warnings
    # Not passed at all (a caller that did not resolve): the same, never an exception.
    assert plan(cluster, "qd-1").peers[0].endpoint is None
    assert plan(cluster, "cloud-1").role is Role.ACTIVE_GATEWAY


def test_an_address_observed_in_the_status_wins_over_the_spec_hostname() -> None:
    docs = with_cloud_hostname()
    find(docs, "Gateway", "gw-cloud")["status"] = {"activeEndpoints": [
        {"nodeName": "cloud-1", "type": "tunnel", "port": 4500, "publicIP": "203.0.113.5"}]}
    cluster = load(docs)
    assert plan(cluster, "hz-1").peers[0].endpoint == ("203.0.113.5", 4500)
    assert cluster.hostnames == ("cloud.raven.test",)    # the spec still names it (a later failover)


@pytest.mark.parametrize("text", ["198.51.100.300", "bad_name.example", "-lead.example", "a..b", "x" * 64 + ".example"])
def test_a_public_ip_that_is_neither_address_nor_hostname_skips_the_endpoint(text: str) -> None:
    cluster = load(with_cloud_hostname(text))
    assert (f"Gateway gw-cloud: spec.endpoints[1].publicIP: invalid IP address or hostname {text!r} "
            "(endpoint skipped)") in cluster.warnings
    with pytest.raises(ClusterError, match=r"^Gateway gw-cloud: spec\.endpoints\[1\]\.publicIP"):
        plan(cluster, "cloud-1")
    assert plan(cluster, "hz-1").role is Role.ACTIVE_GATEWAY


def test_resolve_hostnames_uses_the_system_resolver_and_never_raises() -> None:
    from ravenvpn.raven.cluster.hostnames import resolve_hostnames
    calls = []

    def fake(host: str, *args: Any) -> list[Any]:
        calls.append((host, args))
        if host == "gone.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("2001:db8::1", 0, 0, 0)),
                (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("192.0.2.1", 0))]

    out = resolve_hostnames(["cloud.example", "gone.example"], getaddrinfo=fake)
    assert out == {"cloud.example": ip_address("2001:db8::1"), "gone.example": "Name or service not known"}
    assert calls[0][1] == (None, socket.AF_UNSPEC, socket.SOCK_DGRAM, 0, socket.AI_ADDRCONFIG)
    # The real resolver, on a name every host's /etc/hosts has.
    real = resolve_hostnames(["localhost"])["localhost"]
    assert not isinstance(real, str) and real.is_loopback
