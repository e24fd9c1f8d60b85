"""Failover time of an active gateway that dies, measured end to end in the three-domain HA lab.

    python3 -m benchmarks.failover [--runs 10] [--flap 30] [--out DIR]

The lab of ``examples/cluster-ha.yaml`` (tools/lab.py: namespaces, NAT routers, ``ravenvpn up`` on every
node). One run: three probes ping every 10 ms (``ping -D -i 0.01``) — pod hz-3 → pod qd-1, pod qd-1 → pod
hz-3, host hz-3 → host qd-1 (hz-3 is a member of hangzhou: its traffic depends on hangzhou's active
gateway) — then the active hangzhou gateway's ``ravenvpn up`` gets SIGKILL and its node's cables are
pulled at the same instant. A probe has recovered at the first reply to an echo *sent after* the kill
(reply time minus RTT ≥ kill time); the run's failover time is the latest of the three. Then the old
gateway's cable goes back, its ``up`` restarts (it becomes the standby: no takeover), and the next run
kills the new active one. Reported: every run, the median and the maximum.

``--flap S``: afterwards, the active gateway's cables go down and up every 2 s for S seconds while pod
hz-3 pings pod qd-1 at 10 pps; reported: lost pings, how often the active role and cloud-1's route for
hangzhou changed.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tools.process import wait_for
from tools.traffic import PingResult
from tools.lab import Lab

ROOT = Path(__file__).resolve().parents[1]
HA_CLUSTER = ROOT / "examples" / "cluster-ha.yaml"
HZ = ("hz-1", "hz-2")
_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .*time=([\d.]+) ms")
GIVE_UP = 30.0   # seconds after the kill


class Probe:
    """``ping -D -i 0.01`` from ``src`` to ``dst`` until stopped; finds the first reply sent after ``t_kill``."""

    def __init__(self, lab: Lab, src: str, dst: str) -> None:
        self.lab, self.src, self.dst = lab, src, dst
        self.t_kill: float | None = None     # wall clock (ping -D prints gettimeofday)
        self.recovered: float | None = None  # seconds after t_kill
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        node = self.lab._any(self.src)
        while not self._stop.is_set():   # ping may give up on errors while routes change: start another
            proc = self._proc = node.popen("ping", "-D", "-n", "-i", "0.01", "-W", "1", self.dst,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            assert proc.stdout is not None
            for line in proc.stdout:
                m = _REPLY.match(line)
                if m and self.t_kill is not None and self.recovered is None:
                    at, rtt = float(m.group(1)), float(m.group(2)) / 1000
                    if at - rtt >= self.t_kill:
                        self.recovered = at - self.t_kill
                if self._stop.is_set():
                    break
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.send_signal(signal.SIGINT)
        self._thread.join(5)


def one_run(lab: Lab) -> dict[str, Any]:
    [active] = lab.active_of("gw-hangzhou")
    jobs = {"pod hz-3 -> pod qd-1": ("pod:hz-3", lab.pod_ip("qd-1")),
            "pod qd-1 -> pod hz-3": ("pod:qd-1", lab.pod_ip("hz-3")),
            "host hz-3 -> host qd-1": ("hz-3", lab.ip("qd-1"))}
    probes = {k: Probe(lab, *v) for k, v in jobs.items()}
    try:
        time.sleep(1.0)   # probes running, replies flowing
        t_kill = time.time()
        for p in probes.values():
            p.t_kill = t_kill
        lab.kill_up(active)
        lab.cable(active, False)
        end = time.monotonic() + GIVE_UP
        while time.monotonic() < end and any(p.recovered is None for p in probes.values()):
            time.sleep(0.05)
    finally:
        for p in probes.values():
            p.stop()
    times = {k: p.recovered for k, p in probes.items()}
    try:   # the status file is written after the routes: the traffic may be back before it
        wait_for(lambda: len(lab.active_of("gw-hangzhou")) == 1, timeout=5, interval=0.05)
    except TimeoutError:
        pass
    successor = lab.active_of("gw-hangzhou")
    # put the old gateway back: it must come back as the standby
    lab.cable(active, True)
    lab.up(active, wait=False)
    lab.wait_role(active, "standby", timeout=30.0)
    lab.wait_tunnels(timeout=40)
    time.sleep(1.0)
    worst = None if any(v is None for v in times.values()) else max(times.values())  # type: ignore[type-var]
    return {"killed": active, "successor": successor, "probes": times, "failover_s": worst}


def flap(lab: Lab, seconds: float) -> dict[str, Any]:
    [active] = lab.active_of("gw-hangzhou")
    roles: list[tuple[str, ...]] = []
    holders: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            now = tuple(lab.active_of("gw-hangzhou"))
            if not roles or roles[-1] != now:
                roles.append(now)
            try:
                peers = lab.status("cloud-1").peers
                h = next((p.node for p in peers if p.gateway == "gw-hangzhou" and not p.standby), None)
            except Exception:
                h = None
            if h is not None and (not holders or holders[-1] != h):
                holders.append(h)
            time.sleep(0.1)

    result: dict[str, PingResult] = {}
    count = int(seconds * 10) + 20

    def pinger() -> None:
        result["ping"] = lab.ping("pod:hz-3", lab.pod_ip("qd-1"), count=count, interval=0.1, wait=1)

    w, p = threading.Thread(target=watch), threading.Thread(target=pinger)
    w.start()
    p.start()
    time.sleep(1.0)
    end = time.monotonic() + seconds
    down = False
    while time.monotonic() < end:
        down = not down
        lab.cable(active, not down)
        time.sleep(2.0)
    lab.cable(active, True)
    p.join(seconds + 60)
    time.sleep(2.0)
    stop.set()
    w.join(5)
    ping = result["ping"]
    return {"flapped": active, "seconds": seconds, "pings_sent": ping.transmitted, "pings_lost": ping.transmitted - ping.received,
            "active_sequence": [list(r) for r in roles], "cloud_route_sequence": holders}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.failover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--flap", type=float, default=30.0, help="seconds of a flapping link (0: skip)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    runs: list[dict[str, Any]] = []
    with Lab(HA_CLUSTER) as lab:
        lab.up_all()
        lab.wait_tunnels(timeout=40)
        time.sleep(1.0)
        for i in range(args.runs):
            r = one_run(lab)
            runs.append(r)
            shown = ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} -" for k, v in r["probes"].items())
            print(f"run {i + 1:2}: killed {r['killed']} -> {','.join(r['successor']) or '?'}: "
                  f"{r['failover_s']:.2f} s ({shown})" if r["failover_s"] is not None else
                  f"run {i + 1:2}: killed {r['killed']}: NOT RECOVERED within {GIVE_UP:.0f} s ({shown})", flush=True)
        flapping = flap(lab, args.flap) if args.flap > 0 else None
    done = [r["failover_s"] for r in runs if r["failover_s"] is not None]
    summary = {"runs": len(runs), "recovered": len(done),
               "median_s": statistics.median(done) if done else None, "max_s": max(done) if done else None}
    print(f"\nfailover time (SIGKILL + cables pulled -> later of the first replies pod->pod both ways and "
          f"host->host): median {summary['median_s']:.2f} s, max {summary['max_s']:.2f} s over "
          f"{len(done)}/{len(runs)} runs" if done else "\nno run recovered")
    if flapping is not None:
        print(f"flapping link ({flapping['flapped']} down/up every 2 s for {flapping['seconds']:.0f} s): "
              f"{flapping['pings_lost']}/{flapping['pings_sent']} pings lost at 10 pps; active role: "
              f"{' -> '.join('+'.join(r) or '-' for r in flapping['active_sequence'])}; cloud-1 routed hangzhou to: "
              f"{' -> '.join(flapping['cloud_route_sequence'])}")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"failover-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"summary": summary, "runs": runs, "flap": flapping}, indent=1))
    print(f"results: {out}")
    return 0 if len(done) == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
