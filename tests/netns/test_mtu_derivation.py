"""Issue 14 kind 4 (field case F09): raven0's MTU comes from the links the tunnel's packets use.

The route toward each peer's endpoint decides (the smallest of them), the default route's link while
no peer has an endpoint; unrelated links (a CNI bridge, another VPN at 1280) do not; never below 1280;
``--mtu`` wins; the log names the deciding link; a changed endpoint changes the MTU. Real kernel
routes in a namespace, and ``ravenvpn up`` itself for the end-to-end part.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

from tools.node import Node
from tools.process import wait_for

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cluster-three-domains.yaml"
CLOUD_PUBLIC_IP = "198.51.100.1"      # gw-cloud's publicIP in the example: hz-1's peer endpoint
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def add_link(node: Node, name: str, mtu: int, cidr: str | None = None) -> None:
    """A link of the host that goes nowhere (a veth whose peer stays in the node)."""
    node.run("ip", "link", "add", name, "type", "veth", "peer", "name", f"{name[:12]}-p")
    node.run("ip", "link", "set", f"{name[:12]}-p", "mtu", str(mtu), "up")
    node.link_up(name, mtu)
    if cidr:
        node.add_addr(name, cidr)


def f09_host(node: Node) -> None:
    """F09's host: up0 (1500) holds the default route; flannel.1/cni0 (1450) and tailscale0 (1280,
    another VPN) are up too. hz-1's address, so the example cluster plans it as gw-hangzhou's gateway."""
    add_link(node, "up0", 1500, "192.168.1.11/24")
    node.run("ip", "route", "add", "default", "via", "192.168.1.1", "dev", "up0", "onlink")
    add_link(node, "flannel.1", 1450)
    add_link(node, "cni0", 1450)
    add_link(node, "tailscale0", 1280, "100.64.0.1/10")


PROBE = textwrap.dedent("""\
    import json, sys
    from ravenvpn.raven.node.links import underlay_path
    path = underlay_path("raven0", sys.argv[1:])
    print(json.dumps([path.mtu, path.link, path.via]))
""")


def probe(node: Node, *endpoints: str) -> list:
    res = node.run(sys.executable, "-c", PROBE, *endpoints, env=ENV)
    return json.loads(res.stdout)


def test_underlay_path_follows_the_routes_toward_the_endpoints(node_factory: Callable[..., Node]) -> None:
    node = node_factory("mtu")
    f09_host(node)
    # No endpoint yet: the default route's link, not the smallest link of the host.
    assert probe(node) == [1500, "up0", "default route"]
    assert probe(node, CLOUD_PUBLIC_IP) == [1500, "up0", f"route to {CLOUD_PUBLIC_IP}"]
    # A peer reached through the other VPN: that link decides, for the smallest of the peers.
    assert probe(node, "100.64.0.7") == [1280, "tailscale0", "route to 100.64.0.7"]
    assert probe(node, CLOUD_PUBLIC_IP, "100.64.0.7") == [1280, "tailscale0", "route to 100.64.0.7"]
    # A route's own mtu metric is what the path carries.
    node.run("ip", "route", "add", "203.0.113.0/24", "via", "192.168.1.1", "dev", "up0", "onlink", "mtu", "1400")
    assert probe(node, "203.0.113.5") == [1400, "up0", "route to 203.0.113.5"]
    # Unreachable endpoints and routes back into a ravenvpn tunnel say nothing: the default route.
    add_link(node, "raven9", 1420)
    node.run("ip", "route", "add", "10.99.0.0/24", "dev", "raven9")
    assert probe(node, "2001:db8::1", "10.99.0.5", "not-an-ip") == [1500, "up0", "default route"]
    # No route at all: Ethernet's 1500, as wg-quick assumes.
    node.run("ip", "route", "del", "default")
    assert probe(node) == [1500, None, "no route to an endpoint and no default route"]


class Up:
    """``ravenvpn up`` as hz-1 in ``node`` (its own state dir), with the cluster file in a temp copy."""

    def __init__(self, node: Node, *extra: str) -> None:
        self.node = node
        self.cluster = node.tmpdir / "cluster.yaml"
        self.cluster.write_text(EXAMPLE.read_text())
        key = node.tmpdir / "hz-1.key"
        key.write_text((ROOT / "examples" / "keys" / "hz-1.key").read_text())
        key.chmod(0o600)
        self.log_path = node.tmpdir / f"up-{len(list(node.tmpdir.glob('up-*.log')))}.log"
        argv = [sys.executable, "-m", "ravenvpn.cli", "up", "--cluster", str(self.cluster), "--node", "hz-1",
                "--private-key", str(key), "--state-dir", str(node.tmpdir / "state"), *extra]
        with open(self.log_path, "w") as log:
            self.proc = node.popen(*argv, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        # The status file is written once the first plan is applied (raven0 opens at 1420 first).
        status = node.tmpdir / "state" / "raven0.status.json"
        wait_for(lambda: self.mtu() is not None and status.exists(), timeout=20,
                 message=f"ravenvpn up to apply its first plan; log:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def mtu(self) -> int | None:
        assert self.proc.poll() is None, self.log()
        res = self.node.run("ip", "-j", "link", "show", "dev", "raven0", check=False)
        return json.loads(res.stdout)[0]["mtu"] if res.returncode == 0 else None

    def set_cloud_ip(self, address: str) -> None:
        text = EXAMPLE.read_text().replace(CLOUD_PUBLIC_IP, address)
        self.cluster.write_text(text + "\n" * (len(address) % 3 + 1))   # another size: seen even in the same second

    def wait_mtu(self, mtu: int) -> None:
        wait_for(lambda: self.mtu() == mtu, timeout=15, message=f"raven0 MTU {mtu}; log:\n{self.log()}")

    def wait_log(self, *texts: str) -> None:
        """The MTU is set before the line saying why is written: wait for the line too."""
        wait_for(lambda: all(t in self.log() for t in texts), timeout=5,
                 message=f"log lines {texts}; log:\n{self.log()}")

    def stop(self) -> None:
        self.node.stop_process(self.proc)


def test_ravenvpn_up_derives_raven0_mtu_from_the_peer_endpoints_route(node_factory: Callable[..., Node]) -> None:
    node = node_factory("mtuup")
    f09_host(node)
    add_link(node, "wan1", 1400, "192.0.2.11/24")         # the cloud is reached over this link
    node.run("ip", "route", "add", f"{CLOUD_PUBLIC_IP}/32", "via", "192.0.2.1", "dev", "wan1", "onlink")
    up = Up(node)
    try:
        assert up.mtu() == 1320, up.log()
        up.wait_log(f"MTU 1320 from link wan1 (MTU 1400, route to {CLOUD_PUBLIC_IP})")
        # The endpoint moves to an address behind the default route: the MTU follows.
        up.set_cloud_ip("203.0.113.1")
        up.wait_mtu(1420)
        up.wait_log("MTU 1420 from link up0 (MTU 1500, route to 203.0.113.1)")
        # ... and to one behind the 1280 VPN: 1280 - 80 is below IPv6's minimum: 1280 and a warning.
        up.set_cloud_ip("100.64.0.9")
        up.wait_mtu(1280)
        up.wait_log("underlay is too small", "tailscale0")
    finally:
        up.stop()


def test_an_explicit_mtu_wins(node_factory: Callable[..., Node]) -> None:
    node = node_factory("mtufix")
    f09_host(node)
    up = Up(node, "--mtu", "1300")
    try:
        assert up.mtu() == 1300, up.log()
    finally:
        up.stop()


def test_an_endpoint_routed_into_the_tunnel_is_measured_on_the_main_table(node_factory: Callable[..., Node]) -> None:
    """A peer's endpoint that is also one of its routed node IPs (public gateways reached at their node
    IPs): once up, table 9028 sends that address into raven0, but the tunnel's own datagrams leave by
    the main table (rule 100, its UDP port). The derivation must follow those, not fall back to 1500
    (found by a new-user review: raven0 went from 1320 to 1420 at the first reconcile)."""
    node = node_factory("mtut")
    add_link(node, "eth0", 1400, "10.99.0.1/24")
    node.run("ip", "tuntap", "add", "raven0", "mode", "tun")
    node.link_up("raven0", 1320)
    node.run("ip", "route", "add", "10.99.0.2/32", "dev", "raven0", "table", "9028")
    node.run("ip", "rule", "add", "priority", "101", "lookup", "9028")
    assert "dev raven0" in node.run("ip", "route", "get", "10.99.0.2").stdout    # what a plain lookup gives
    assert probe(node, "10.99.0.2") == [1400, "eth0", "route to 10.99.0.2"]
