"""Hostile UDP senders for the reliability scenarios: datagram fuzzing and handshake floods.

Run inside a node (``Node.popen``/``Node.run``) with a JSON config file; prints one JSON object (what was
sent, how fast, and what came back) on stdout when done::

    python3 -m tools.flood CONFIG.json

``mode: "garbage"`` (live fuzz): ``count`` datagrams at ``dest:port``, each a random mutation of a real
captured message (``corpus``: kind -> hex messages, e.g. from a tcpdump of the tunnel's handshake and
traffic) or plain random bytes. Mutations: truncation, extension, type-byte flip, reserved bytes set, bit
flips, slices overwritten, the receiver index of a captured message kept with a garbage body and counter
(``valid indices with garbage``), splices; sources rotate over ``sources`` (addresses present in the
node) and random ports. ``rate`` datagrams/s (0: as fast as the socket takes them).

``mode: "initiations"`` (handshake flood): handshake initiations with a *valid mac1* for the responder's
``responder_public_key``, the rest random: what an attacker who knows a gateway's public key sends to
make it do Diffie-Hellman work (whitepaper section 5.3: the responder cannot tell them from real ones
before a DH, so under load it answers with cookie replies instead). Computing mac1 needs no DH (one
keyed BLAKE2s), so one process sends thousands per second. ``rate`` initiations/s for ``seconds`` from
every address in ``sources`` in turn (many source addresses: a per-source rate limit does not stop it);
``fresh_ports: true`` sends each from a new socket, so from an endpoint the victim never saw (as spoofed
sources would; those answers are not counted). Answers are counted by type (2 = response, 3 = cookie
reply) and are never acted on.

``python3 -m tools.flood core-cost`` (no config, no network) prints what refusing one such initiation
costs ravenvpn's sans-I/O core in-process, under load and not (see :func:`core_cost`).

Everything is sent only to ``dest``, which the caller puts inside its own namespaces.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import select
import socket
import struct
import sys
import time
from typing import Any

MAC1_LABEL = b"mac1----"


def mac1_key(responder_public: bytes) -> bytes:
    return hashlib.blake2s(MAC1_LABEL + responder_public).digest()


def forged_initiation(key: bytes, rng: random.Random) -> bytes:
    """148 bytes: type 1, random sender index, ephemeral, static and timestamp; valid mac1; zero mac2."""
    body = b"\x01\x00\x00\x00" + rng.randbytes(112)
    return body + hashlib.blake2s(body, digest_size=16, key=key).digest() + bytes(16)


def mutate(msg: bytes, corpus: list[bytes], rng: random.Random) -> bytes:
    """One random mutation chain of ``msg`` (see the module docstring)."""
    m = bytearray(msg)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(9)
        if op == 0 and m:
            del m[rng.randrange(len(m) + 1):]
        elif op == 1:
            m += rng.randbytes(rng.randint(1, 64))
        elif op == 2 and m:
            m[0] = rng.choice((0, 1, 2, 3, 4, 5, 255, rng.randrange(256)))
        elif op == 3 and len(m) >= 4:
            m[rng.randint(1, 3)] = rng.randint(1, 255)
        elif op == 4 and m:
            m[rng.randrange(len(m))] ^= 1 << rng.randrange(8)
        elif op == 5 and m:
            at = rng.randrange(len(m))
            m[at:at + 16] = rng.randbytes(16)
        elif op == 6 and len(m) >= 16:
            # a live receiver index with a garbage counter and body: costs the receiver an AEAD attempt
            m[8:] = struct.pack("<Q", rng.getrandbits(64)) + rng.randbytes(max(16, len(m) - 16))
        elif op == 7:
            other = rng.choice(corpus)
            at = rng.randrange(len(m) + 1)
            m = m[:at] + bytearray(other[at:])
        elif op == 8:
            # the same message again, unchanged: a replay
            return bytes(msg)
    return bytes(m)


def _sockets(sources: list[str], per_source: int = 1, rcvbuf: int = 1 << 20) -> list[socket.socket]:
    socks = []
    for src in sources:
        for _ in range(per_source):
            s = socket.socket(socket.AF_INET6 if ":" in src else socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.bind((src, 0))
            s.setblocking(False)
            socks.append(s)
    return socks


def _drain(socks: list[socket.socket], counts: dict[str, int]) -> None:
    ready, _, _ = select.select(socks, [], [], 0)
    for s in ready:
        for _ in range(256):
            try:
                data = s.recv(2048)
            except (BlockingIOError, ConnectionRefusedError):
                break
            counts[{2: "responses", 3: "cookie_replies"}.get(data[0] if data else 0, "other_replies")] += 1


def _paced(total: int | None, seconds: float | None, rate: float, send_one: Any, socks: list[socket.socket],
           counts: dict[str, int], slot: float = 0.001) -> tuple[int, float, int]:
    """Call ``send_one(i)`` ``total`` times (or for ``seconds``) at ``rate``/s (0 = flat out), in ``slot``-second
    slots: each slot's share leaves back to back (a longer slot makes a burstier flood at the same rate)."""
    sent = errors = 0
    start = time.monotonic()
    while True:
        now = time.monotonic()
        elapsed = now - start
        if (total is not None and sent >= total) or (seconds is not None and elapsed >= seconds):
            break
        due = (int(elapsed * rate) + 1 - sent) if rate else 256
        if total is not None:
            due = min(due, total - sent)
        for _ in range(max(0, due)):
            try:
                send_one(sent)
            except (BlockingIOError, ConnectionRefusedError, OSError):
                errors += 1
            sent += 1
        _drain(socks, counts)
        if rate and due <= 0:
            time.sleep(slot)
    return sent, time.monotonic() - start, errors


def run_garbage(cfg: dict[str, Any]) -> dict[str, Any]:
    rng = random.Random(cfg.get("seed"))
    dest = (cfg["dest"], int(cfg["port"]))
    corpus = [bytes.fromhex(h) for msgs in cfg["corpus"].values() for h in msgs]
    if not corpus:
        raise SystemExit("flood: the garbage mode needs a non-empty corpus")
    socks = _sockets(cfg["sources"], per_source=int(cfg.get("ports_per_source", 4)))
    counts = {"responses": 0, "cookie_replies": 0, "other_replies": 0}
    kinds: dict[str, int] = {"mutated": 0, "random": 0}

    def send_one(i: int) -> None:
        if rng.random() < 0.1:
            data = rng.randbytes(rng.choice((0, 1, 4, 31, 32, 33, 64, 92, 148, rng.randrange(1500))))
            kinds["random"] += 1
        else:
            data = mutate(rng.choice(corpus), corpus, rng)
            kinds["mutated"] += 1
        socks[i % len(socks)].sendto(data, dest)

    sent, elapsed, errors = _paced(int(cfg["count"]), None, float(cfg.get("rate", 0)), send_one, socks, counts)
    _drain(socks, counts)
    for s in socks:
        s.close()
    return {"mode": "garbage", "sent": sent, "seconds": elapsed, "rate": sent / elapsed if elapsed else 0.0,
            "send_errors": errors, **kinds, **counts}


def run_initiations(cfg: dict[str, Any]) -> dict[str, Any]:
    rng = random.Random(cfg.get("seed"))
    dest = (cfg["dest"], int(cfg["port"]))
    key = mac1_key(base64.b64decode(cfg["responder_public_key"]))
    socks = _sockets(cfg["sources"])
    counts = {"responses": 0, "cookie_replies": 0, "other_replies": 0}
    pool = [forged_initiation(key, rng) for _ in range(4096)]  # distinct messages, reused in rotation
    fresh = bool(cfg.get("fresh_ports"))

    def send_one(i: int) -> None:
        if fresh:
            # A new source port every time (the kernel picks it), as from spoofed sources: no endpoint
            # the victim has seen before. Its answers are not read (the socket is gone).
            src = cfg["sources"][i % len(cfg["sources"])]
            with socket.socket(socket.AF_INET6 if ":" in src else socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((src, 0))
                s.sendto(pool[i % len(pool)], dest)
            return
        socks[i % len(socks)].sendto(pool[i % len(pool)], dest)

    sent, elapsed, errors = _paced(None, float(cfg["seconds"]), float(cfg["rate"]), send_one, socks, counts,
                                   slot=float(cfg.get("slot", 0.001)))
    time.sleep(0.2)
    _drain(socks, counts)
    for s in socks:
        s.close()
    return {"mode": "initiations", "sent": sent, "seconds": elapsed, "rate": sent / elapsed if elapsed else 0.0,
            "send_errors": errors, "sources": len(cfg["sources"]), **counts}


def core_cost(batches: int = 200, per_batch: int = 100, sources: int = 64, repeat: int = 5) -> dict[str, float]:
    """What refusing one forged initiation costs ravenvpn's sans-I/O core, in this process: microseconds
    per initiation of ``Tunnel.receive_datagrams`` on batches of ``per_batch`` of them (best of ``repeat``),
    under load (cookie replies) and, for comparison, not under load (a Diffie-Hellman each). No I/O: the
    device's receive and send come on top (benchmarks.reliability's flood scenario reads the daemon's CPU)."""
    from ravenvpn.protocol.tunnel import Tunnel

    def victim(under_load: bool) -> Tunnel:
        t = Tunnel()
        t.private_key = os.urandom(32)
        t.add_peer(os.urandom(32))
        # under load from the first batch on, or never (by batch size nor by rate)
        t.load_threshold = 1 if under_load else 1 << 30
        t.load_rate = 1.0 if under_load else float(1 << 30)
        return t

    def timed(tunnel: Tunnel, rounds: int, count: int) -> float:
        assert tunnel.public_key is not None
        key = mac1_key(tunnel.public_key)
        rng = random.Random(7)
        pool = [forged_initiation(key, rng) for _ in range(4096)]
        ends = [(f"198.19.{1 + i // 200}.{1 + i % 200}", 40000 + i) for i in range(sources)]
        work = [[(pool[(b * per_batch + j) % len(pool)], ends[(b * per_batch + j) % sources])
                 for j in range(per_batch)] for b in range(count)]
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for batch in work:
                tunnel.receive_datagrams(batch, 100.0)
            best = min(best, time.perf_counter() - start)
        return best / (count * per_batch) * 1e6

    loaded, idle = victim(True), victim(False)
    under = timed(loaded, repeat, batches)
    dh = timed(idle, 2, max(1, batches // 20))
    return {"under_load_us": round(under, 2), "not_under_load_us": round(dh, 1),
            "cookie_replies": loaded.stats["tx_cookie_reply"], "dh_refused": idle.stats["rx_bad_handshake"]}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["core-cost"]:
        json.dump(core_cost(), sys.stdout)
        sys.stdout.write("\n")
        return 0
    if len(argv) != 1:
        print("usage: python3 -m tools.flood CONFIG.json | core-cost", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        cfg = json.load(f)
    runner = {"garbage": run_garbage, "initiations": run_initiations}.get(cfg.get("mode", ""))
    if runner is None:
        print(f"flood: unknown mode {cfg.get('mode')!r} (garbage | initiations)", file=sys.stderr)
        return 2
    json.dump(runner(cfg), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
