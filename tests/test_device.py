"""`Device` embedded in a process, as a library user runs it: no CLI, no fork, no signal handlers.

Two devices in one process and namespace, each with its own UAPI socket path, configured through
`configure()`, handshake over loopback with the pump in the thread each Device owns; a third
without a UAPI socket. The script runs in a fresh namespace (tests/embedded_devices.py).
Then, without root, the lifecycle over the in-memory TUN/UDP doubles (tests/device_doubles.py).
"""
from __future__ import annotations

import errno
import ipaddress
import json
import secrets
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from ravenvpn.device.device import Device
from ravenvpn.protocol import keys
from tests.device_doubles import MemoryTun, bind_pair
from tests.protocol_harness import icmp

ROOT = Path(__file__).resolve().parents[1]


def test_devices_embedded_in_one_process(node_factory) -> None:
    node = node_factory("e")
    names = ["rve" + secrets.token_hex(3) for _ in range(3)]
    socket_dir = node.tmpdir / "uapi"
    socket_dir.mkdir()
    res = node.run(sys.executable, str(ROOT / "tests" / "embedded_devices.py"), *names, str(socket_dir),
                   env={"PYTHONPATH": str(ROOT), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, timeout=60)
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["handshake"] and report["running"] == [True, True]
    assert report["sockets_exist"] == [True, True]
    lines = report["uapi_b"].splitlines()
    assert f"listen_port={report['ports'][1]}" in lines and "errno=0" in lines
    handshake = [line for line in lines if line.startswith("last_handshake_time_sec=")]
    assert "allowed_ip=10.77.0.1/32" in lines and handshake and handshake[0] != "last_handshake_time_sec=0"
    assert report["c_running"] and report["c_reason"] == "asked"
    assert report["after_close"] == {"running": [False, False], "reasons": ["closed", "closed"],
                                     "sockets_exist": [False, False]}
    assert report["restart"] == "device is closed"
    for name in names:
        assert not node.has_link(name)
        assert not node.exists(f"/run/wireguard/{name}.sock")   # custom paths, or none at all


# ---- without root: Devices over the in-memory doubles of tests/device_doubles.py ----------------

@pytest.fixture
def pair() -> Iterator[tuple[Device, Device, MemoryTun, MemoryTun]]:
    """Two Devices over in-memory TUNs and a connected pair of binds; closed whatever happens."""
    bind_a, bind_b = bind_pair(("192.0.2.1", 51820), ("192.0.2.2", 51820))
    tun_a, tun_b = MemoryTun("mema"), MemoryTun("memb")
    a = Device("mema", uapi=False, tun=tun_a, udp=bind_a)  # type: ignore[arg-type]
    b = Device("memb", uapi=False, tun=tun_b, udp=bind_b)  # type: ignore[arg-type]
    try:
        yield a, b, tun_a, tun_b
    finally:
        a.close()
        b.close()
        tun_a.dispose()
        tun_b.dispose()


def _configure_pair(a: Device, b: Device) -> None:
    key_a, key_b = keys.generate_private(), keys.generate_private()
    with a.configure() as tunnel:
        tunnel.private_key = key_a
        peer = tunnel.add_peer(keys.public_from_private(key_b))
        peer.endpoint = ("192.0.2.2", 51820)
        tunnel.add_allowed_ip(peer, ipaddress.ip_network("10.9.0.2/32"))
    with b.configure() as tunnel:
        tunnel.private_key = key_b
        peer = tunnel.add_peer(keys.public_from_private(key_a))
        peer.endpoint = ("192.0.2.1", 51820)
        tunnel.add_allowed_ip(peer, ipaddress.ip_network("10.9.0.1/32"))


def test_device_lifecycle_and_configure_without_root(pair) -> None:
    a, b, tun_a, tun_b = pair
    _configure_pair(a, b)           # before start: configure() works on the idle device
    with a, b:
        assert a.running and b.running and a.stop_reason is None
        with pytest.raises(RuntimeError, match="already started"):
            a.start()
        ping = icmp("10.9.0.1", "10.9.0.2", b"through two devices")
        tun_a.inject(ping)
        assert tun_b.read() == ping
        with b.configure() as tunnel:
            assert next(iter(tunnel.peers.values())).last_handshake_time_ns
    assert not a.running and a.stop_reason == "closed" and a.wait(0) == "closed"
    a.close()                       # idempotent
    with pytest.raises(OSError) as info:
        a.set_listen_port(4600)
    assert info.value.errno == errno.ENODEV
    for verb in (a.start, a.open, a.run):
        with pytest.raises(RuntimeError, match="closed"):
            verb()


def test_configure_keeps_changes_and_wakes_the_pump_when_the_block_raises(pair) -> None:
    a = pair[0]
    a.start()
    woken: list[bool] = []
    original = a._pump.wake
    a._pump.wake = lambda tick=True: (woken.append(tick), original(tick))  # type: ignore[method-assign]
    public = keys.public_from_private(keys.generate_private())
    with pytest.raises(ValueError, match="half way"):
        with a.configure() as tunnel:
            tunnel.add_peer(public)
            raise ValueError("half way")
    assert woken == [True]
    with a.configure() as tunnel:
        assert public in tunnel.peers


def test_run_in_the_callers_thread_returns_the_stop_reason(pair) -> None:
    a = pair[0]
    with pytest.raises(RuntimeError, match="not open"):
        a.run()
    a.open()
    with pytest.raises(RuntimeError, match="already open"):
        a.open()
    threading.Timer(0.2, a.stop, args=("enough",)).start()
    assert a.run() == "enough" and a.stop_reason == "enough" and not a.running
