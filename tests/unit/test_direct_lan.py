"""Two edges behind one public IP (issue 11, "Raven's fields"): the pair tries the other edge's
private endpoint first and goes direct there only when authenticated probes cross both ways;
otherwise it punches the public endpoint as any pair. Sans-I/O: time is passed in; the manager's
wiring runs on a real (sans-I/O) Tunnel with the demo cluster's keys."""
from __future__ import annotations

import base64
import random
import time
from pathlib import Path
from typing import Any

import yaml

from ravenvpn.protocol import keys
from ravenvpn.protocol.tunnel import Tunnel
from ravenvpn.raven.cluster import load_cluster, load_cluster_file
from ravenvpn.raven.node import rendezvous as rv
from ravenvpn.raven.node.holepunch import DirectPaths, describe_direct
from ravenvpn.raven.node.punch import PairMachine, PairState, Timing
from ravenvpn.raven.plan.direct import control_address
from ravenvpn.raven.plan.planner import plan

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cluster-three-domains.yaml"
KEYS = ROOT / "examples" / "keys"
T = Timing()
SHARED = "203.0.113.7"                     # the one public IP of both edges
A_PUB, B_PUB = (SHARED, 4500), (SHARED, 61012)
A_LAN, B_LAN = ("192.168.1.11", 4500), ("192.168.2.11", 4500)


def private(node: str) -> bytes:
    return keys.b64decode((KEYS / f"{node}.key").read_text().strip())


def pair_of_machines(private_known: bool = True) -> tuple[PairMachine, PairMachine]:
    a = PairMachine("gw-b", 0.0, initiator=True, rng=random.Random(1), private=B_LAN if private_known else None)
    b = PairMachine("gw-a", 0.0, initiator=False, rng=random.Random(2), private=A_LAN if private_known else None)
    return a, b


def intro_both(a: PairMachine, b: PairMachine, start: float, now: float, round_id: int = 1) -> tuple[Any, Any]:
    """What the relay sends each edge: the other's public endpoint and its own; and, as the runtime
    does when a machine asks, the hop count to that public IP (2: behind one NAT, no safe TTL)."""
    acts = (a.on_intro(round_id, B_PUB, start, now, own=A_PUB),
            b.on_intro(round_id, A_PUB, start, now, own=B_PUB))
    for machine, act in zip((a, b), acts):
        if act.discover:
            machine.on_hops(act.discover, 2, now)
    return acts


def run(a: PairMachine, b: PairMachine, until: float, now: float, *, path: str | None,
        step: float = 0.05) -> tuple[float, list[tuple[str, float, Any]]]:
    """Tick both machines to ``until``; probes cross only where ``path`` works (``"lan"``: while both
    are trying the LAN or direct via LAN; ``"public"``: while punching or direct via public; None:
    nowhere). Returns the time and every (edge, time, actions)."""
    log: list[tuple[str, float, Any]] = []
    while now < until:
        for name, m, other in (("a", a, b), ("b", b, a)):
            act = m.tick(now)
            log.append((name, now, act))
            if act.probe and _works(m, path) and _works(other, path):
                body = m.probe_body(now)
                other.on_probe(int(body["seq"]), int(body["ack"]), float(body["heard"]), now)
        now = round(now + step, 6)
    return now, log


def _works(m: PairMachine, path: str | None) -> bool:
    if path == "lan":
        return m.state is PairState.TRYING_LAN or (m.state is PairState.DIRECT and m.via == "lan")
    if path == "public":
        return m.state is PairState.PUNCHING or (m.state is PairState.DIRECT and m.via == "public")
    return False


# ------------------------------------------------------------------------------------------ plan
def test_each_pair_carries_the_other_gateways_private_endpoint() -> None:
    cluster = load_cluster_file(EXAMPLE)
    hz, qd = plan(cluster, "hz-1").direct, plan(cluster, "qd-1").direct
    assert hz is not None and qd is not None
    assert hz.pairs[0].private_endpoint == ("192.168.2.11", 4500)
    assert qd.pairs[0].private_endpoint == ("192.168.1.11", 4500)
    # no IPv4 InternalIP: nothing to try (IPv4 underlays only, for now)
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    node = next(d for d in docs if d.get("kind") == "Node" and d["metadata"]["name"] == "qd-1")
    next(a for a in node["status"]["addresses"] if a["type"] == "InternalIP")["address"] = "fd00:2::11"
    hz2 = plan(load_cluster(yaml.safe_dump_all(docs)), "hz-1").direct
    assert hz2 is not None and hz2.pairs and hz2.pairs[0].private_endpoint is None


# -------------------------------------------------------------------------------- state machine
def test_one_public_ip_tries_the_private_endpoint_and_goes_direct_via_lan() -> None:
    a, b = pair_of_machines()
    act_a, act_b = intro_both(a, b, start=0.5, now=0.0)
    assert a.state is PairState.TRYING_LAN and b.state is PairState.TRYING_LAN
    assert act_a.endpoint == B_LAN and act_b.endpoint == A_LAN       # the peers point at the LAN
    assert a.next_deadline() == 0.5                                    # the first LAN initiation
    now, log = run(a, b, 3.0, 0.0, path="lan")
    assert a.state is PairState.DIRECT and b.state is PairState.DIRECT
    assert a.via == b.via == "lan"
    direct_at = next(t for n, t, act in log if n == "a" and act.route == "direct")
    assert direct_at < 0.5 + T.lan_window, direct_at
    assert not any(act.endpoint for _n, t, act in log if t > 0.0)      # never toward the public IP
    snap = a.snapshot(now)
    assert snap["state"] == "direct" and snap["via"] == "lan" and snap["endpoint"] == "192.168.2.11:4500"
    line = describe_direct({"role": "edge", "pairs": {"gw-b": snap}})[0]
    assert "direct path gw-b: direct" in line and "via lan" in line and "192.168.2.11:4500" in line
    # a relay's endpoint refresh (the public address moved) does not pull a LAN path onto it
    assert a.on_intro(1, (SHARED, 5555), None, now, own=A_PUB).endpoint is None
    assert a.state is PairState.DIRECT and a.endpoint == (SHARED, 5555)


def test_different_public_ips_punch_at_once_without_touching_private_addresses() -> None:
    a, b = pair_of_machines()
    act = a.on_intro(1, ("198.51.100.3", 4500), 0.5, 0.0, own=("198.51.100.2", 4500))
    assert a.state is PairState.PUNCHING and act.endpoint == ("198.51.100.3", 4500)
    # a relay that does not say where it saw us (older version): as before
    act = b.on_intro(1, A_PUB, 0.5, 0.0)
    assert b.state is PairState.PUNCHING and act.endpoint == A_PUB


def test_carrier_grade_nat_lan_attempt_fails_then_the_public_round_runs_in_step() -> None:
    """Nothing crosses on the LAN (different sites) nor the public IP (no hairpin): after 2 s both
    edges clear the peer and punch the public endpoint from the same instant; the round fails and
    the pair waits relayed; nothing goes to the private address after the attempt."""
    a, b = pair_of_machines()
    intro_both(a, b, start=0.5, now=0.0)
    punch_start = 0.5 + T.lan_window
    now, log = run(a, b, punch_start - 0.01, 0.0, path=None)
    # the runtime sleeps until the punch phase begins, on both edges
    assert a.next_deadline() == b.next_deadline() == punch_start
    assert sum(act.initiate for n, _t, act in log if n == "a") == len(T.lan_initiations)
    assert not any(act.initiate or act.open_nat for n, _t, act in log if n == "b")
    now, log = run(a, b, punch_start + T.window + 0.5, now, path=None)
    switch = [(n, t, act) for n, t, act in log if "trying-lan -> punching" in " ".join(act.transitions)]
    assert {n for n, _t, _a in switch} == {"a", "b"} and all(t == punch_start for _n, t, _a in switch)
    for _n, _t, act in switch:          # the private address is dropped before the public one is set
        assert act.silence and act.endpoint in (A_PUB, B_PUB) and (act.initiate or act.open_nat)
    assert not any(act.endpoint in (A_LAN, B_LAN) for _n, _t, act in log)
    assert a.state is PairState.RELAYED and b.state is PairState.RELAYED
    assert a.lan_failures == 1 and a.failures == 1 and a.next_round - now >= 30
    assert a.snapshot(now)["via"] is None and a.snapshot(now)["endpoint"] == f"{SHARED}:61012"


def test_lan_retries_follow_the_rounds_backoff_and_are_capped() -> None:
    a, b = pair_of_machines()
    now, lan_rounds_at = 0.0, []
    for n in range(1, 5):
        now = max(now, a.next_round, b.next_round)
        intro_both(a, b, start=now, now=now, round_id=n)
        if a.state is not PairState.TRYING_LAN:
            break
        lan_rounds_at.append(now)
        lan_end = now + T.lan_window
        now, log = run(a, b, lan_end + T.window + 0.5, now, path=None)
        assert sum(act.initiate for name, t, act in log if name == "a" and t < lan_end) == len(T.lan_initiations)
    gaps = [y - x for x, y in zip(lan_rounds_at, lan_rounds_at[1:])]
    assert len(lan_rounds_at) == 4 and gaps[0] >= 35 and gaps[1] >= 70 and gaps[2] >= T.symmetric_retry
    assert a.state is PairState.FAILED_SYMMETRIC and a.lan_failures == 4


def test_a_lost_lan_path_returns_to_the_relay_within_2_s() -> None:
    a, b = pair_of_machines()
    intro_both(a, b, start=0.0, now=0.0)
    now, _ = run(a, b, 1.5, 0.0, path="lan")
    assert a.state is PairState.DIRECT and a.via == "lan"
    cut = now
    now, log = run(a, b, cut + 2.0, now, path=None)
    routes = [act for n, _t, act in log if n == "a" and act.route]
    assert [act.route for act in routes] == ["relay"] and routes[0].silence
    assert a.state is PairState.RELAYED and a.since - cut <= 2.0 and a.via is None and a.losses == 1
    assert a.next_round - a.since >= 30                    # quiet, as after a lost public path


def test_the_lan_phase_works_when_only_the_responder_knows_nothing() -> None:
    """The responder needs no private endpoint: the initiator's handshake brings its session, and the
    responder's probes follow it (the runtime sends them only once a session exists)."""
    a = PairMachine("gw-b", 0.0, initiator=True, private=B_LAN)
    b = PairMachine("gw-a", 0.0, initiator=False, private=None)
    intro_both(a, b, start=0.0, now=0.0)
    run(a, b, 1.5, 0.0, path="lan")
    assert a.state is b.state is PairState.DIRECT and b.via == "lan"
    # an initiator that does not know where to try sends nothing in the LAN phase
    c = PairMachine("gw-b", 0.0, initiator=True, private=None)
    c.on_intro(1, B_PUB, 0.0, 0.0, own=A_PUB)
    acts = [c.tick(i * 0.05) for i in range(int(T.lan_window / 0.05))]
    assert c.state is PairState.TRYING_LAN and not any(x.initiate or x.probe for x in acts)


# ------------------------------------------------------------------- the runtime's messages
def test_the_relay_tells_each_edge_its_own_endpoint_and_the_edge_points_its_peer_at_the_lan() -> None:
    cluster = load_cluster_file(EXAMPLE)
    cloud = plan(cluster, "cloud-1", local_public_key=keys.public_from_private(private("cloud-1"))).direct
    hz = plan(cluster, "hz-1", local_public_key=keys.public_from_private(private("hz-1"))).direct
    assert cloud is not None and hz is not None
    edges = {g: k for g, k in cloud.introduces}
    hz_key, qd_key = edges["gw-hangzhou"], edges["gw-qingdao"]
    # the relay, with both edges seen behind one address
    relay_tunnel = Tunnel()
    relay_tunnel.private_key = private("cloud-1")
    for key, ep in ((hz_key, A_PUB), (qd_key, B_PUB)):
        peer = relay_tunnel.add_peer(key)
        peer.endpoint, peer.last_handshake_time_ns = ep, time.time_ns()
    relay = DirectPaths("raven0", private("cloud-1"), lambda wake: None, forced=set())  # type: ignore[arg-type,return-value]
    relay.update(cloud)
    now = time.monotonic()
    relay._relay_step(relay_tunnel, [], now)
    hellos = [(rv.Message(rv.HELLO, hz_key, 1, {"want": [rv.b64(qd_key)], "state": {}}), ""),
              (rv.Message(rv.HELLO, qd_key, 1, {"want": [rv.b64(hz_key)], "state": {}}), "")]
    relay._relay_step(relay_tunnel, hellos, now)
    intros = {}
    for data, host in relay._outbox:
        to = hz_key if host == str(control_address(hz_key)) else qd_key
        msg = rv.decode(data, rv.pair_key(private("hz-1") if to == hz_key else private("qd-1"),
                                          keys.public_from_private(private("cloud-1"))))
        intros[to] = msg
    assert intros[hz_key].body["endpoint"] == f"{SHARED}:61012" and intros[hz_key].body["you"] == f"{SHARED}:4500"
    assert intros[qd_key].body["endpoint"] == f"{SHARED}:4500" and intros[qd_key].body["you"] == f"{SHARED}:61012"
    # the edge: the INTRO starts a LAN phase and points the direct peer at qd-1's InternalIP
    t = Tunnel()
    t.private_key = private("hz-1")
    edge = DirectPaths("raven0", private("hz-1"), lambda wake: None, forced=set())  # type: ignore[arg-type,return-value]
    edge.update(hz)
    edge.converge(t)
    edge._edge_step(t, [(intros[hz_key], "")], time.monotonic())
    assert edge.machines[qd_key].state is PairState.TRYING_LAN
    assert t.peers[qd_key].endpoint == ("192.168.2.11", 4500)
    assert base64.b64decode(intros[hz_key].body["peer"]) == qd_key
