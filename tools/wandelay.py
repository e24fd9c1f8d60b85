"""A userspace WAN delay: forwards Ethernet frames between two interfaces, each after a fixed delay.

This kernel has no netem, so the lab (tools/lab.py, ``Lab(wan_delay=...)``) splices this between a
WAN uplink and the "internet" bridge: ``python3 -m tools.wandelay IF_A IF_B DELAY_MS``, run inside the
internet namespace. Frames are read and written with ``AF_PACKET`` sockets and ``PACKET_VNET_HDR``, so
GSO super-packets and partial checksums pass through untouched (the kernel finishes them on output).
It costs CPU like any userspace forwarder (benchmarks report it); one thread, one FIFO per direction
(a constant delay keeps the order). Stops on SIGTERM/SIGINT.
"""
from __future__ import annotations

import collections
import select
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_OUTGOING = 4
MAX_FRAME = 65536 + 64


def _open(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind((ifname, ETH_P_ALL))
    sock.setblocking(False)
    return sock


def run(if_a: str, if_b: str, delay: float) -> None:
    """Forward frames a->b and b->a, each ``delay`` seconds after it arrived, until a signal."""
    stop = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    a, b = _open(if_a), _open(if_b)
    out_of = {a.fileno(): b, b.fileno(): a}
    queues: dict[int, collections.deque[tuple[float, bytes]]] = {a.fileno(): collections.deque(),
                                                                 b.fileno(): collections.deque()}
    poller = select.poll()
    for s in (a, b):
        poller.register(s, select.POLLIN)
    print("ready", flush=True)
    while not stop:
        now = time.monotonic()
        due = [q[0][0] for q in queues.values() if q]
        timeout_ms = 100 if not due else max(0, int((min(due) - now) * 1000 + 0.999))
        try:
            events = poller.poll(timeout_ms)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd, _mask in events:
            sock = a if fd == a.fileno() else b
            for _ in range(256):
                try:
                    data, addr = sock.recvfrom(MAX_FRAME)
                except (BlockingIOError, InterruptedError):
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue        # our own transmissions on this interface
                queues[fd].append((now + delay, data))
        now = time.monotonic()
        for fd, q in queues.items():
            out = out_of[fd]
            while q and q[0][0] <= now:
                _t, data = q.popleft()
                try:
                    out.send(data)
                except OSError:
                    pass            # a full queue or a frame the link refuses: the WAN drops it


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print("usage: python3 -m tools.wandelay IF_A IF_B DELAY_MS", file=sys.stderr)
        raise SystemExit(2)
    run(sys.argv[1], sys.argv[2], float(sys.argv[3]) / 1000.0)
