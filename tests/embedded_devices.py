"""Run inside a test namespace by tests/test_device.py: two `Device`s embedded in one process.

Usage: python3 embedded_devices.py NAME_A NAME_B NAME_C SOCKET_DIR. Prints one JSON object with
what it observed; the test asserts on it and on what is left in the namespace afterwards.
"""
from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import time

from ravenvpn.device.device import Device
from ravenvpn.protocol import keys


def uapi_get(path: str) -> str:
    """The reply to one `get=1` on the UAPI socket at `path` (we half-close: the server answers, then ends)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(b"get=1\n\n")
        s.shutdown(socket.SHUT_WR)
        with s.makefile("rb") as reply:
            return reply.read().decode()


def main() -> None:
    name_a, name_b, name_c, socket_dir = sys.argv[1:5]
    report: dict[str, object] = {}
    a = Device(name_a, uapi_path=os.path.join(socket_dir, "a.sock"))
    b = Device(name_b, uapi_path=os.path.join(socket_dir, "b.sock"))
    c = Device(name_c, uapi=False)
    key_a, key_b = keys.generate_private(), keys.generate_private()
    with a, b:          # start(), and close() on the way out
        a.set_listen_port(0)
        b.set_listen_port(0)
        with a.configure() as tunnel:
            tunnel.private_key = key_a
            peer = tunnel.add_peer(keys.public_from_private(key_b))
            peer.endpoint = ("127.0.0.1", b.listen_port)
            tunnel.add_allowed_ip(peer, ipaddress.ip_network("10.77.0.2/32"))
            peer.persistent_keepalive_interval = 1      # brings the session up without traffic
        with b.configure() as tunnel:
            tunnel.private_key = key_b
            peer = tunnel.add_peer(keys.public_from_private(key_a))
            tunnel.add_allowed_ip(peer, ipaddress.ip_network("10.77.0.1/32"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with b.configure() as tunnel:
                handshake_ns = next(iter(tunnel.peers.values())).last_handshake_time_ns
            if handshake_ns:
                break
            time.sleep(0.05)
        report["handshake"] = bool(handshake_ns)
        report["running"] = [a.running, b.running]
        report["uapi_b"] = uapi_get(b.uapi_path)
        report["ports"] = [a.listen_port, b.listen_port]
        report["sockets_exist"] = [os.path.exists(a.uapi_path), os.path.exists(b.uapi_path)]
        c.start()
        report["c_running"] = c.running
        c.stop("asked")
        report["c_reason"] = c.wait(5)
        c.close()
    report["after_close"] = {"running": [a.running, b.running], "reasons": [a.stop_reason, b.stop_reason],
                             "sockets_exist": [os.path.exists(a.uapi_path), os.path.exists(b.uapi_path)]}
    try:
        a.start()
        report["restart"] = "allowed"
    except RuntimeError as exc:
        report["restart"] = str(exc)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
