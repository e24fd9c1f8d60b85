"""The pump's orchestration, without root: two Pumps over in-memory TUN and UDP doubles
(tests/device_doubles.py) carry packets through a real handshake and real encryption."""
from __future__ import annotations

import threading
from typing import Iterator

import pytest

from ravenvpn.device.pump import Pump
from tests.device_doubles import MemoryBind, MemoryTun, bind_pair
from tests.protocol_harness import Net, icmp


class Running:
    """One side: Tunnel + MemoryTun + MemoryBind + Pump, run in a thread."""

    def __init__(self, tunnel, bind: MemoryBind, name: str) -> None:
        self.tun = MemoryTun(name)
        self.bind = bind
        self.lock = threading.RLock()
        self.pump = Pump(tunnel, self.tun, bind, None, self.lock)  # type: ignore[arg-type]
        self.reason: str | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.reason = self.pump.run()

    def close(self) -> None:
        self.pump.stop("test over")
        self.thread.join(5)
        self.pump.close()
        self.tun.dispose()
        self.bind.close()


@pytest.fixture
def pair() -> Iterator[tuple[Net, Running, Running]]:
    net = Net()     # two configured Tunnels (keys, peers, endpoints, allowed IPs); no traffic yet
    bind_a, bind_b = bind_pair(net.a.underlay, net.b.underlay)
    a, b = Running(net.a.tunnel, bind_a, "mema"), Running(net.b.tunnel, bind_b, "memb")
    a.thread.start()
    b.thread.start()
    try:
        yield net, a, b
    finally:
        a.close()
        b.close()


def test_two_pumps_carry_packets_both_ways_through_a_handshake(pair) -> None:
    net, a, b = pair
    ping = icmp(net.a.inner, net.b.inner, b"hello")
    a.tun.inject(ping)
    assert b.tun.read() == ping                     # staged, handshake, then delivered
    pong = icmp(net.b.inner, net.a.inner, b"world")
    b.tun.inject(pong)
    assert a.tun.read() == pong
    batch = [icmp(net.a.inner, net.b.inner, b"%04d" % i * 300) for i in range(50)]
    for packet in batch:
        a.tun.inject(packet)
    assert [b.tun.read() for _ in batch] == batch    # in order, as bursts
    assert set(a.bind.sent) == {net.b.underlay} and set(b.bind.sent) == {net.a.underlay}
    with a.lock:
        assert net.pa.current is not None and net.pa.tx_bytes > 50 * 1200


def test_stop_ends_the_loop_with_its_reason_and_a_core_error_does_not(pair) -> None:
    net, a, b = pair
    boom = RuntimeError("a bug in the core")

    def broken(*args: object) -> None:
        raise boom

    with a.lock:
        original, net.a.tunnel.send_packets = net.a.tunnel.send_packets, broken  # type: ignore[method-assign]
    a.tun.inject(icmp(net.a.inner, net.b.inner))
    with pytest.raises(TimeoutError):
        b.tun.read(timeout=0.5)
    assert a.pump.core_errors == 1 and a.thread.is_alive()   # counted, logged, loop goes on
    with a.lock:
        net.a.tunnel.send_packets = original  # type: ignore[method-assign]
    a.tun.inject(icmp(net.a.inner, net.b.inner, b"after"))
    assert b.tun.read().endswith(b"after")
    a.pump.stop("asked to")
    a.pump.stop("asked again")
    a.thread.join(5)
    assert not a.thread.is_alive() and a.reason == "asked to"


def test_the_pump_drives_the_timers(pair) -> None:
    """Nothing is sent, yet a persistent keepalive switched on (and a wake(), as config_changed()
    does) brings up a session: the pump's ticks fire the tunnel's timers."""
    net, a, b = pair
    with a.lock:
        net.pa.persistent_keepalive_interval = 25
    a.pump.wake()
    # the keepalive needs a session: a handshake initiation leaves first, then the keepalive
    for _ in range(50):
        with b.lock:
            if net.pb.current is not None and net.pb.rx_bytes > 148:
                break
        threading.Event().wait(0.05)
    with b.lock:
        assert net.pb.current is not None and net.pb.rx_bytes > 148
