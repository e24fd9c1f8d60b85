"""Two edge gateways behind ONE public address (issue 11, "Raven's fields"): the same public IP is no
proof of one LAN, so the pair tries the other's private endpoint and goes direct there only when
authenticated probes cross both ways.

The three-domain lab (tools/lab.py) with ``shared_nat``: ``site`` puts hangzhou and qingdao behind
one site NAT whose LANs are routed to each other (hz-1 reaches qd-1's InternalIP); ``cgnat`` gives
each its own home NAT router behind one carrier NAT (100.64.0.0/24) that does not hairpin, and the
LANs do not reach each other. Checked as a user would: where the packets go (tcpdump on the site
segment, the carrier network and the internet), ping loss, the cloud gateway's relay counter and
``ravenvpn status``.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from tools.lab import Lab
from tools.process import wait_for
from tools.traffic import PingResult, capture

pytestmark = pytest.mark.netns

HZ, QD, CLOUD = "hz-1", "qd-1", "cloud-1"
SIZE = 1000          # ping payload: ping packets are told apart from probes and handshakes by size
SRC = "pod:hz-1"     # a pod behind the active gateway (see test_holepunch.py)


def direct_status(lab: Lab, node: str) -> dict[str, Any]:
    try:
        return json.loads(lab.up_process(node).state_file("raven0.direct.json").read_text())
    except (OSError, ValueError):
        return {}


def pair(lab: Lab, node: str, gateway: str) -> dict[str, Any]:
    return dict(direct_status(lab, node).get("pairs", {}).get(gateway, {}))


def both_direct_via_lan(lab: Lab) -> bool:
    a, b = pair(lab, HZ, "gw-qingdao"), pair(lab, QD, "gw-hangzhou")
    return all(p.get("state") == "direct" and p.get("via") == "lan" for p in (a, b))


def relayed_packets(lab: Lab) -> int:
    return int(direct_status(lab, CLOUD).get("relayed_packets", 0))


def big_udp(pkts: Any, src: str, dst: str) -> int:
    return sum(1 for p in pkts if p.haslayer("UDP") and p["IP"].src == src and p["IP"].dst == dst
               and len(p["UDP"].payload) >= SIZE)


def test_one_site_nat_goes_direct_over_the_lan(netns_env: None) -> None:
    with Lab(direct=True, shared_nat="site", nat="cpe") as lab:
        t0 = time.monotonic()
        lab.up_all()
        try:
            wait_for(lambda: both_direct_via_lan(lab), timeout=25, interval=0.1,
                     message="hangzhou <-> qingdao direct via their LAN")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{pair(lab, HZ, 'gw-qingdao')}\n{lab.debug_dump()}") from None
        print(f"\ndirect via LAN {time.monotonic() - t0:.1f} s after the first `ravenvpn up`")
        hz_lan, qd_lan = lab.ip(HZ), lab.ip(QD)
        shared_pub, cloud_pub = lab.public_ip("gw-hangzhou"), lab.hosts[CLOUD].public_ip
        assert lab.public_ip("gw-qingdao") == shared_pub
        relayed_before = relayed_packets(lab)
        with capture(lab.infra("shared-nat"), "br0", "udp") as site, \
                capture(lab.infra("internet"), "br0", "udp") as wan:
            res = lab.ping(SRC, lab.pod_ip(QD), count=20, interval=0.05, size=SIZE)
            res_back = lab.ping(f"pod:{QD}", lab.pod_ip(HZ), count=10, interval=0.05, size=SIZE)
        print(f"{res}\n{res_back}")
        assert res.received == 20 and res_back.received == 10, f"{res}\n{res_back}"
        seg = site.packets()
        # each ping crosses the site segment once each way, between the two gateways' private addresses
        there, back = big_udp(seg, hz_lan, qd_lan), big_udp(seg, qd_lan, hz_lan)
        assert there >= 30 and back >= 30, f"{there} / {back}"
        to_cloud = big_udp(wan.packets(), shared_pub, cloud_pub)
        assert to_cloud == 0, f"{to_cloud} ping-sized packets still went to the cloud gateway"
        grew = relayed_packets(lab) - relayed_before
        print(f"relay counter +{grew} during 30 pings")
        assert grew < 20, f"the cloud gateway relayed {grew} packets during the pings"
        out = lab.ravenvpn(HZ, "status", check=True).stdout
        line = next((x for x in out.splitlines() if "direct path gw-qingdao" in x), out)
        print(line)
        assert "direct path gw-qingdao: direct" in line and "via lan" in line and f"{qd_lan}:4500" in line, out


def test_carrier_grade_nat_stays_relayed_without_flapping(netns_env: None) -> None:
    with Lab(direct=True, shared_nat="cgnat", nat="cpe") as lab:
        lab.up_all()
        hz_lan, qd_lan = lab.ip(HZ), lab.ip(QD)
        states: list[tuple[float, str | None, str | None]] = []
        result: list[PingResult] = []
        relayed: list[int] = []

        def ping_later() -> None:
            time.sleep(8)
            relayed.append(relayed_packets(lab))
            result.append(lab.ping(SRC, lab.pod_ip(QD), count=40, interval=0.05, size=SIZE))
            time.sleep(1.5)       # the status file is rewritten every second
            relayed.append(relayed_packets(lab))

        t0 = time.monotonic()
        with capture(lab.infra("shared-nat"), "br0", "udp and dst net 192.168.0.0/16") as carrier:
            pinger = threading.Thread(target=ping_later)
            pinger.start()
            while time.monotonic() - t0 < 20:
                states.append((round(time.monotonic() - t0, 1), pair(lab, HZ, "gw-qingdao").get("state"),
                               pair(lab, QD, "gw-hangzhou").get("state")))
                time.sleep(0.1)
            pinger.join()
        res = result[0]
        print(f"\n{res}")
        changes = [s for i, s in enumerate(states) if i == 0 or s[1:] != states[i - 1][1:]]
        print("states (s since up, hz-1, qd-1):", changes)
        assert res.received == 40, res
        assert relayed[1] - relayed[0] >= 60, f"pings go through the relay: +{relayed[1] - relayed[0]}"
        seen = {s for _t, a, b in states for s in (a, b)}
        assert "direct" not in seen, changes
        hz, qd = pair(lab, HZ, "gw-qingdao"), pair(lab, QD, "gw-hangzhou")
        print(f"hz-1: {hz}\nqd-1: {qd}")
        for p in (hz, qd):
            # one round: the LAN attempt and the public punch both failed; quiet since (no flapping)
            assert p["state"] == "relayed" and p["rounds"] == 1 and p["failures"] == 1, p
            assert p["lan_attempts"] == 1 and p["lan_failures"] == 1 and p["via"] is None, p
        for side in (1, 2):                    # each side went through one round, once
            seq = [s[side] for s in states if s[side] is not None]
            seq = [x for i, x in enumerate(seq) if i == 0 or x != seq[i - 1]]
            assert seq in (["relayed", "trying-lan", "punching", "relayed"],
                           ["trying-lan", "punching", "relayed"]), changes
        pkts = [p for p in carrier.packets() if p.haslayer("UDP") and p["IP"].dst in (hz_lan, qd_lan)]
        sizes = sorted(len(p["UDP"].payload) for p in pkts)
        span = (float(pkts[-1].time) - float(pkts[0].time)) if pkts else 0.0
        print(f"{len(pkts)} packets to the private addresses within {span:.2f} s, UDP payloads {sizes}")
        # only the capped LAN attempt (handshake initiations, 148 bytes), within its 2 s phase
        assert 0 < len(pkts) <= 8 and all(s < SIZE for s in sizes) and span <= 2.5, sizes


def test_a_lost_lan_path_falls_back_to_the_relay(netns_env: None) -> None:
    with Lab(direct=True, shared_nat="site", nat="cpe") as lab:
        lab.up_all()
        wait_for(lambda: both_direct_via_lan(lab), timeout=25, interval=0.1, message="direct via LAN")
        result: list[PingResult] = []
        pinger = threading.Thread(target=lambda: result.append(
            lab.ping(SRC, lab.pod_ip(QD), count=60, interval=0.1, wait=1)))
        pinger.start()
        time.sleep(2)
        relayed_before = relayed_packets(lab)
        # the site's LAN-to-LAN routing dies (a firewall rule, a VLAN change); the internet stays
        qd_net = str(lab.domain("gw-qingdao").lan)
        for rule in (["-s", qd_net], ["-d", qd_net]):
            lab.nat("gw-hangzhou").run("iptables", "-I", "FORWARD", *rule, "-j", "DROP")
        t_cut = time.monotonic()
        wait_for(lambda: pair(lab, HZ, "gw-qingdao").get("state") == "relayed", timeout=5, interval=0.05,
                 message="hz-1 back on the relay")
        print(f"\nhz-1 on the relay {time.monotonic() - t_cut:.2f} s after the LAN cut")
        pinger.join()
        res = result[0]
        print(f"LAN path cut mid-stream: {res}")
        assert res.transmitted - res.received <= 20, res
        time.sleep(1.5)       # the status file is rewritten every second
        assert relayed_packets(lab) > relayed_before + 40, "the relay carries the traffic after the cut"
        assert pair(lab, QD, "gw-hangzhou")["state"] == "relayed"
        assert pair(lab, HZ, "gw-qingdao")["losses"] == 1
