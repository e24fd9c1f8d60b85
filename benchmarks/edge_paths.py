"""Edge<->edge through NAT: the direct (hole-punched) path against the cloud relay, in the same run.

    python3 -m benchmarks.edge_paths [--seconds 4] [--delays 0,10] [--isp-hop] [--out FILE]

For each WAN delay (one-way milliseconds added to every internet uplink by tools/wandelay.py; 0: none)
the three-domain lab (tools/lab.py) comes up with direct paths allowed (NAT routers ``cpe`` without
delay, plain port-preserving ``masquerade`` with it; with ``--isp-hop`` an ISP router in front of each
NAT router and plain ``masquerade`` at every delay, punched with TTL-limited openers), waits until
hangzhou<->qingdao is direct and
measures from the pod of hz-1 to the pod of qd-1 (pods behind the two edge gateways): TCP throughput
(iperf3, one stream), ping RTT (median of 40), and the CPU seconds the cloud gateway's ``ravenvpn up``
and the userspace WAN delays used during the TCP run. Then the same lab is built again with
``RAVENVPN_FORCE_RELAY=all`` and the same figures are taken through the relay.

All of it shares the machine's cores (the gateways, the delays, iperf3): the figures compare paths
in one run, they are not absolute.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from tools.lab import Lab
from tools.process import wait_for
from tools.traffic import iperf3

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pair_state(lab: Lab, node: str, gateway: str) -> str | None:
    try:
        status = json.loads(lab.up_process(node).state_file("raven0.direct.json").read_text())
    except (OSError, ValueError):
        return None
    return status.get("pairs", {}).get(gateway, {}).get("state")


def measure(lab: Lab, seconds: float) -> dict[str, Any]:
    cloud = lab.up_process("cloud-1").pid
    delays = [p.pid for p in lab.delay_procs]
    rtt = lab.ping("pod:hz-1", lab.pod_ip("qd-1"), count=40, interval=0.05, wait=2)
    cpu0 = cpu_seconds(cloud), sum(cpu_seconds(p) for p in delays)
    tcp = iperf3(lab.pod("hz-1"), lab.pod("qd-1"), lab.pod_ip("qd-1"), seconds=seconds)
    cpu1 = cpu_seconds(cloud), sum(cpu_seconds(p) for p in delays)
    return {"tcp_mbps": round(tcp["bits_per_second"] / 1e6, 1), "retransmits": tcp["retransmits"],
            "rtt_ms_p50": round(statistics.median(rtt.rtts), 3) if rtt.rtts else None,
            "ping_loss": rtt.transmitted - rtt.received,
            "cloud_cpu_s": round(cpu1[0] - cpu0[0], 2), "wan_delay_cpu_s": round(cpu1[1] - cpu0[1], 2)}


def run_delay(delay: float, seconds: float, isp_hop: bool = False) -> dict[str, Any]:
    # On the flat lab WAN an accept-everything NAT is punchable only with delay (punch.py); behind
    # ISP routers the TTL-limited openers make it punchable without.
    nat = "masquerade" if delay > 0 or isp_hop else "cpe"
    out: dict[str, Any] = {"wan_delay_ms": delay, "nat": nat, "isp_hop": isp_hop}
    for path in ("direct", "relayed"):
        # Two labs one after the other (restarting the edge gateways in one lab would fail them over
        # to their standbys): the first with direct paths, the second with RAVENVPN_FORCE_RELAY=all.
        with Lab(nat=nat, direct=(path == "direct"), wan_delay=delay, isp_hop=isp_hop) as lab:
            lab.up_all()
            t0 = time.monotonic()
            want = "direct" if path == "direct" else "forced-relay"
            wait_for(lambda: pair_state(lab, "hz-1", "gw-qingdao") == want
                     and pair_state(lab, "qd-1", "gw-hangzhou") == want, timeout=60, interval=0.1,
                     message=f"hangzhou <-> qingdao {want}")
            if path == "direct":
                out["direct_after_s"] = round(time.monotonic() - t0, 1)
            wait_for(lambda: lab.ping("pod:hz-1", lab.pod_ip("qd-1"), count=1, wait=1).ok, timeout=30,
                     interval=0.1, message="pod hz-1 -> pod qd-1")
            out[path] = measure(lab, seconds)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--delays", default="0,10", help="one-way WAN delays per uplink, ms, comma-separated")
    ap.add_argument("--isp-hop", action="store_true",
                    help="an ISP router in front of each NAT router; plain masquerade NATs at every delay")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    results = [run_delay(float(d), args.seconds, args.isp_hop) for d in args.delays.split(",")]
    print(f"{'WAN delay':>9} {'path':>8} {'TCP Mbit/s':>10} {'RTT p50 ms':>10} {'cloud CPU s':>11} "
          f"{'delay CPU s':>11}")
    for r in results:
        for path in ("direct", "relayed"):
            m = r[path]
            print(f"{r['wan_delay_ms']:>7g}ms {path:>8} {m['tcp_mbps']:>10} {m['rtt_ms_p50']:>10} "
                  f"{m['cloud_cpu_s']:>11} {m['wan_delay_cpu_s']:>11}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
