"""The README demo: the OpenYurt Raven user guide's three-domain scenario, with ravenvpn, in namespaces.

    sudo python3 -m tools.demo            (from the repository root; needs root, like `ip netns`)

Builds the lab of :mod:`tools.lab` from ``examples/cluster-three-domains.yaml`` (cloud, hangzhou and
qingdao; both edge domains behind NAT), runs ``ravenvpn up`` on all six nodes, waits for the tunnels,
then shows what the guide shows: pings host->host and pod->pod between every pair of domains, the
non-gateway Edge-HZ-2 pinging the non-gateway Edge-QD-2 while ``tcpdump -i raven0`` runs on both edge
gateways, and ``ravenvpn status`` on the cloud gateway, which relays hangzhou<->qingdao.  Then
``ravenvpn down`` everywhere and the namespaces are deleted.  Exit status 1 if any ping failed
(2 if the lab could not be brought up).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

from tools.lab import DEFAULT_CLUSTER, INTERFACE, Lab
from tools.traffic import capture

PING_COUNT = 3


def _title(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def _cmd(where: str, cmd: str) -> None:
    print(f"[{where}]$ {cmd}", flush=True)


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.rstrip().splitlines())


def _failover(lab: Lab) -> list[str]:
    """Kill the active hangzhou gateway (SIGKILL, cables pulled) and show a member's pings come back."""
    member = next((h.name for h in lab.domain("gw-hangzhou").hosts if lab.role(h.name) == "member"), None)
    active = next((h.name for h in lab.domain("gw-hangzhou").hosts if lab.role(h.name) == "active-gateway"), None)
    if member is None or active is None:
        print("(no hangzhou member in this cluster: try --cluster examples/cluster-ha.yaml)")
        return []
    target = next(n for n in lab.active_gateways() if lab.domain_of(n).gateway == "gw-qingdao")
    _title(f"failover: SIGKILL of ravenvpn up on {active}, its cables pulled; {member} keeps pinging {target}")
    t0 = time.monotonic()
    lab.kill_up(active)
    lab.cable(active, False)
    while time.monotonic() - t0 < 15:
        if lab.ping(f"pod:{member}", lab.pod_ip(target), count=1, wait=0.3).ok:
            break
    took = time.monotonic() - t0
    ok = lab.ping(f"pod:{member}", lab.pod_ip(target), count=3, interval=0.2, wait=2).ok
    time.sleep(0.5)
    for h in lab.domain("gw-hangzhou").hosts:
        print(f"    {h.name:8} {lab.role(h.name) if lab.is_up(h.name) else '(killed)'}")
    print(f"pod {member} -> pod {target}: first reply {took:.2f}s after the kill; no edit of the cluster file")
    lab.cable(active, True)
    lab.up(active, wait=False)
    return [] if ok else [f"pod {member} -> pod {target} after the failover"]


def run(cluster: Path, verbose: bool = False, failover: bool = False) -> int:
    failures: list[str] = []
    t_start = time.monotonic()
    with Lab(cluster, verbose=verbose) as lab:
        _title(f"lab from {cluster.name}")
        for d in lab.domains:
            where = f"behind NAT (public {d.uplink_ip})" if d.under_nat else "not under NAT"
            print(f"{d.gateway}: LAN {d.lan}, {where}")
            for h in d.hosts:
                extra = f", public {h.public_ip}" if h.public_ip else ""
                print(f"    {h.name:8} {h.internal_ip:14} pods {h.pod_cidr} (pod {h.pod_ip}){extra}")

        _title("ravenvpn up on every node")
        for name in lab.names:
            args = " ".join(lab.up_args(name)).replace(str(lab.dir) + "/", "")
            _cmd(name, f"ravenvpn {args} &")
        t0 = time.monotonic()
        lab.up_all()
        took_up = time.monotonic() - t0
        took_hs = lab.wait_tunnels(timeout=40)
        for name in lab.names:
            st = lab.status(name)
            relay = " (relay for NAT<->NAT)" if st.relay else ""
            print(f"    {name:8} {st.role:15} of {st.gateway}{relay}")
        print(f"all up in {took_up:.1f}s, all gateway handshakes done {took_hs:.1f}s later")

        # --- every pair of domains, both directions, host->host and pod->pod
        pairs = [(a, b) for a, b in itertools.permutations(lab.names, 2)
                 if lab.domain_of(a).gateway != lab.domain_of(b).gateway]
        for kind, src_of, dst_of in (("host -> host", lambda n: n, lab.ip),
                                     ("pod -> pod", lambda n: f"pod:{n}", lab.pod_ip)):
            _title(f"cross-domain ping, {kind}")
            results = lab.ping_many([(src_of(a), dst_of(b)) for a, b in pairs],
                                    count=PING_COUNT, interval=0.2, wait=2, deadline=8)
            for (a, b), res in zip(pairs, results):
                ok = res.received == res.transmitted and res.received > 0
                mark = "ok  " if ok else "FAIL"
                rtt = f"rtt avg {res.rtt_avg:.2f} ms" if res.rtt_avg is not None else "no reply"
                print(f"  {mark} {a:8} -> {b:8} {dst_of(b):14} {res.received}/{res.transmitted} {rtt}")
                if not res.ok:
                    failures.append(f"{kind} {a} -> {b} ({dst_of(b)})")

        # --- the guide's scenario, with tcpdump on the raven0 that carries the traffic: the edge gateways'
        # (hz-2 and qd-2 are standby tunnel endpoints: with failover they are hot standbys, which carry
        # their own node's traffic in their own raven0)
        hz_gw, qd_gw = lab.carrier("hz-2"), lab.carrier("qd-2")
        _title(f"hz-2 pings qd-2 (tcpdump -i raven0 on {hz_gw} and {qd_gw})")
        with capture(lab.node(hz_gw), INTERFACE, "icmp") as cap_hz, \
                capture(lab.node(qd_gw), INTERFACE, "icmp") as cap_qd:
            _cmd("hz-2", f"ping {lab.ip('qd-2')} -c 4")
            res = lab.ping("hz-2", lab.ip("qd-2"), count=4, interval=1, wait=2)
            print(_indent(res.output, ""))
            if not res.ok:
                failures.append(f"hz-2 -> qd-2 ({lab.ip('qd-2')}) with tcpdump")
        for gw, cap in ((hz_gw, cap_hz), (qd_gw, cap_qd)):
            _cmd(gw, f"tcpdump -n -i {INTERFACE} icmp")
            out = lab.node(gw).run("tcpdump", "-n", "-r", str(cap.path), check=False).stdout
            print(_indent(out or "(nothing captured)", "  "))

        # --- the cloud gateway relays hangzhou <-> qingdao: show its peers and counters
        cloud_gw = next((n for n in lab.active_gateways() if lab.status(n).relay), "cloud-1")
        _title(f"ravenvpn status on {cloud_gw} (relays hangzhou <-> qingdao)")
        _cmd(cloud_gw, "ravenvpn status")
        print(_indent(lab.ravenvpn(cloud_gw, "status").stdout, "  "))
        _cmd(cloud_gw, f"wg show {INTERFACE} transfer")
        print(_indent(lab.node(cloud_gw).run("wg", "show", INTERFACE, "transfer").stdout, "  "))

        if failover:
            failures += _failover(lab)

        _title("ravenvpn down on every node")
        for name in lab.names:
            res = lab.down(name)
            print(f"  [{name}] {res.stdout.strip()}")
    print(f"\nlab removed; {time.monotonic() - t_start:.1f}s in total")
    if failures:
        print(f"FAILED: {len(failures)} ping(s) got no reply: " + "; ".join(failures))
        return 1
    print("all pings answered")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tools.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster", type=Path, default=DEFAULT_CLUSTER, help="cluster YAML (default: the example)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print lab build steps")
    parser.add_argument("--failover", action="store_true",
                        help="also kill the active hangzhou gateway and show a member's traffic come back "
                             "(with --cluster examples/cluster-ha.yaml)")
    args = parser.parse_args(argv)
    try:
        return run(args.cluster, args.verbose, args.failover)
    except KeyboardInterrupt:
        print("interrupted; lab removed", file=sys.stderr)
        return 2
    except Exception as exc:  # the lab is already torn down by its context manager
        print(f"demo failed: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
