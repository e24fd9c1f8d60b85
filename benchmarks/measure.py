"""Single measurements: iperf3 TCP/UDP, ping percentiles, daemon CPU time and RSS, handshake load.

Each function does one run and returns plain numbers plus a small ``detail`` dict for the raw JSON. They
raise on failure; the caller records the error and carries on with the next measurement.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from . import REPO_ROOT
from tools.node import Node
from tools.traffic import iperf3, ping
from tools.wg import WgInterface

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Unique iperf3 ports for the whole run (every server is a one-off `-s -1`; never reuse a port, so a
# socket in TIME_WAIT or a slow-to-die server can never be mistaken for the next test's server).
_PORTS = itertools.count(30101)


def next_port() -> int:
    return next(_PORTS)


# --------------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 200 samples is the 198th smallest): no interpolation."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


# --------------------------------------------------------------------------------------------------
# /proc readings of daemon processes
# --------------------------------------------------------------------------------------------------


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of the processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5): utime, stime
    return total / CLK_TCK


def proc_status_kib(pids: Sequence[int], key: str) -> int:
    """The largest ``key`` (VmHWM, VmRSS...) among the processes, in KiB."""
    best = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                best = max(best, int(line.split()[1]))
    return best


def daemon_pids(iface: WgInterface) -> list[int]:
    pids = [p for p in iface.daemon_pids if Path(f"/proc/{p}").exists()]
    if not pids:
        raise RuntimeError(f"daemon of {iface.ifname} in {iface.node.name} is not running")
    return pids


# --------------------------------------------------------------------------------------------------
# iperf3
# --------------------------------------------------------------------------------------------------


def _trim(raw: dict[str, Any]) -> dict[str, Any]:
    """The parts of iperf3's JSON worth keeping in results.json (not the per-interval reports)."""
    end = raw.get("end", {})
    keep = {k: end[k] for k in ("sum_sent", "sum_received", "sum", "cpu_utilization_percent") if k in end}
    start = raw.get("start", {})
    keep["tcp_mss"] = start.get("tcp_mss_default")
    return keep


def tcp(client: Node, server: Node, addr: str, seconds: int, reverse: bool = False, parallel: int = 1,
        cpu_pids: dict[str, list[int]] | None = None, load_ping: dict[str, Any] | None = None) -> dict[str, Any]:
    """TCP throughput (receiver side bit/s). ``cpu_pids``: daemons whose CPU time to account per GB.
    ``load_ping``: {'count', 'interval', 'delay'}: ping ``addr`` from ``client`` while the stream runs."""
    before = {side: cpu_seconds(p) for side, p in (cpu_pids or {}).items()}
    pinger: dict[str, Any] = {}
    thread = None
    if load_ping:

        def run_ping() -> None:
            try:
                time.sleep(load_ping["delay"])
                pinger["result"] = ping(client, addr, count=load_ping["count"], interval=load_ping["interval"],
                                        wait=2)
            except BaseException as exc:  # reported by the caller
                pinger["error"] = exc

        thread = threading.Thread(target=run_ping, daemon=True)
        thread.start()
    try:
        res = iperf3(client, server, addr, seconds=seconds, reverse=reverse, parallel=parallel, port=next_port())
    finally:
        if thread is not None:
            thread.join(load_ping["count"] * load_ping["interval"] + 15)  # type: ignore[index]
    out: dict[str, Any] = {
        "bps": res["bits_per_second"],
        "detail": {"retransmits": res["retransmits"], "received_bytes": res["received_bytes"],
                   "seconds": res["seconds"], "port": res["port"], "iperf3": _trim(res["raw"])},
    }
    if cpu_pids:
        gb = res["received_bytes"] / 1e9
        out["cpu_s"] = {side: cpu_seconds(p) - before[side] for side, p in cpu_pids.items()}
        out["cpu_per_gb"] = {side: (s / gb if gb > 0 else None) for side, s in out["cpu_s"].items()}
    if load_ping:
        if "error" in pinger:
            out["ping_error"] = f"ping under load failed: {pinger['error']}"
        elif "result" in pinger:
            out["ping"] = ping_summary(pinger["result"])
        else:
            out["ping_error"] = "ping under load did not finish"
    return out


def udp(client: Node, server: Node, addr: str, seconds: int, length: int) -> dict[str, Any]:
    """UDP at maximum rate (``-b 0``) with ``length``-byte payloads, measured at the receiver:
    delivered packets/s = (received packets - lost) / receiver seconds, loss % as the receiver saw it."""
    res = iperf3(client, server, addr, seconds=seconds, udp=True, bitrate="0", length=length, port=next_port())
    end = res["raw"].get("end", {})
    rcv = end.get("sum_received") or end.get("sum") or {}
    packets, lost = int(rcv.get("packets", 0)), int(rcv.get("lost_packets", 0))
    secs = float(rcv.get("seconds") or res["seconds"] or seconds)
    delivered = max(packets - lost, 0)
    if packets <= 0:
        raise RuntimeError("iperf3 reported no UDP packets at the receiver")
    return {
        "pps": delivered / secs,
        "loss": float(rcv.get("lost_percent", 100.0 * lost / packets)),
        "goodput_bps": delivered * length * 8 / secs,
        "detail": {"packets": packets, "lost": lost, "delivered": delivered, "receiver_seconds": secs,
                   "sent_pps": int((end.get("sum_sent") or {}).get("packets", 0)) / max(seconds, 1e-9),
                   "port": res["port"], "iperf3": _trim(res["raw"])},
    }


# --------------------------------------------------------------------------------------------------
# ping
# --------------------------------------------------------------------------------------------------


def ping_summary(result: Any) -> dict[str, Any]:
    if not result.rtts:
        raise RuntimeError(f"no ping replies ({result.transmitted} sent)")
    return {
        "p50": percentile(result.rtts, 50),
        "p99": percentile(result.rtts, 99),
        "sent": result.transmitted,
        "received": result.received,
        "loss_pct": result.loss_pct,
        "max": max(result.rtts),
    }


def ping_idle(client: Node, addr: str, count: int, interval: float) -> dict[str, Any]:
    return ping_summary(ping(client, addr, count=count, interval=interval, wait=2))


# --------------------------------------------------------------------------------------------------
# handshake load
# --------------------------------------------------------------------------------------------------

#: initiators' own source addresses (RFC 2544 benchmarking range, inside our namespaces only)
HS_SOURCE_NET = "198.19"


def hs_source_ips(count: int) -> list[str]:
    return [f"{HS_SOURCE_NET}.{1 + i // 250}.{1 + i % 250}" for i in range(count)]


def add_source_ips(initiator: Node, responder: Node, ifname_i: str, ifname_r: str, ips: Sequence[str]) -> None:
    """Give the initiator node one /32 per simulated initiator; route them back from the responder."""
    batch = "".join(f"addr add {ip}/32 dev {ifname_i}\n" for ip in ips)
    initiator.run("ip", "-batch", "-", input=batch, timeout=60)
    responder.run("ip", "route", "replace", f"{HS_SOURCE_NET}.0.0/16", "dev", ifname_r)


def handshake_load(initiator: Node, cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run ``benchmarks.hsload`` in ``initiator`` (so its sockets live in that namespace)."""
    path = initiator.tmpdir / f"hsload-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(cfg))
    os.chmod(path, 0o600)  # private keys (throwaway, but still)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    proc = initiator.run(sys.executable, "-m", "benchmarks.hsload", str(path), check=False, timeout=timeout,
                         env=env, cwd=REPO_ROOT)
    path.unlink(missing_ok=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"handshake generator exited {proc.returncode}: {' | '.join(tail)}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not result.get("verified"):
        raise RuntimeError(f"responder did not complete a verified handshake: {result.get('verify_detail')}")
    return result


# --------------------------------------------------------------------------------------------------
# wg configuration with many peers
# --------------------------------------------------------------------------------------------------


def peers_conf(public_keys: Sequence[str], net: int = 200) -> str:
    """A ``wg addconf`` file: one [Peer] per key, each with its own /32 in 10.<net>.0.0/16 and up."""
    lines = []
    for i, pub in enumerate(public_keys):
        a, b = divmod(i, 250)
        lines += ["[Peer]", f"PublicKey = {pub}", f"AllowedIPs = 10.{net + a // 250}.{a % 250}.{b + 1}/32", ""]
    return "\n".join(lines)


def addconf(node: Node, ifname: str, conf: str) -> None:
    path = node.tmpdir / f"addconf-{time.monotonic_ns()}.conf"
    path.write_text(conf)
    try:
        node.run("wg", "addconf", ifname, str(path), timeout=120)
    finally:
        path.unlink(missing_ok=True)


def peer_count(node: Node, ifname: str) -> int:
    out = node.run("wg", "show", ifname, "peers", timeout=60).stdout
    return len([ln for ln in out.splitlines() if ln.strip()])


def cmd_str(cmd: Sequence[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def script_interpreter(script: str) -> str:
    """The Python a console script runs on, with its version: the interpreter's build is a large part of
    ravenvpn's speed (tools/python-env.sh)."""
    try:
        path = shutil.which(script) or script
        with open(path, "rb") as f:
            first = f.readline().decode(errors="replace").strip()
        if not first.startswith("#!"):
            return "unknown (not a script)"
        interpreter = first[2:].split()[0]
        return f"{interpreter} ({tool_version([interpreter, '--version'])})"
    except Exception as exc:  # informational only
        return f"unknown ({exc.__class__.__name__})"


def tool_version(cmd: Sequence[str]) -> str:
    try:
        p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10)
        return (p.stdout or p.stderr).strip().splitlines()[0]
    except Exception as exc:  # informational only
        return f"unknown ({exc.__class__.__name__})"
