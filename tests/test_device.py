"""`Device` embedded in a process, as a library user runs it: no CLI, no fork, no signal handlers.

Two devices in one process and namespace, each with its own UAPI socket path, configured through
`configure()`, handshake over loopback with the pump in the thread each Device owns; a third
without a UAPI socket. The script runs in a fresh namespace (tests/embedded_devices.py).
"""
from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

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
