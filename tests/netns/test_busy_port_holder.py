"""When the tunnel's UDP port is taken, the log says who holds it (the "port 4500 is taken" kind).

The line guessed "(by another ravenvpn or WireGuard?)" whoever held the port; on a Raven node the
usual holder of 4500 is IPsec's NAT-T (charon), or a kernel tunnel (a VXLAN or kernel WireGuard
port). Now it names the process (comm and pid) from /proc, or says no visible process holds it.
"""
from __future__ import annotations

import socket
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

from ravenvpn.device.udp import port_holders
from tools.node import Node

ROOT = Path(__file__).resolve().parents[2]


def test_port_holders_names_the_process_holding_a_udp_port() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]
        comm = Path("/proc/self/comm").read_text().strip()
        assert port_holders(port) == f"{comm} (pid {Path('/proc/self').resolve().name})"
    assert port_holders(port) == ""


PROBE = textwrap.dedent("""\
    from ravenvpn.device.udp import port_holders
    print(port_holders(4500))
""")


@pytest.mark.netns
def test_a_kernel_socket_on_the_port_is_named_as_such(node_factory: Callable[..., Node]) -> None:
    node = node_factory("port")
    node.run("ip", "link", "add", "vx0", "type", "vxlan", "id", "5", "dstport", "4500", "dev", "lo")
    node.run("ip", "link", "set", "vx0", "up")        # its UDP socket is bound while it is up
    res = node.run(sys.executable, "-c", PROBE, env={"PYTHONPATH": str(ROOT)})
    assert res.stdout == "no process we can see (a kernel WireGuard interface or other in-kernel tunnel?)\n"


def test_a_busy_liveness_port_names_its_holder() -> None:
    from ravenvpn.errors import RavenError
    from ravenvpn.raven.liveness.machine import DomainConfig
    from ravenvpn.raven.liveness.service import LivenessService
    from tests.unit.test_liveness import CANDS, GW

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.22", 0))
        port = holder.getsockname()[1]
        cfg = DomainConfig(GW, "hz-3", CANDS, frozenset({"127.0.0.22"}), port=port, address="127.0.0.22")
        with pytest.raises(RavenError) as err:
            LivenessService(cfg, None, "raven0", lambda view: None)
    comm = Path("/proc/self/comm").read_text().strip()
    assert f"Address already in use (held by {comm} (pid {Path('/proc/self').resolve().name}))" in str(err.value)
