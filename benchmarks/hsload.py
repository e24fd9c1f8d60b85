"""Handshake load generator: many simulated WireGuard initiators against one responder daemon.

Run inside the initiator's network namespace (``benchmarks.run`` does it through ``Node.run``)::

    python3 -m benchmarks.hsload CONFIG.json      # prints one JSON object on stdout

Each simulated initiator is a ravenvpn sans-I/O :class:`~ravenvpn.protocol.tunnel.Tunnel` with its own
static key and a single peer (the responder), and its own UDP socket bound to its own source address (the
responder's per-source-IP handshake rate limiter would otherwise throttle everything coming from one IP
once it is under load). The responder was configured beforehand with every initiator's public key.

Closed loop, per initiator: send an initiation; wait for the answer; then send the next one. An initiator
never sends again sooner than ``gap`` seconds after its previous answer, because a responder accepts at
most one initiation per peer per 20 ms (HandshakeInitationRate) and timestamps are whitened to ~16.8 ms.

Answers are classified by the receiver index they echo (it must be the sender index of the initiator's
outstanding initiation):

* ``responses``: a handshake response (type 2). The responder only sends one after authenticating the
  initiation (mac1, DH, decrypting the static key and the timestamp) and deriving a session, so it is a
  completed responder-side handshake. Responses are *not* consumed by the generator (that would cost two
  more DH operations per handshake in Python and make the generator the bottleneck); instead, one extra
  "verifier" initiator performs one full handshake first and checks the response really authenticates.
* ``cookie_replies``: a cookie reply (type 3): the responder is "under load" and wants mac2. The cookie is
  handed to that initiator's Tunnel, so its next initiation carries a valid mac2, as a real peer's would.
* ``timeouts``: no answer within ``timeout`` seconds (1 s; dropped by a rate limiter, a full queue, or
  just slow): the initiator then sends a new initiation. An answer arriving later still counts (as a
  response, and as ``late_responses``): the responder did complete that handshake.

Each Tunnel is driven with its own synthetic monotonic clock that jumps by REKEY_TIMEOUT + 10 ms per
initiation: the core sends at most one initiation per REKEY_TIMEOUT and a peer, which is exactly what a
flood of *different* initiators over time looks like. The wall clock (TAI64N timestamps) stays real.
"""

from __future__ import annotations

import heapq
import json
import resource
import selectors
import socket
import struct
import sys
import time
from collections import deque
from typing import Any

from ravenvpn.protocol import keys as rkeys
from ravenvpn.protocol.constants import REKEY_TIMEOUT
from ravenvpn.protocol.tunnel import Tunnel, parse_network

MSG_INITIATION, MSG_RESPONSE, MSG_COOKIE_REPLY, MSG_TRANSPORT = 1, 2, 3, 4
_U32 = struct.Struct("<I")
# The inner packet that makes a Tunnel want a session: an IPv4 header to a destination in the peer's
# allowed IPs (it is staged, never sent: no session is ever completed on the initiator side).
_TRIGGER_DST = "10.255.255.1"
_TRIGGER = bytes([0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 255, 255, 2]) + socket.inet_aton(_TRIGGER_DST)
CLOCK_STEP = REKEY_TIMEOUT + 0.01


class Initiator:
    """One simulated peer: a Tunnel with one peer (the responder) plus a connected UDP socket."""

    __slots__ = ("tunnel", "sock", "clock", "outstanding", "sent_at", "index")

    def __init__(self, index: int, private_key: bytes, responder_pub: bytes, endpoint: tuple[str, int],
                 source_ip: str) -> None:
        self.index = index
        self.tunnel = Tunnel()
        self.tunnel.private_key = private_key
        peer = self.tunnel.add_peer(responder_pub)
        peer.endpoint = endpoint
        self.tunnel.add_allowed_ip(peer, parse_network(_TRIGGER_DST + "/32"))
        self.clock = 1000.0
        self.outstanding: int | None = None  # sender index of the initiation waiting for an answer
        self.sent_at = 0.0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((source_ip, 0))
        self.sock.connect(endpoint)
        self.sock.setblocking(False)

    def initiation(self) -> bytes | None:
        """A fresh, valid initiation (with mac2 if the Tunnel holds a recent cookie)."""
        self.clock += CLOCK_STEP
        out = self.tunnel.send_packets([_TRIGGER], self.clock)
        for msg, _ in out.datagrams():
            if msg and msg[0] == MSG_INITIATION:
                return msg
        return None

    def take_cookie(self, data: bytes) -> None:
        self.tunnel.receive_datagrams([(data, self.tunnel_endpoint())], self.clock)

    def tunnel_endpoint(self) -> tuple[str, int]:
        peer = next(iter(self.tunnel.peers.values()))
        assert peer.endpoint is not None
        return peer.endpoint


def verify_responder(private_key: bytes, responder_pub: bytes, endpoint: tuple[str, int], source_ip: str,
                     timeout: float = 2.0, attempts: int = 3) -> tuple[bool, str]:
    """One complete handshake whose response is consumed: proves the responder's answers authenticate."""
    ini = Initiator(-1, private_key, responder_pub, endpoint, source_ip)
    try:
        for _ in range(attempts):
            msg = ini.initiation()
            if msg is None:
                return False, "the core produced no initiation"
            ini.sock.send(msg)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                sel = selectors.DefaultSelector()
                sel.register(ini.sock, selectors.EVENT_READ)
                ready = sel.select(max(0.0, deadline - time.monotonic()))
                sel.close()
                if not ready:
                    continue
                data = ini.sock.recv(4096)
                if data[:1] == bytes([MSG_COOKIE_REPLY]):
                    ini.take_cookie(data)
                    break  # retry with mac2
                if data[:1] == bytes([MSG_RESPONSE]):
                    out = ini.tunnel.receive_datagrams([(data, endpoint)], ini.clock)
                    if any(m[:1] == bytes([MSG_TRANSPORT]) for m, _ in out.datagrams()):
                        return True, "ok"
                    return False, "the response did not authenticate (stats: %s)" % dict(ini.tunnel.stats)
        return False, f"no response to {attempts} initiations"
    finally:
        ini.sock.close()


def run_load(cfg: dict[str, Any]) -> dict[str, Any]:
    endpoint = (cfg["responder_ip"], int(cfg["responder_port"]))
    responder_pub = rkeys.b64decode(cfg["responder_public_key"])
    duration = float(cfg["duration"])
    gap = float(cfg.get("gap", 0.022))
    timeout = float(cfg.get("timeout", 1.0))
    sources: list[str] = cfg["source_ips"]

    verified, why = verify_responder(rkeys.b64decode(cfg["verifier_private_key"]), responder_pub, endpoint,
                                     cfg.get("verifier_source_ip", sources[0]))
    result: dict[str, Any] = {"verified": verified, "verify_detail": why}
    if not verified:
        return result

    inis = [Initiator(i, rkeys.b64decode(k), responder_pub, endpoint, sources[i % len(sources)])
            for i, k in enumerate(cfg["initiator_private_keys"])]
    sel = selectors.DefaultSelector()
    for ini in inis:
        sel.register(ini.sock, selectors.EVENT_READ, ini)

    sent = responses = late = cookies = timeouts = stray = 0
    latencies: list[float] = []
    ready: list[tuple[float, int]] = []
    deadlines: deque[tuple[float, int, int]] = deque()
    pending: dict[int, tuple[Initiator, float]] = {}  # sender index of every initiation sent -> (who, when)
    rusage0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    end = start + duration
    # stagger the first initiations over one gap so the run does not open with a single burst
    for ini in inis:
        heapq.heappush(ready, (start + gap * ini.index / len(inis), ini.index))

    def answered(ini: Initiator, retry_at: float) -> None:
        ini.outstanding = None
        heapq.heappush(ready, (retry_at, ini.index))

    now = start
    while now < end:
        # 1. send what is due (bounded, so receiving is never starved)
        burst = 0
        while ready and ready[0][0] <= now and burst < 64:
            _, i = heapq.heappop(ready)
            ini = inis[i]
            msg = ini.initiation()
            if msg is None:
                continue
            try:
                ini.sock.send(msg)
            except (BlockingIOError, ConnectionRefusedError):
                heapq.heappush(ready, (now + gap, i))
                continue
            sent += 1
            burst += 1
            sender = _U32.unpack_from(msg, 4)[0]
            ini.outstanding = sender
            ini.sent_at = now
            pending[sender] = (ini, now)
            deadlines.append((now + timeout, i, sender))
        # 2. give up waiting for unanswered initiations (a late answer still counts, see below)
        while deadlines and deadlines[0][0] <= now:
            _, i, sender = deadlines.popleft()
            ini = inis[i]
            if ini.outstanding == sender:
                timeouts += 1
                answered(ini, now)
        # 3. receive answers
        wake = end
        if ready:
            wake = min(wake, ready[0][0])
        if deadlines:
            wake = min(wake, deadlines[0][0])
        for key, _ in sel.select(min(max(wake - time.monotonic(), 0.0), 0.005)):
            ini = key.data
            for _ in range(64):
                try:
                    data = ini.sock.recv(2048)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                t = time.monotonic()
                mtype = data[0] if data else 0
                if mtype == MSG_RESPONSE and len(data) >= 12:
                    receiver = _U32.unpack_from(data, 8)[0]
                elif mtype == MSG_COOKIE_REPLY and len(data) >= 8:
                    receiver = _U32.unpack_from(data, 4)[0]
                else:
                    stray += 1
                    continue
                owner = pending.get(receiver)
                if owner is None or owner[0] is not ini:
                    stray += 1
                    continue
                del pending[receiver]
                current = ini.outstanding == receiver
                if mtype == MSG_RESPONSE:
                    # a handshake the responder completed, even if it came after we stopped waiting
                    if t < end:
                        responses += 1
                        late += not current
                        latencies.append(t - owner[1])
                    if current:
                        answered(ini, t + gap)
                    continue
                if t < end:
                    cookies += 1
                if current:
                    ini.take_cookie(data)
                    # that initiation was not consumed: the 20 ms per-peer limit is not in play
                    answered(ini, t)
        now = time.monotonic()
    elapsed = now - start
    rusage1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (rusage1.ru_utime - rusage0.ru_utime) + (rusage1.ru_stime - rusage0.ru_stime)
    for ini in inis:
        ini.sock.close()
    sel.close()
    result.update(
        initiators=len(inis),
        source_ips=len(sources),
        seconds=elapsed,
        sent=sent,
        responses=responses,
        late_responses=late,
        cookie_replies=cookies,
        timeouts=timeouts,
        stray=stray,
        sent_per_s=sent / elapsed,
        responses_per_s=responses / elapsed,
        cookie_replies_per_s=cookies / elapsed,
        latency_p50_ms=_pct(latencies, 50) * 1e3 if latencies else None,
        latency_p99_ms=_pct(latencies, 99) * 1e3 if latencies else None,
        generator_cpu_s=cpu,
        generator_busy=cpu / elapsed,  # ~1.0: the generator, not the responder, was the limit
    )
    return result


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, -(-len(ordered) * pct // 100)) - 1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python3 -m benchmarks.hsload CONFIG.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        cfg = json.load(f)
    json.dump(run_load(cfg), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
