"""An impaired underlay without netem: a userspace UDP relay that delays, reorders, duplicates and drops.

This machine's kernel has no ``sch_netem``, so the impairment lives in a middle namespace on the path:
each WireGuard peer's endpoint is the relay's address on its side, and the relay forwards to the real
peer. Plain random loss is better done by the kernel (``iptables -m statistic`` in the relay's
namespace drops before the relay sees a datagram); the relay adds what iptables cannot:

* delay: every datagram waits ``delay`` ± ``jitter`` seconds (uniform). The jitter alone keeps order
  (a datagram never leaves before the one received just before it in the same direction), so reordering
  is only what the next item asks for;
* reordering: with probability ``reorder`` a datagram is held back a further ``hold`` seconds (uniform
  in [hold/4, hold]), so datagrams received after it overtake it;
* duplication: with probability ``duplicate`` a datagram is also sent a second time, with its own delay;
* loss: with probability ``loss`` a datagram is dropped (0 when iptables does it).

It accounts for what it delivered to each side, per direction, the way the receiver's replay window
should see it: WireGuard transport messages (type 4) are keyed by (receiver index, counter); the first
copy delivered counts in ``unique_bytes``, later copies in ``duplicates``/``duplicate_bytes``, and a
copy delivered after a higher counter of the same index in ``reordered`` (``beyond_window`` if more than
8128 behind, which the window must reject). Handshake messages are counted apart (``handshake_bytes``).
A receiver that accepts exactly the unique transport messages has ``rx_bytes`` (``wg show``) between
``unique_bytes`` and ``unique_bytes + handshake_bytes``. The upper bound always holds (duplicates are
never counted); the lower one only while no session is dropped with messages still in flight, which
happens when both sides initiate at once (whitepaper section 6.1's rules, as wireguard-go applies them).

It also counts what it could not send (``send_errors``: loss nobody configured; the kernel's own drops
before the relay are in the namespace's ``UdpRcvbufErrors``), the delay each delivered datagram actually
had (``delay_mean``, ``delay_max``: under load the order-keeping jitter pulls the mean above ``delay``),
and per receiver index (one session, one direction) the first and last delivery and the message count
(``sessions``), which shows when a rekey moved the traffic to a new session.

Run in the middle node::

    python3 -m tools.impair CONFIG.json     # until SIGTERM; the statistics go to CONFIG's "stats" file

and, for the baseline without a VPN, in each end node (see :func:`plain_tunnel`)::

    python3 -m tools.impair plain IFNAME LISTEN_PORT PEER_IP PEER_PORT

CONFIG: ``{"a": {"listen": [ip, port], "peer": [ip, port]}, "b": {...}, "delay": 0.1, "jitter": 0.05,
"reorder": 0.25, "hold": 0.06, "duplicate": 0.05, "loss": 0.0, "seed": 1, "stats": "/path.json"}``:
what arrives at ``a.listen`` goes out of ``b.listen`` to ``b.peer`` and back the other way.
"""
from __future__ import annotations

import heapq
import json
import os
import random
import selectors
import signal
import socket
import struct
import sys
import time
from typing import Any

REPLAY_WINDOW = 8128
_HEADER = struct.Struct("<IIQ")


class Direction:
    """Accounting for the datagrams delivered one way (to the side named ``to``)."""

    def __init__(self, to: str) -> None:
        self.to = to
        self.received = self.delivered = self.dropped = self.held_back = self.duplicated = 0
        self.unique_bytes = self.unique = self.duplicates = self.duplicate_bytes = 0
        self.reordered = self.beyond_window = self.handshake_bytes = self.other = 0
        self.initiations = self.responses = self.cookie_replies = 0
        self.send_errors = 0
        self.delay_sum = self.delay_max = 0.0  # seconds from receipt to delivery, over delivered datagrams
        self.last_release = 0.0
        self._seen: dict[int, set[int]] = {}
        self._highest: dict[int, int] = {}
        # per receiver index (one session's one direction): [first, last] delivery (monotonic s), messages
        self.sessions: dict[int, list[float]] = {}

    def account(self, data: bytes, now: float = 0.0) -> None:
        self.delivered += 1
        if len(data) >= 32 and data[0] == 4:
            _, index, counter = _HEADER.unpack_from(data)
            session = self.sessions.setdefault(index, [now, now, 0])
            session[1] = now
            session[2] += 1
            seen = self._seen.setdefault(index, set())
            if counter in seen:
                self.duplicates += 1
                self.duplicate_bytes += len(data)
                return
            seen.add(counter)
            self.unique += 1
            self.unique_bytes += len(data)
            highest = self._highest.get(index, -1)
            if counter < highest:
                self.reordered += 1
                if highest - counter > REPLAY_WINDOW:
                    self.beyond_window += 1
            else:
                self._highest[index] = counter
        elif data[:1] in (b"\x01", b"\x02", b"\x03"):
            self.handshake_bytes += len(data)
            if data[0] == 1:
                self.initiations += 1
            elif data[0] == 2:
                self.responses += 1
            else:
                self.cookie_replies += 1
        else:
            self.other += 1

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in ("last_release", "delay_sum")}
        out["delay_mean"] = round(self.delay_sum / self.delivered, 4) if self.delivered else None
        out["delay_max"] = round(self.delay_max, 4)
        out["sessions"] = sorted([round(first, 3), round(last, 3), int(n)] for first, last, n in self.sessions.values())
        return out


class Relay:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.get("seed"))
        self.socks: dict[str, socket.socket] = {}
        for side in ("a", "b"):
            host, port = cfg[side]["listen"]
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            s.bind((host, int(port)))
            s.setblocking(False)
            self.socks[side] = s
        # traffic arriving from side X is delivered to the other side
        self.dirs = {"a": Direction("b"), "b": Direction("a")}
        self.queue: list[tuple[float, int, str, bytes, float]] = []  # (due, seq, from, datagram, received)
        self.seq = 0
        self.running = True

    def _schedule(self, at: float, frm: str, data: bytes, received: float) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, frm, data, received))

    def _delay(self) -> float:
        c = self.cfg
        return max(0.0, float(c.get("delay", 0.0)) + self.rng.uniform(-1, 1) * float(c.get("jitter", 0.0)))

    def on_datagram(self, frm: str, data: bytes, now: float) -> None:
        c, d = self.cfg, self.dirs[frm]
        d.received += 1
        if self.rng.random() < float(c.get("loss", 0.0)):
            d.dropped += 1
            return
        copies = 2 if self.rng.random() < float(c.get("duplicate", 0.0)) else 1
        d.duplicated += copies - 1
        for copy in range(copies):
            at = max(now + self._delay(), d.last_release)  # jitter keeps order ...
            if copy == 0:
                d.last_release = at
            if self.rng.random() < float(c.get("reorder", 0.0)):  # ... hold-backs do not
                hold = float(c.get("hold", 0.05))
                at += self.rng.uniform(hold / 4, hold)
                d.held_back += 1
            self._schedule(at, frm, data, now)

    def release(self, now: float) -> None:
        while self.queue and self.queue[0][0] <= now:
            _, _, frm, data, received = heapq.heappop(self.queue)
            to = "b" if frm == "a" else "a"
            peer = tuple(self.cfg[to]["peer"])
            try:
                self.socks[to].sendto(data, (peer[0], int(peer[1])))
            except OSError:
                self.dirs[frm].send_errors += 1  # a full buffer or an unreachable peer: loss the config did not ask for
                continue
            d = self.dirs[frm]
            d.account(data, now)
            d.delay_sum += now - received
            d.delay_max = max(d.delay_max, now - received)

    def write_stats(self) -> None:
        path = self.cfg.get("stats")
        if path:
            tmp = f"{path}.tmp"
            with open(tmp, "w") as f:
                json.dump({"to_b": self.dirs["a"].as_dict(), "to_a": self.dirs["b"].as_dict(),
                           "queued": len(self.queue)}, f)
            os.replace(tmp, path)

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        for side, s in self.socks.items():
            sel.register(s, selectors.EVENT_READ, side)
        last_stats = 0.0
        while self.running:
            now = time.monotonic()
            timeout = 0.05 if not self.queue else max(0.0, min(0.05, self.queue[0][0] - now))
            for key, _ in sel.select(timeout):
                for _ in range(256):
                    try:
                        data = key.fileobj.recv(65535)  # type: ignore[union-attr]
                    except (BlockingIOError, ConnectionRefusedError):
                        break
                    self.on_datagram(key.data, data, time.monotonic())
            now = time.monotonic()
            self.release(now)
            if now - last_stats > 0.5:
                self.write_stats()
                last_stats = now
        self.write_stats()


# A WireGuard transport message's overhead: 16-byte header (type 4, receiver index, counter) + 16-byte tag.
# The plain tunnel pads its datagrams by as much (type byte 0, so the relay counts them as "other").
PLAIN_PAD = bytes(16)


def plain_tunnel(ifname: str, listen_port: int, peer: tuple[str, int], mtu: int = 1420,
                 running: list[bool] | None = None) -> None:
    """A TUN <-> UDP tunnel without crypto, handshakes, timers or offloads: the baseline of the impaired
    underlay (what any TCP gets through tools/impair.py with WireGuard's datagram sizes, minus the VPN).

    Each packet read from TUN ``ifname`` goes to ``peer`` (ip, port) as one datagram, padded to a transport
    message's size; each datagram received on ``listen_port`` is written to the TUN. The caller adds
    addresses and sets the link up. Runs until ``running[0]`` turns false (a signal handler's job). A test
    and benchmark tool, never for real traffic: nothing is encrypted.

    Raises:
        OSError: the TUN or the socket cannot be made (no /dev/net/tun, port busy).
    """
    from ravenvpn.device.tun import TunDevice

    running = running if running is not None else [True]
    tun = TunDevice(ifname, mtu=mtu, offload_mode="0")
    sock = socket.socket(socket.AF_INET6 if ":" in peer[0] else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("", listen_port))
    sock.setblocking(False)
    dest = (peer[0], int(peer[1]))
    sel = selectors.DefaultSelector()
    sel.register(tun.fileno(), selectors.EVENT_READ, "tun")
    sel.register(sock, selectors.EVENT_READ, "udp")
    print("tunnelling", flush=True)
    pad = len(PLAIN_PAD)
    while running[0]:
        for key, _ in sel.select(0.2):
            for _ in range(64):
                try:
                    if key.data == "tun":
                        packet = os.read(tun.fd, 65535)
                        sock.sendto(PLAIN_PAD + packet + PLAIN_PAD, dest)
                    else:
                        data = sock.recv(65535)
                        if len(data) > 2 * pad:
                            os.write(tun.fd, data[pad:-pad])
                except (BlockingIOError, ConnectionRefusedError):
                    break
                except OSError:
                    continue  # a full buffer or a bad packet: loss, as a VPN would count it
    sock.close()
    tun.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plain"] and len(argv) == 5:
        running = [True]

        def halt(_sig: int, _frame: Any) -> None:
            running[0] = False

        signal.signal(signal.SIGTERM, halt)
        signal.signal(signal.SIGINT, halt)
        plain_tunnel(argv[1], int(argv[2]), (argv[3], int(argv[4])), running=running)
        return 0
    if len(argv) != 1:
        print("usage: python3 -m tools.impair CONFIG.json\n"
              "       python3 -m tools.impair plain IFNAME LISTEN_PORT PEER_IP PEER_PORT", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        relay = Relay(json.load(f))

    def stop(_sig: int, _frame: Any) -> None:
        relay.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("relaying", flush=True)
    relay.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
