"""Scale of control operations: UAPI set and `wg show dump` with many peers, and the data path meanwhile.

    python3 -m benchmarks.control_scale [--peers 1000,10000,50000] [--impls ravenvpn,wireguard-go]
                                        [--json PATH]

Per implementation and peer count N (issue 14, kind 5; field case F10): two fresh nodes joined by a
veth; A runs the implementation with one live peer (wireguard-go in B) and pings it every 10 ms
throughout. Then one UAPI `set` adds N more peers (one /32 and an endpoint each, the shape `wg setconf`
sends), and `wg show wg0 dump` runs once. Reported: the set and dump times (seconds, wall clock around
the client), and the largest gap between ping replies while each ran (seconds; 0.01 is the ping interval
itself, so a gap near it means the data path never stopped).

Target (ravenvpn, 10k peers): dump < 0.3 s, no ping gap > 50 ms. Figures are measurements to print;
tests/test_uapi_scale.py asserts only generous bounds.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from typing import Any

from tools.links import veth
from tools.node import Node
from tools.wg import WgPeer, keypair, own_script, start_wg

PREFIX = "rvb"
PING_INTERVAL = 0.01
IMPL_CMDS = {"ravenvpn": [own_script("ravenvpn-wg")], "wireguard-go": ["wireguard-go"]}
DAEMON_ENV = {"LOG_LEVEL": "error", "RAVENVPN_BUSY_POLL_US": "0"}

# Runs inside node A (its mount namespace holds the UAPI socket): sends stdin as one request, prints
# the seconds until the reply.
_UAPI_CLIENT = """\
import socket, sys, time
data = sys.stdin.buffer.read()
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(600)
start = time.monotonic()
s.sendall(data)
reply = b""
while not reply.endswith(b"\\n\\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    reply += chunk
print(time.monotonic() - start, reply.decode().strip())
"""


def set_request(n: int) -> bytes:
    """A UAPI set adding `n` peers, one /32 (10.64.0.0/10) and an endpoint each."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    out = ["set=1"]
    for i in range(n):
        pub = X25519PrivateKey.generate().public_key().public_bytes_raw().hex()
        out += [f"public_key={pub}", "replace_allowed_ips=true",
                f"allowed_ip=10.{64 + i // 65536}.{(i // 256) % 256}.{i % 256}/32",
                f"endpoint=198.51.100.{1 + i % 250}:{20000 + i % 40000}"]
    return ("\n".join(out) + "\n\n").encode()


def _reply_times(ping_output: str) -> list[float]:
    return [float(m.group(1)) for m in re.finditer(r"^\[(\d+\.\d+)\].*bytes from", ping_output, re.M)]


def _max_gap(times: list[float], start: float, end: float) -> float:
    """Largest gap between replies overlapping [start, end] (wall-clock seconds); silence up to the
    end of the window counts too (a data path that never comes back shows as the whole window)."""
    before = [t for t in times if t < start]
    inside = [t for t in times if start <= t <= end]
    after = [t for t in times if t > end]
    marks = before[-1:] + inside + (after[:1] or [end])
    if len(marks) < 2:
        return end - start       # no reply at all around the operation
    return max(b - a for a, b in zip(marks, marks[1:]))


def measure(impl: str, n: int, request: bytes | None = None, prefix: str = PREFIX) -> dict[str, Any]:
    """Set `n` peers into `impl` and dump them, with a ping through the live peer meanwhile.
    `prefix`: of the namespaces' names (tests use theirs, so their clean-up covers these)."""
    request = request if request is not None else set_request(n)
    with Node("ca", prefix=prefix) as a, Node("cb", prefix=prefix) as b:
        veth(a, b, "198.51.100.1/24", "198.51.100.2/24")
        ka, kb = keypair(), keypair()
        env = {**os.environ, **DAEMON_ENV}
        wa = start_wg(a, IMPL_CMDS[impl], "wg0", ka[0], 51820, ["10.9.0.1/24"],
                      [WgPeer(kb[1], ["10.9.0.2/32"], "198.51.100.2:51820")], env=env)
        start_wg(b, IMPL_CMDS["wireguard-go"], "wg0", kb[0], 51820, ["10.9.0.2/24"],
                 [WgPeer(ka[1], ["10.9.0.1/32"], "198.51.100.1:51820")], env=env)
        a.run("ping", "-c", "2", "-W", "2", "10.9.0.2", check=False)
        # Into a file: a pipe nobody reads until the end fills after ~850 replies and stops the ping.
        ping_log = tempfile.TemporaryFile("w+")
        pinger = a.popen("ping", "-D", "-n", "-i", str(PING_INTERVAL), "-W", "5", "10.9.0.2", stdout=ping_log)
        try:
            time.sleep(1.0)
            s0 = time.time()
            res = a.run(sys.executable, "-c", _UAPI_CLIENT, wa.socket_path, input=request.decode(), timeout=900)
            s1 = time.time()
            set_seconds = float(res.stdout.split()[0])
            set_reply = res.stdout.split(None, 1)[1].strip() if len(res.stdout.split()) > 1 else ""
            time.sleep(1.0)
            d0 = time.time()
            dump = a.run("wg", "show", "wg0", "dump", timeout=300).stdout
            d1 = time.time()
            time.sleep(1.0)
        finally:
            pinger.terminate()
            pinger.wait(timeout=10)
            ping_log.seek(0)
            out = ping_log.read()
            ping_log.close()
        times = _reply_times(out)
        return {
            "impl": impl, "peers": n, "set_reply": set_reply,
            "set_s": round(set_seconds, 3),
            "dump_s": round(d1 - d0, 3),
            "dump_lines": len(dump.splitlines()),
            "ping_gap_during_set_s": round(_max_gap(times, s0, s1), 3),
            "ping_gap_during_dump_s": round(_max_gap(times, d0, d1), 3),
            "ping_replies": len(times),
        }


def format_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'implementation':<14} {'peers':>7} {'set, s':>8} {'dump, s':>8} {'max ping gap during set, s':>27} " \
           f"{'during dump, s':>15}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['impl']:<14} {r['peers']:>7,} {r['set_s']:>8.3f} {r['dump_s']:>8.3f} "
                     f"{r['ping_gap_during_set_s']:>27.3f} {r['ping_gap_during_dump_s']:>15.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.control_scale",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", default="1000,10000,50000", help="comma-separated peer counts")
    parser.add_argument("--impls", default="ravenvpn,wireguard-go", help="comma-separated implementations")
    parser.add_argument("--json", help="also write the rows as JSON to this path")
    args = parser.parse_args(argv)
    try:
        counts = [int(x) for x in args.peers.split(",") if x]
        impls = [x for x in args.impls.split(",") if x]
        unknown = [i for i in impls if i not in IMPL_CMDS]
        if unknown or not counts or min(counts) < 0:
            raise ValueError(f"unknown implementation {unknown[0]!r}" if unknown else "bad --peers")
    except ValueError as exc:
        print(f"control_scale: {exc}", file=sys.stderr)
        return 2
    rows = []
    for n in counts:
        request = set_request(n)        # the same peers for every implementation
        for impl in impls:
            row = measure(impl, n, request)
            rows.append(row)
            print(f"{impl} {n}: {row}", file=sys.stderr, flush=True)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
