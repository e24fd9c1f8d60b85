"""The WireGuard driver's make-before-break relay change (ravenvpn.raven.node.wireguard, RELAY_HOLD), on
real sans-I/O tunnels: an edge whose relayed prefix (qingdao's pods) moves from the old relay's peer
(gw-branch) to a new relay peer (gw-cloud) keeps it on the old one until the new one has a session and
RELAY_HOLD has passed. The namespace test is tests/netns/test_relay_change.py; this one covers the rules
(no hold for a relay with a session, none within one gateway, none once the old peer leaves the plan).
The driver's clock is passed in; the tunnels' handshake runs over the harness's simulated network.
"""
from __future__ import annotations

import ipaddress

import pytest

from ravenvpn.protocol import keys
from ravenvpn.raven.node.wireguard import RELAY_HOLD, VpnReport, WireGuardDriver
from ravenvpn.raven.plan.nodeplan import NodePlan, PeerPlan, Role

from tests.unit.protocol_harness import Net

CLOUD, BRANCH, QD = (ipaddress.ip_network(n) for n in ("10.244.0.0/24", "10.244.1.0/24", "10.244.3.0/24"))


@pytest.fixture
def net() -> Net:
    """Edge ``a`` (under NAT) and the new relay ``b`` (gw-cloud); the edge's peer ``pa`` is gw-cloud's."""
    return Net()


def old_relay_key() -> bytes:
    """gw-branch's public key (no tunnel behind it: the edge never handshakes with it here)."""
    return keys.public_from_private(keys.generate_private())


def plan(*peers: PeerPlan) -> NodePlan:
    return NodePlan(node_name="hz-1", role=Role.ACTIVE_GATEWAY, gateway="gw-hangzhou", interface="raven0",
                    listen_port=4500, mtu=1420, peers=peers)


def cloud(net: Net, *extra: ipaddress.IPv4Network, relay: bool = False) -> PeerPlan:
    return PeerPlan(net.b.tunnel.public_key, ("192.0.2.2", 51820), (CLOUD, *extra), 5, "gw-cloud",
                    "cloud-1", relays_for=("gw-qingdao",) if relay else ())


def branch(key: bytes, *extra: ipaddress.IPv4Network, relay: bool = False, gateway: str = "gw-branch") -> PeerPlan:
    return PeerPlan(key, ("192.0.2.3", 51820), (BRANCH, *extra), 5, gateway, "br-1",
                    relays_for=("gw-qingdao",) if relay else ())


def routes(net: Net) -> dict[str, set[ipaddress.IPv4Network]]:
    t = net.a.tunnel
    return {("cloud" if k == net.b.tunnel.public_key else "branch"): set(t.allowed_ips(p)) for k, p in t.peers.items()}


def apply(driver: WireGuardDriver, net: Net, p: NodePlan, now: float) -> None:
    driver._configure_peers(net.a.tunnel, p, VpnReport(), now=now)


def handshake(net: Net) -> None:
    """The edge's persistent keepalive toward gw-cloud starts a handshake; carry it to the end."""
    net.advance(0.5)
    assert net.pa.current is not None


def test_a_move_to_a_relay_without_session_waits_for_its_handshake_and_relay_hold(net: Net) -> None:
    driver, old_key = WireGuardDriver("raven0"), old_relay_key()
    apply(driver, net, plan(cloud(net), branch(old_key, QD, relay=True)), now=0.0)
    assert routes(net) == {"cloud": {CLOUD}, "branch": {BRANCH, QD}}

    moved = plan(cloud(net, QD, relay=True), branch(old_key))
    apply(driver, net, moved, now=10.0)
    assert routes(net) == {"cloud": {CLOUD}, "branch": {BRANCH, QD}}, "moved before the new relay answered"
    apply(driver, net, moved, now=10.0 + RELAY_HOLD + 5)
    assert routes(net)["branch"] == {BRANCH, QD}, "moved to a relay that never answered"

    handshake(net)
    apply(driver, net, moved, now=10.0 + RELAY_HOLD - 0.1)   # answered, but other edges may still retry
    assert routes(net)["branch"] == {BRANCH, QD}
    apply(driver, net, moved, now=10.0 + RELAY_HOLD)
    assert routes(net) == {"cloud": {CLOUD, QD}, "branch": {BRANCH}}
    assert not driver._holds


def test_a_relay_that_has_a_session_takes_the_prefixes_at_once(net: Net) -> None:
    driver, old_key = WireGuardDriver("raven0"), old_relay_key()
    apply(driver, net, plan(cloud(net), branch(old_key, QD, relay=True)), now=0.0)
    handshake(net)
    apply(driver, net, plan(cloud(net, QD, relay=True), branch(old_key)), now=1.0)
    assert routes(net) == {"cloud": {CLOUD, QD}, "branch": {BRANCH}}


def test_a_move_between_candidates_of_one_gateway_is_never_held(net: Net) -> None:
    """Failover inside the relay's gateway: the new active peer takes the domain at once."""
    driver, old_key = WireGuardDriver("raven0"), old_relay_key()
    apply(driver, net, plan(cloud(net), branch(old_key, QD, relay=True, gateway="gw-cloud")), now=0.0)
    apply(driver, net, plan(cloud(net, QD, relay=True), branch(old_key, gateway="gw-cloud")), now=1.0)
    assert routes(net)["cloud"] == {CLOUD, QD}


def test_a_hold_ends_when_the_old_relay_leaves_the_plan(net: Net) -> None:
    driver, old_key = WireGuardDriver("raven0"), old_relay_key()
    apply(driver, net, plan(cloud(net), branch(old_key, QD, relay=True)), now=0.0)
    apply(driver, net, plan(cloud(net, QD, relay=True), branch(old_key)), now=1.0)
    assert routes(net)["branch"] == {BRANCH, QD}
    apply(driver, net, plan(cloud(net, QD, relay=True)), now=2.0)
    assert routes(net) == {"cloud": {CLOUD, QD}}
    assert not driver._holds
