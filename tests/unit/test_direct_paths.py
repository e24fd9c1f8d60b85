"""Direct edge<->edge paths without the network: the plan, the message format, the pair state machine,
the tunnel's shared sources and the manager's peer bookkeeping on a real (sans-I/O) Tunnel."""
from __future__ import annotations

import ipaddress
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from ravenvpn.protocol import keys
from ravenvpn.protocol.tunnel import Output, Tunnel
from ravenvpn.raven.cluster import load_cluster, load_cluster_file
from ravenvpn.raven.node import rendezvous as rv
from ravenvpn.raven.node.holepunch import DirectPaths, describe_direct, forced_relay_from_env
from ravenvpn.raven.node.punch import PairMachine, PairState, Timing
from ravenvpn.raven.plan.direct import control_address, nat_types_compatible
from ravenvpn.raven.plan.planner import plan

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cluster-three-domains.yaml"
KEYS = ROOT / "examples" / "keys"


def private(node: str) -> bytes:
    return keys.b64decode((KEYS / f"{node}.key").read_text().strip())


def docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]


def tunnel_endpoint(documents: list[dict[str, Any]], gateway: str) -> dict[str, Any]:
    gw = next(d for d in documents if d.get("kind") == "Gateway" and d["metadata"]["name"] == gateway)
    return next(ep for ep in gw["spec"]["endpoints"] if ep["type"] == "tunnel")


# ------------------------------------------------------------------------------------------ plan
def test_nat_edges_get_a_pair_each_and_the_relay_introduces_them() -> None:
    cluster = load_cluster_file(EXAMPLE)
    hz, qd, cloud = plan(cluster, "hz-1"), plan(cluster, "qd-1"), plan(cluster, "cloud-1")
    assert hz.direct is not None and qd.direct is not None and cloud.direct is not None
    assert [p.gateway for p in hz.direct.pairs] == ["gw-qingdao"]
    assert [p.gateway for p in qd.direct.pairs] == ["gw-hangzhou"]
    assert hz.direct.relay_key == peer_key(hz, "gw-cloud")
    assert cloud.direct.is_relay and {g for g, _k in cloud.direct.introduces} == {"gw-hangzhou", "gw-qingdao"}
    pair = hz.direct.pairs[0]
    assert pair.punch and set(pair.prefixes) == set(peer_prefixes(cloud, "gw-qingdao"))
    # members and standbys take no part
    assert plan(cluster, "hz-2").direct is None and plan(cluster, "cloud-2").direct is None


def peer_key(p: Any, gateway: str) -> bytes:
    return next(x.public_key for x in p.peers if x.gateway == gateway)


def peer_prefixes(p: Any, gateway: str) -> tuple[Any, ...]:
    return next(x.allowed_ips for x in p.peers if x.gateway == gateway)


def test_nat_types_that_cannot_be_punched_stay_relayed() -> None:
    d = docs()
    tunnel_endpoint(d, "gw-hangzhou")["natType"] = "Symmetric"
    tunnel_endpoint(d, "gw-qingdao")["natType"] = "PortRestrictedCone"
    pair = plan(load_cluster(yaml.safe_dump_all(d)), "hz-1").direct.pairs[0]   # type: ignore[union-attr]
    assert not pair.punch and "natType" in pair.reason
    assert nat_types_compatible("Symmetric", "FullCone") and nat_types_compatible("", "Symmetric")
    assert not nat_types_compatible("symmetric", "Symmetric")


def test_a_port_forward_makes_a_nat_edge_a_plain_peer_without_punching() -> None:
    d = docs()
    ep = tunnel_endpoint(d, "gw-hangzhou")
    ep["publicIP"], ep["publicPort"] = "198.51.100.2", 4500
    cluster = load_cluster(yaml.safe_dump_all(d))
    qd = plan(cluster, "qd-1")
    hz_peer = next(p for p in qd.peers if p.gateway == "gw-hangzhou")
    assert hz_peer.endpoint == ("198.51.100.2", 4500) and hz_peer.persistent_keepalive == 5
    assert qd.direct is None      # one punchable edge left: nothing to punch
    cloud_peer = next(p for p in qd.peers if p.gateway == "gw-cloud")
    assert cloud_peer.relays_for == ()


def test_control_addresses_are_link_local_and_avoid_the_metadata_service() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        addr = control_address(rng.randbytes(32))
        assert addr in ipaddress.ip_network("169.254.0.0/16")
        assert addr.packed[2] not in (0, 169, 255)
    k = rng.randbytes(32)
    assert control_address(k) == control_address(bytes(k))


# ------------------------------------------------------------------------------------- messages
def test_messages_are_bound_to_both_keys_and_tamper_evident() -> None:
    a, b, c = private("hz-1"), private("qd-1"), private("cloud-1")
    pa, pb = keys.public_from_private(a), keys.public_from_private(b)
    k_ab, k_ba = rv.pair_key(a, pb), rv.pair_key(b, pa)
    assert k_ab == k_ba and k_ab != rv.pair_key(c, pa)
    data = rv.encode(rv.PROBE, pa, 42, {"seq": 1, "ack": -1, "heard": 1e9}, k_ab)
    assert rv.peek_sender(data) == pa
    msg = rv.decode(data, k_ba)
    assert (msg.kind, msg.sender, msg.counter, msg.body["seq"]) == (rv.PROBE, pa, 42, 1)
    with pytest.raises(rv.MessageError, match="bad tag"):
        rv.decode(data, rv.pair_key(c, pa))              # a third gateway cannot forge it
    for i in (5, 40, 50, len(data) - 1):                 # any flipped bit
        bad = bytearray(data)
        bad[i] ^= 1
        with pytest.raises(rv.MessageError):
            rv.decode(bytes(bad), k_ba)
    with pytest.raises(rv.MessageError):
        rv.decode(data[:-1], k_ba)
    with pytest.raises(rv.MessageError, match="magic"):
        rv.peek_sender(b"WG\x01\x00" + data[4:])


def test_counters_reject_replays() -> None:
    guard = rv.ReplayGuard()
    sender = bytes(32)
    assert guard.accept(sender, 10) and guard.accept(sender, 11)
    assert not guard.accept(sender, 11) and not guard.accept(sender, 3)
    assert guard.accept(bytes([1]) * 32, 3)
    counter = rv.Counter()
    assert counter.next() < counter.next()


# -------------------------------------------------------------------------------- state machine
FAST = Timing()


def run(machine: PairMachine, until: float, now: float, step: float = 0.05,
        peer: PairMachine | None = None) -> tuple[float, dict[str, int]]:
    """Tick ``machine`` to ``until``; with ``peer``, exchange probes as a working path would."""
    seen: dict[str, int] = {"initiate": 0, "open_nat": 0, "probe": 0, "direct": 0, "relay": 0}
    while now < until:
        for m, other in ((machine, peer), (peer, machine)):
            if m is None:
                continue
            a = m.tick(now)
            if m is machine:
                seen["initiate"] += a.initiate
                seen["open_nat"] += a.open_nat
                seen["probe"] += a.probe
                if a.route:
                    seen[a.route] += 1
            if a.probe and other is not None:
                body = m.probe_body(now)
                other.on_probe(int(body["seq"]), int(body["ack"]), float(body["heard"]), now)
        now += step
    return now, seen


def test_a_round_goes_direct_once_probes_cross_both_ways() -> None:
    a = PairMachine("gw-b", 0.0, initiator=True, rng=random.Random(1))
    b = PairMachine("gw-a", 0.0, initiator=False, rng=random.Random(2))
    assert a.wants_round(0.0) and b.wants_round(0.0)
    for m, ep in ((a, ("198.51.100.3", 4500)), (b, ("198.51.100.2", 4500))):
        actions = m.on_intro(1, ep, 0.5, 0.0)
        assert actions.endpoint == ep and m.state is PairState.PUNCHING
    assert a.next_deadline() == 0.5
    now, seen = run(a, 0.49, 0.0, peer=None)
    assert seen["initiate"] == 0 and seen["probe"] == 0       # nothing before the common start
    now, seen = run(a, 3.0, now, peer=b)
    assert a.state is PairState.DIRECT and b.state is PairState.DIRECT
    assert seen["direct"] == 1 and seen["initiate"] >= 1


def test_only_the_initiator_initiates_and_the_round_is_capped() -> None:
    a = PairMachine("gw-b", 0.0, initiator=True)
    b = PairMachine("gw-a", 0.0, initiator=False)
    a.on_intro(1, ("192.0.2.1", 4500), 0.0, 0.0)
    assert b.on_intro(1, ("192.0.2.2", 4500), 0.0, 0.0).discover == "192.0.2.2"
    b.on_hops("192.0.2.2", None, 0.0)      # no ICMP answers: unlimited openers, as on a flat WAN
    _, seen_a = run(a, 10.0, 0.0)
    _, seen_b = run(b, 10.0, 0.0)
    assert seen_a["initiate"] == len(FAST.initiations) and seen_a["open_nat"] == 0
    assert seen_b["open_nat"] == len(FAST.initiations) and seen_b["initiate"] == 0
    assert seen_a["probe"] <= FAST.window / FAST.probe_interval + 1


def test_a_failed_round_waits_past_the_conntrack_timeout_then_backs_off() -> None:
    m = PairMachine("gw-b", 0.0, rng=random.Random(3))
    quiets = []
    now = 0.0
    for n in range(1, 4):
        now = max(now, m.next_round)
        actions = m.on_intro(n, ("192.0.2.1", 4500), now, now)
        assert m.state is PairState.PUNCHING, actions
        now, _ = run(m, now + FAST.window + 0.1, now)
        quiets.append(m.next_round - now)
    assert m.state is PairState.FAILED_SYMMETRIC and m.failures == 3
    assert quiets[0] >= 30 and quiets[1] > quiets[0] and quiets[2] >= FAST.symmetric_retry * 0.99
    assert not m.wants_round(now) and m.on_intro(9, ("192.0.2.1", 4500), now, now).endpoint is None


def test_a_silent_direct_path_returns_to_the_relay_within_2_s() -> None:
    a = PairMachine("gw-b", 0.0, initiator=True)
    b = PairMachine("gw-a", 0.0, initiator=False)
    a.on_intro(1, ("192.0.2.1", 4500), 0.0, 0.0)
    b.on_intro(1, ("192.0.2.2", 4500), 0.0, 0.0)
    now, _ = run(a, 2.0, 0.0, peer=b)
    assert a.state is PairState.DIRECT
    cut = now
    now, seen = run(a, cut + 2.0, now)            # b is gone: no probes come back
    assert a.state is PairState.RELAYED and seen["relay"] == 1
    assert a.since - cut <= 2.0 and a.losses == 1 and a.next_round - a.since >= 30


def test_forced_relay_and_endpoint_refresh() -> None:
    m = PairMachine("gw-b", 0.0)
    m.force_relay("RAVENVPN_FORCE_RELAY forces the relay", 0.0)
    assert m.state is PairState.FORCED_RELAY and not m.wants_round(100.0)
    m.allow(5.0)
    assert m.wants_round(5.0)
    assert m.on_intro(1, ("192.0.2.9", 1234), None, 5.0).endpoint is None and m.endpoint == ("192.0.2.9", 1234)
    assert m.state is PairState.RELAYED
    assert forced_relay_from_env({"RAVENVPN_FORCE_RELAY": "all"}) is None
    assert forced_relay_from_env({"RAVENVPN_FORCE_RELAY": "gw-a, gw-b"}) == {"gw-a", "gw-b"}
    assert forced_relay_from_env({}) == set()


# ------------------------------------------------------------------- tunnel and manager wiring
def ipv4_packet(src: str, dst: str) -> bytes:
    body = bytes(8)
    header = bytearray(20)
    header[0], header[2:4], header[8], header[9] = 0x45, (20 + len(body)).to_bytes(2, "big"), 64, 17
    header[12:16], header[16:20] = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    return bytes(header) + body


def test_shared_sources_accept_a_domain_from_relay_and_direct_peer_only() -> None:
    t = Tunnel()
    relay, direct, other = t.add_peer(bytes([1]) * 32), t.add_peer(bytes([2]) * 32), t.add_peer(bytes([3]) * 32)
    net = ipaddress.ip_network("10.244.4.0/24")
    t.add_allowed_ip(relay, net)
    pkt = ipv4_packet("10.244.4.10", "10.244.2.10")

    def delivered(peer: Any) -> bool:
        out = Output()
        t._deliver(peer, pkt, out, 0.0)
        return bool(out.tun)

    assert delivered(relay) and not delivered(direct)        # the old code: only the owner
    t.share_sources([net], [relay, direct])
    assert delivered(relay) and delivered(direct) and not delivered(other)
    t.add_allowed_ip(direct, net)                            # the route moves: both still accepted
    assert delivered(relay) and delivered(direct)
    t.remove_peer(direct.public_key)
    assert delivered(relay) and not delivered(other)


def test_the_manager_keeps_the_subnets_on_the_relay_peer_until_direct() -> None:
    cluster = load_cluster_file(EXAMPLE)
    hz = plan(cluster, "hz-1", local_public_key=keys.public_from_private(private("hz-1")))
    assert hz.direct is not None
    t = Tunnel()
    t.private_key = private("hz-1")
    dp = DirectPaths("raven0", private("hz-1"), lambda wake: None, forced=set())  # type: ignore[arg-type,return-value]
    dp.update(hz.direct)
    relay_want = next(p for p in hz.peers if p.gateway == "gw-cloud")
    relay = t.add_peer(relay_want.public_key)
    for net in dp.allowed_ips(relay_want):
        t.add_allowed_ip(relay, net)
    dp.converge(t)
    pair = hz.direct.pairs[0]
    direct = t.peers[pair.public_key]
    assert t.allowed_ips(direct) == [ipaddress.ip_network(f"{pair.control}/32")]
    assert all(t.peer_for_address(str(n.network_address)) is relay for n in pair.prefixes)
    assert ipaddress.ip_network(f"{control_address(relay_want.public_key)}/32") in dp.allowed_ips(relay_want)
    dp.machines[pair.public_key].state = PairState.DIRECT
    dp.converge(t)
    assert all(t.peer_for_address(str(n.network_address)) is direct for n in pair.prefixes)
    assert not set(pair.prefixes) & set(dp.allowed_ips(relay_want))
    # forced relay: no direct peer is kept at all
    forced = DirectPaths("raven0", private("hz-1"), lambda wake: None, forced=None)  # type: ignore[arg-type,return-value]
    forced.update(hz.direct)
    assert forced.managed_keys() == set()
    lines = describe_direct({"role": "edge", "pairs": {"gw-qingdao": forced.machines[pair.public_key].snapshot(0.0)}})
    assert lines and "forced-relay" in lines[0]


def test_punch_actions_drive_the_real_tunnel() -> None:
    """An initiation goes out at the next tick past WireGuard's one-per-REKEY_TIMEOUT gate; an opener
    is an empty datagram from the tunnel port; silence stops everything toward the other edge."""
    from ravenvpn.raven.node.punch import Actions
    cluster = load_cluster_file(EXAMPLE)
    hz = plan(cluster, "hz-1", local_public_key=keys.public_from_private(private("hz-1")))
    assert hz.direct is not None
    t = Tunnel()
    t.private_key = private("hz-1")
    dp = DirectPaths("raven0", private("hz-1"), lambda wake: None, forced=set(),  # type: ignore[arg-type,return-value]
                     underlay=lambda datagrams: None)
    dp.update(hz.direct)
    dp.converge(t)
    key = hz.direct.pairs[0].public_key
    ep = ("198.51.100.3", 4500)
    for _ in range(2):   # twice within REKEY_TIMEOUT: both go out
        dp._apply(t, key, Actions(endpoint=ep, initiate=True), 1.0)
        sent = [(d, e) for d, e in t.tick(1.0).datagrams() if d[0] == 1]
        assert len(sent) == 1 and len(sent[0][0]) == 148 and sent[0][1] == ep
    dp._apply(t, key, Actions(open_nat=True), 1.0)
    assert dp._underlay_out == [(b"", ep)]
    dp._apply(t, key, Actions(open_ttls=(2, 3)), 1.0)
    assert dp._underlay_ttl_out == [(ep, (2, 3))]
    dp._apply(t, key, Actions(silence=True), 1.0)
    assert t.peers[key].endpoint is None and not t.tick(100.0).datagrams()
