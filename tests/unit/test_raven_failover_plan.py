"""Liveness facts as an input of the pure planner (ravenvpn.raven.plan.failover); no root needed."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
import yaml

from ravenvpn.raven.cluster import Cluster, load_cluster, load_cluster_file
from ravenvpn.raven.liveness import LivenessView
from ravenvpn.raven.plan.failover import apply_liveness, candidates, liveness_config
from ravenvpn.raven.plan.planner import Role, plan

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cluster-three-domains.yaml"


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return load_cluster_file(EXAMPLE)


def with_not_ready(name: str) -> Cluster:
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    node = next(d for d in docs if d["kind"] == "Node" and d["metadata"]["name"] == name)
    node["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    return load_cluster(yaml.safe_dump_all(docs))


def view(active: dict[str, str | None], local_active: bool = False) -> LivenessView:
    return LivenessView(tuple(sorted(active.items())), local_active)


def routes_via(p) -> set[str]:  # type: ignore[no-untyped-def]
    return {str(r.gateway) for r in p.routes}


def test_candidates_are_ready_tunnel_endpoints_with_the_elected_one_first(cluster: Cluster) -> None:
    hz = cluster.gateway("gw-hangzhou")
    assert hz is not None
    assert [ep.node_name for ep in candidates(cluster, hz)] == ["hz-1", "hz-2"]
    assert [ep.node_name for ep in candidates(with_not_ready("hz-1"), with_not_ready("hz-1").gateway("gw-hangzhou"))] == ["hz-2"]
    cfg = liveness_config(cluster, "hz-2")
    assert cfg is not None
    assert [c.node for c in cfg.candidates] == ["hz-1", "hz-2"]
    assert cfg.watchers == {"192.168.1.11", "192.168.1.12"}
    assert dict(cfg.remote)["gw-cloud"][0].address == "172.16.0.11"


def test_a_member_follows_the_active_liveness_reports(cluster: Cluster) -> None:
    before = plan(cluster, "hz-2")
    assert routes_via(before) == {"192.168.1.11"}
    after = plan(apply_liveness(cluster, "hz-2", view({"gw-hangzhou": "hz-1"})), "hz-2")
    assert after == before
    hz1 = plan(apply_liveness(cluster, "hz-1", view({"gw-hangzhou": "hz-2"})), "hz-1")
    assert hz1.role is Role.STANDBY and routes_via(hz1) == {"192.168.1.12"}


def test_the_local_node_is_active_only_when_its_liveness_says_so(cluster: Cluster) -> None:
    settling = plan(apply_liveness(cluster, "hz-1", view({"gw-hangzhou": None})), "hz-1")
    assert settling.role is Role.STANDBY and settling.routes == ()
    active = plan(apply_liveness(cluster, "hz-2", view({"gw-hangzhou": "hz-2"}, local_active=True)), "hz-2")
    assert active.role is Role.ACTIVE_GATEWAY and active.peers and {r.dev for r in active.routes} == {"raven0"}


def test_a_not_ready_node_never_becomes_active(cluster: Cluster) -> None:
    c = with_not_ready("hz-1")
    hz1 = plan(apply_liveness(c, "hz-1", view({"gw-hangzhou": "hz-1"}, local_active=True)), "hz-1")
    assert hz1.role is Role.STANDBY
    member = plan(apply_liveness(c, "hz-2", view({"gw-hangzhou": "hz-1"})), "hz-2")
    assert member.role is Role.ACTIVE_GATEWAY or routes_via(member) != {"192.168.1.11"}
    cloud = plan(apply_liveness(c, "cloud-1", view({"gw-hangzhou": "hz-1"})), "cloud-1", failover=True)
    hz_peers = {p.node_name: p for p in cloud.peers if p.gateway == "gw-hangzhou"}
    assert set(hz_peers) == {"hz-2"}


def test_remote_holder_moves_the_domains_allowed_ips(cluster: Cluster) -> None:
    normal = plan(cluster, "cloud-1", failover=True)
    moved = plan(apply_liveness(cluster, "cloud-1", view({"gw-hangzhou": "hz-2"}, local_active=True)), "cloud-1",
                 failover=True)
    own = {"hz-1": {ip_network("192.168.1.11/32"), ip_network("10.244.2.0/24")},
           "hz-2": {ip_network("192.168.1.12/32"), ip_network("10.244.3.0/24")}}
    for p, holder, standby in ((normal, "hz-1", "hz-2"), (moved, "hz-2", "hz-1")):
        hz = {x.node_name: x for x in p.peers if x.gateway == "gw-hangzhou"}
        assert not hz[holder].standby and hz[standby].standby
        # a standby candidate carries its own node's traffic; the holder the rest of the domain
        assert set(hz[standby].allowed_ips) == own[standby]
        assert set(hz[holder].allowed_ips) == own[holder]
    # the kernel side does not move at all: every hangzhou prefix goes into raven0 either way
    assert normal.routes == moved.routes


def test_a_hot_standby_is_planned_as_the_active_for_its_own_node(cluster: Cluster) -> None:
    hz2 = plan(cluster, "hz-2", failover=True)
    active = plan(apply_liveness(cluster, "hz-2", view({"gw-hangzhou": "hz-2"}, local_active=True)), "hz-2",
                  failover=True)
    assert hz2.role is Role.STANDBY and active.role is Role.ACTIVE_GATEWAY
    from dataclasses import replace
    # a takeover changes nothing on the node itself, but that the new active takes part in direct
    # edge<->edge paths (hole punching, with its own key); a hot standby does not
    assert hz2.direct is None and active.direct is not None
    assert replace(hz2, role=Role.ACTIVE_GATEWAY, direct=active.direct) == active
    assert {r.dev for r in hz2.routes} == {"raven0"} and hz2.routes[0].src == ip_address("192.168.1.12")
    assert hz2.sysctl("net.ipv4.ip_forward") == "1"
    # without failover, or when NotReady, a standby is a plain member
    assert routes_via(plan(cluster, "hz-2")) == {"192.168.1.11"}
    c = with_not_ready("hz-2")
    assert routes_via(plan(apply_liveness(c, "hz-2", view({"gw-hangzhou": "hz-1"})), "hz-2", failover=True)) == {"192.168.1.11"}


def test_a_tunnel_candidate_without_its_key_is_refused_at_start(tmp_path: Path) -> None:
    """Issue 13 H2: a standby started without --private-key could never take over; refuse it at once."""
    from ravenvpn.errors import RavenError
    from ravenvpn.raven.node.agent import Agent
    agent = Agent(str(EXAMPLE), "hz-2", mtu=1420, state_dir=str(tmp_path))
    with pytest.raises(RavenError, match=r"Gateway gw-hangzhou: node hz-2 is a tunnel endpoint.*--private-key"):
        agent.compute_plan()
    assert Agent(str(EXAMPLE), "cloud-2", mtu=1420, state_dir=str(tmp_path)).compute_plan().role is Role.MEMBER


def test_the_ha_example_keys_match_and_its_roles() -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    import base64
    ha = load_cluster_file(EXAMPLE.parent / "cluster-ha.yaml")
    for gw in ha.gateways:
        for ep in gw.tunnel_endpoints:
            private = base64.b64decode((EXAMPLE.parent / "keys" / f"{ep.node_name}.key").read_text().strip())
            assert X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw() == ep.public_key
    roles = {n.name: plan(ha, n.name, failover=True).role.value for n in ha.nodes}
    assert roles == {"cloud-1": "active-gateway", "cloud-2": "member", "cloud-3": "standby",
                     "hz-1": "active-gateway", "hz-2": "standby", "hz-3": "member",
                     "qd-1": "active-gateway", "qd-2": "standby"}
