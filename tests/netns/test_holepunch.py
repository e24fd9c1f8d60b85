"""Direct hangzhou <-> qingdao tunnels through NAT (hole punching, the cloud gateway as rendezvous).

The three-domain lab (tools/lab.py) with selectable NAT routers: ``cpe`` (port-preserving MASQUERADE
behind a home router's input firewall: punchable), ``random-fully`` (symmetric: not punchable),
``forward`` (a port forward, Raven's publicIP/publicPort); plain ``masquerade`` (accepts
everything) with WAN delay on the flat WAN or, without delay, behind an ISP router each
(``Lab(isp_hop=True)``: TTL-limited NAT openers). What is checked is what a user would
check: where the packets go on the "internet" bridge (tcpdump), ping loss, the cloud gateway's relay
counter, and the pair states of ``ravenvpn status`` (the direct-path status file).
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Iterator

import pytest

from tools.lab import TUNNEL_PORT, Lab
from tools.process import wait_for
from tools.traffic import PingResult, capture

pytestmark = pytest.mark.netns

HZ, QD, CLOUD = "hz-1", "qd-1", "cloud-1"
SIZE = 1000          # ping payload: ping packets are told apart from probes and keepalives by size
# A pod behind the active gateway: with failover, the standby candidates hz-2/qd-2 send their own
# node's traffic through their own (relayed) tunnels; the rest of each domain goes through hz-1/qd-1.
SRC = "pod:hz-1"


def direct_status(lab: Lab, node: str) -> dict[str, Any]:
    try:
        return json.loads(lab.up_process(node).state_file("raven0.direct.json").read_text())
    except (OSError, ValueError):
        return {}


def pair_state(lab: Lab, node: str, gateway: str) -> str | None:
    return direct_status(lab, node).get("pairs", {}).get(gateway, {}).get("state")


def both_direct(lab: Lab) -> bool:
    return pair_state(lab, HZ, "gw-qingdao") == "direct" and pair_state(lab, QD, "gw-hangzhou") == "direct"


def relayed_packets(lab: Lab) -> int:
    return int(direct_status(lab, CLOUD).get("relayed_packets", 0))


def big_udp(pkts: Any, src: str, dst: str) -> int:
    return sum(1 for p in pkts if p.haslayer("UDP") and p["IP"].src == src and p["IP"].dst == dst
               and len(p["UDP"].payload) >= SIZE)


# Port-preserving MASQUERADE in three set-ups that punching must cope with: a home router's input
# firewall (unsolicited packets leave no conntrack entry) on a zero-delay WAN; routers that accept
# everything (a packet arriving before the local mapping exists would poison it) on a flat WAN with
# 10 ms per uplink, where the synchronised start gets both mappings made before the other side's
# packets land; and such routers on a zero-delay WAN with an ISP router in front of each NAT (the
# internet's forwarding hops), where only TTL-limited NAT openers (punch.py) keep the race away: the
# other edge's first initiation would otherwise reach the router as early as the local opener leaves.
PUNCHABLE = [pytest.param(("cpe", 0.0, False), id="cpe"),
             pytest.param(("masquerade", 10.0, False), id="masquerade-10ms"),
             pytest.param(("masquerade", 0.0, True), id="masquerade-isp")]


@pytest.fixture(params=PUNCHABLE)
def punchable(request: pytest.FixtureRequest, netns_env: None) -> Iterator[Lab]:
    nat, delay, isp_hop = request.param
    with Lab(nat=nat, direct=True, wan_delay=delay, isp_hop=isp_hop) as lab:
        request.node._rvt_nodes = [lab.node(n) for n in lab.names]
        yield lab


def test_punchable_nats_go_direct_and_the_relay_stops_carrying(punchable: Lab) -> None:
    lab = punchable
    t0 = time.monotonic()
    lab.up_all()
    wait_for(lambda: both_direct(lab), timeout=15 - (time.monotonic() - t0), interval=0.1,
             message="hangzhou <-> qingdao direct within 15 s of up")
    print(f"\ndirect {time.monotonic() - t0:.1f} s after the first `ravenvpn up`")
    hz_pub, qd_pub = lab.public_ip("gw-hangzhou"), lab.public_ip("gw-qingdao")
    cloud_pub = lab.hosts[CLOUD].public_ip
    relayed_before = relayed_packets(lab)
    with capture(lab.infra("internet"), "br0", "udp") as cap:
        res = lab.ping(SRC, lab.pod_ip("qd-1"), count=20, interval=0.05, size=SIZE)
        res_pod = lab.ping("pod:qd-1", lab.pod_ip("hz-1"), count=10, interval=0.05, size=SIZE)
    print(f"{res}\n{res_pod}")
    assert res.received == 20 and res_pod.received == 10, f"{res}\n{res_pod}"
    pkts = cap.packets()
    # each ping crosses the internet once each way, directly between the two NAT routers' addresses
    assert big_udp(pkts, hz_pub, qd_pub) >= 30 and big_udp(pkts, qd_pub, hz_pub) >= 30, \
        f"{big_udp(pkts, hz_pub, qd_pub)} / {big_udp(pkts, qd_pub, hz_pub)}"
    ports = {(p["UDP"].sport, p["UDP"].dport) for p in pkts if {p["IP"].src, p["IP"].dst} == {hz_pub, qd_pub}}
    print(f"direct UDP ports seen: {sorted(ports)}")   # (4500, 4500) when the NATs preserved the port
    to_cloud = big_udp(pkts, hz_pub, cloud_pub) + big_udp(pkts, qd_pub, cloud_pub)
    assert to_cloud == 0, f"{to_cloud} ping-sized packets still went to the cloud gateway"
    # 30 pings relayed would be 60 packets; what the relay still carries is the failover protocol's
    # few messages to the standby candidates (hz-2, qd-2 keep their own relayed tunnels)
    grew = relayed_packets(lab) - relayed_before
    print(f"relay counter +{grew} during 30 pings")
    assert grew < 20, f"the cloud gateway relayed {grew} packets during the pings"
    # the status command shows the pair, and how far the other NAT router is: the local NAT, the
    # two ISP routers, the other NAT (4), or the local NAT and the other NAT on the flat WAN (2)
    out = lab.ravenvpn(HZ, "status", check=True).stdout
    assert "direct path gw-qingdao: direct" in out, out
    hops = 4 if lab.isp_hop else 2
    assert f"{hops} hops away" in out, out
    assert direct_status(lab, QD)["pairs"]["gw-hangzhou"]["hops"] == hops


def test_conntrack_flush_on_a_nat_router_keeps_pings_going(punchable: Lab) -> None:
    lab = punchable
    lab.up_all()
    wait_for(lambda: both_direct(lab), timeout=20, interval=0.1, message="direct path")
    result: list[PingResult] = []
    pinger = threading.Thread(target=lambda: result.append(
        lab.ping(SRC, lab.pod_ip("qd-1"), count=100, interval=0.1, wait=1)))
    pinger.start()
    time.sleep(3)
    lab.nat("gw-hangzhou").run("conntrack", "-F")
    pinger.join()
    res = result[0]
    print(f"\nconntrack -F mid-stream: {res}")
    assert res.transmitted - res.received <= 20, res
    wait_for(lambda: both_direct(lab), timeout=90, interval=0.2, message="direct again after the flush")


def test_lost_direct_path_falls_back_to_the_relay_within_2_s(netns_env: None) -> None:
    with Lab(nat="cpe", direct=True) as lab:
        _fall_back(lab)


def _fall_back(lab: Lab) -> None:
    lab.up_all()
    wait_for(lambda: both_direct(lab), timeout=20, interval=0.1, message="direct path")
    hz_nat = lab.nat("gw-hangzhou")
    qd_pub = lab.public_ip("gw-qingdao")
    result: list[PingResult] = []
    pinger = threading.Thread(target=lambda: result.append(
        lab.ping(SRC, lab.pod_ip("qd-1"), count=60, interval=0.1, wait=1)))
    pinger.start()
    time.sleep(2)
    relayed_before = relayed_packets(lab)
    # the direct path dies (a NAT reboot, an ISP filter): both directions between the NATs drop
    for rule in (["-s", qd_pub], ["-d", qd_pub]):
        hz_nat.run("iptables", "-I", "FORWARD", *rule, "-j", "DROP")
    t_cut = time.monotonic()
    wait_for(lambda: pair_state(lab, HZ, "gw-qingdao") == "relayed", timeout=5, interval=0.05,
             message="hz-1 back on the relay")
    print(f"\nhz-1 on the relay {time.monotonic() - t_cut:.2f} s after the cut")
    pinger.join()
    res = result[0]
    print(f"direct path cut mid-stream: {res}")
    assert res.transmitted - res.received <= 20, res
    assert relayed_packets(lab) > relayed_before, "the relay carries the traffic after the cut"
    assert pair_state(lab, QD, "gw-hangzhou") == "relayed"


def test_symmetric_nats_stay_on_the_relay_without_flapping(netns_env: None) -> None:
    with Lab(nat="random-fully", direct=True) as lab:
        lab.up_all()
        hz_pub, qd_pub = lab.public_ip("gw-hangzhou"), lab.public_ip("gw-qingdao")
        states: set[str | None] = set()
        t0 = time.monotonic()
        with capture(lab.infra("internet"), "br0", f"udp and host {hz_pub} and host {qd_pub}") as direct:
            while time.monotonic() - t0 < 12:
                states.add(pair_state(lab, HZ, "gw-qingdao"))
                states.add(pair_state(lab, QD, "gw-hangzhou"))
                time.sleep(0.1)
            relayed_before = relayed_packets(lab)
            res = lab.ping(SRC, lab.pod_ip("qd-1"), count=20, interval=0.05, size=SIZE)
        assert res.received == 20, res
        assert "direct" not in states, states
        assert {pair_state(lab, HZ, "gw-qingdao"), pair_state(lab, QD, "gw-hangzhou")} == {"relayed"}
        assert direct_status(lab, HZ)["pairs"]["gw-qingdao"]["failures"] == 1
        assert relayed_packets(lab) >= relayed_before + 40, "pings go through the relay"
        # only the capped punching round went directly: at most 7 initiations and some probes per side
        sent = [p for p in direct.packets() if p.haslayer("UDP")]
        assert 0 < len(sent) <= 2 * (7 + 35), len(sent)
        assert not any(len(p["UDP"].payload) >= SIZE for p in sent)


def test_a_port_forward_is_reached_directly_without_punching(netns_env: None) -> None:
    with Lab(nat={"gw-hangzhou": "forward", "gw-qingdao": "cpe"}, direct=True) as lab:
        lab.up_all()
        hz_pub, qd_pub = lab.public_ip("gw-hangzhou"), lab.public_ip("gw-qingdao")
        assert {p.gateway for p in lab.status(QD).peers} == {"gw-cloud", "gw-hangzhou"}
        hz_peer = next(p for p in lab.status(QD).peers if p.gateway == "gw-hangzhou")
        assert hz_peer.endpoint == f"{hz_pub}:{TUNNEL_PORT}" and hz_peer.persistent_keepalive == 5
        assert direct_status(lab, QD).get("pairs", {}) == {}   # nothing to punch
        # qd-1 calls hz-1 through the forward (hz-1 cannot call qd-1: no public endpoint); a first
        # initiation sent before hz-1 listened is retried after WireGuard's 5 s REKEY_TIMEOUT
        wait_for(lambda: lab.ping("qd-2", lab.ip("hz-1"), count=1, wait=1).ok, timeout=20, interval=0.1,
                 message="qd-2 -> hz-1 through the port forward")
        with capture(lab.infra("internet"), "br0", "udp") as cap:
            res = lab.ping("qd-2", lab.ip("hz-1"), count=10, interval=0.05, size=SIZE, wait=3)
        assert res.received >= 9, res
        pkts = cap.packets()
        assert big_udp(pkts, qd_pub, hz_pub) >= 9 and big_udp(pkts, hz_pub, qd_pub) >= 9


@pytest.mark.parametrize("nat,isp_hop,hops", [("cpe", True, 4), ("masquerade", True, 4), ("cpe", False, 2)],
                         ids=["cpe-isp", "masquerade-isp", "cpe-flat"])
def test_hop_discovery_counts_the_routers_to_the_other_nat(netns_env: None, nat: str, isp_hop: bool,
                                                           hops: int) -> None:
    """hz-1 -> qingdao's NAT: its own NAT, each ISP router, the other NAT (which answers port
    unreachable, or nothing behind an input firewall); what the TTL-limited openers are cut to."""
    code = ("import sys, time; from ravenvpn.raven.node.hops import discover_hops; t = time.monotonic(); "
            "h = discover_hops(sys.argv[1]); print(h, round(time.monotonic() - t, 3))")
    with Lab(nat=nat, isp_hop=isp_hop) as lab:
        out = lab.node(HZ).run(lab.python, "-c", code, lab.public_ip("gw-qingdao")).stdout.split()
        print(f"\n{nat}, {'ISP hop' if isp_hop else 'flat'}: H = {out[0]} in {out[1]} s")
        assert int(out[0]) == hops, out
