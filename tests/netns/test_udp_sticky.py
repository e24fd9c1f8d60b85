"""Sticky sockets (issue 12), mirroring netns.sh's "sticky but not too sticky" section.

Replies leave from the address the peer sent to (IP_PKTINFO / IPV6_RECVPKTINFO on receive, the same
source on send), but only while that address exists and the route back leaves through the interface
the peer's packets came in on. ns1 runs ravenvpn-wg (the side under test), ns2 wireguard-go, which
follows whatever source address authenticated packets come from, so its `wg show endpoints` shows
which source ravenvpn answered from.

Where netns.sh uses a `dummy` link (this kernel has none), an `ifb` link stands in.
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from tools.links import veth
from tools.node import Node
from tools.process import wait_for
from tools.traffic import ping
from tools.tunnel import IMPLS
from tools.wg import WgPeer, format_endpoint, keypair, start_wg

INNER1, INNER2 = "192.168.241.1", "192.168.241.2"
ROOT = Path(__file__).resolve().parents[2]


class Pair:
    """ns1 (ravenvpn-wg, port 1) and ns2 (wireguard-go, port 2), tunnel addresses 192.168.241.1/.2,
    no underlay yet: each test builds the one of its netns.sh step."""

    def __init__(self, node_factory, impl2: str = "wireguard-go") -> None:
        self.n1, self.n2 = node_factory("s1"), node_factory("s2")
        for node in (self.n1, self.n2):
            node.sysctl("net.ipv6.conf.all.accept_dad", 0)
            node.sysctl("net.ipv6.conf.default.accept_dad", 0)
        self.k1, self.k2 = keypair(), keypair()
        self.w1 = start_wg(self.n1, IMPLS["ravenvpn"], "wg0", self.k1[0], 1, [f"{INNER1}/24"],
                           [WgPeer(self.k2[1], [f"{INNER2}/32"])])
        self.w2 = start_wg(self.n2, IMPLS[impl2], "wg0", self.k2[0], 2, [f"{INNER2}/24"],
                           [WgPeer(self.k1[1], [f"{INNER1}/32"])])

    def n2_sees(self) -> str | None:
        """The endpoint ns2 has for ns1 (the source ns1's packets came from)."""
        return self.w2.peer_status(self.k1[1]).endpoint

    def n1_sees(self) -> str | None:
        return self.w1.peer_status(self.k2[1]).endpoint

    def ping_from(self, node: Node, addr: str) -> None:
        res = ping(node, addr, count=1, deadline=5)
        assert res.received == 1, f"{node} -> {addr}: {res}\n{self.w1.log_text()[-2000:]}"


def test_replies_leave_from_the_address_the_peer_sent_to(node_factory) -> None:
    """netns.sh: "reply to sender routing". ns1 has two addresses of each family on one interface;
    whichever ns2 sends to is the one ns1 answers from (before: always the primary one, and ns2
    roamed to it)."""
    p = Pair(node_factory)
    link = veth(p.n1, p.n2, "10.0.0.1/24", "10.0.0.3/24", name_a="veth1", name_b="veth2",
                      addr6_a="fd00:aa::1/96", addr6_b="fd00:aa::3/96")
    p.n1.add_addr(link.name_a, "10.0.0.2/24")
    p.n1.add_addr(link.name_a, "fd00:aa::2/96")
    for endpoint in ("10.0.0.1:1", "[fd00:aa::1]:1", "10.0.0.2:1", "[fd00:aa::2]:1"):
        p.n2.run("wg", "set", "wg0", "peer", p.k1[1], "endpoint", endpoint)
        p.ping_from(p.n2, INNER1)
        assert p.n2_sees() == endpoint


def test_a_destination_address_of_another_interface_is_answered_from(node_factory) -> None:
    """netns.sh: "the inbound destination address belongs to a different interface": the peer's
    packets arrive on veth1 for an address of another link; the reply leaves veth1 from it."""
    p = Pair(node_factory)
    link = veth(p.n1, p.n2, "10.0.0.1/24", "10.0.0.3/24", name_a="veth1", name_b="veth2")
    p.n1.run("ip", "link", "add", "ifb50", "type", "ifb")
    p.n1.add_addr("ifb50", "10.50.0.1/24")
    p.n1.run("ip", "link", "set", "ifb50", "up")
    p.n2.run("ip", "route", "add", "10.50.0.0/24", "dev", link.name_b)
    p.n2.run("wg", "set", "wg0", "peer", p.k1[1], "endpoint", "10.50.0.1:1")
    p.ping_from(p.n2, INNER1)
    assert p.n2_sees() == "10.50.0.1:1"


def test_a_route_through_another_interface_takes_over_from_the_sticky_source(node_factory) -> None:
    """netns.sh: "another interface route takes precedence over an ongoing one". ns2's packets keep
    arriving on veth1 (for 10.0.0.1), but the route back now leaves through veth3 (source
    10.0.0.3): the routing table wins over the sticky source, as in the kernel.

    ns2 is ravenvpn-wg too, as both sides are the kernel's in netns.sh: wireguard-go 2022 pins the
    interface as well as the address (it would answer through veth4, and then the kernel's rule
    itself keeps ns1 on 10.0.0.1, which now arrives on veth3)."""
    p = Pair(node_factory, impl2="ravenvpn")
    veth(p.n1, p.n2, "10.0.0.1/24", "10.0.0.2/24", name_a="veth1", name_b="veth2")
    veth(p.n1, p.n2, "10.0.0.3/24", "", name_a="veth3", name_b="veth4")    # veth4: no address
    p.n1.run("ip", "route", "flush", "dev", "veth1")
    p.n1.run("ip", "route", "flush", "dev", "veth3")
    p.n1.run("ip", "route", "add", "10.0.0.0/24", "dev", "veth1", "src", "10.0.0.1", "metric", "2")
    p.n1.run("wg", "set", "wg0", "peer", p.k2[1], "endpoint", "10.0.0.2:2")
    p.ping_from(p.n1, INNER2)
    assert p.n2_sees() == "10.0.0.1:1"
    p.n1.run("ip", "route", "add", "10.0.0.0/24", "dev", "veth3", "src", "10.0.0.3", "metric", "1")
    for node, ifname in ((p.n1, "veth1"), (p.n2, "veth4"), (p.n1, "all"), (p.n2, "all")):
        node.sysctl(f"net.ipv4.conf.{ifname}.rp_filter", 0)
    p.ping_from(p.n1, INNER2)
    assert p.n2_sees() == "10.0.0.3:1"


def test_replies_move_to_a_valid_address_when_the_sticky_one_is_removed(node_factory) -> None:
    """netns.sh: "we aren't overly sticky and can fall over to new IPs when old ones are removed"."""
    p = Pair(node_factory)
    p.n1.sysctl("net.ipv4.conf.default.promote_secondaries", 1)
    link = veth(p.n1, p.n2, "10.0.0.1/24", "10.0.0.2/24", name_a="veth1", name_b="veth2",
                      addr6_a="fd00:aa::1/96", addr6_b="fd00:aa::2/96")
    p.n1.sysctl("net.ipv4.conf.veth1.promote_secondaries", 1)
    for endpoint, old, new in (("10.0.0.2:2", "10.0.0.1/24", "10.0.0.10/24"),
                               ("[fd00:aa::2]:2", "fd00:aa::1/96", "fd00:aa::10/96")):
        p.n1.run("wg", "set", "wg0", "peer", p.k2[1], "endpoint", endpoint)
        p.ping_from(p.n1, INNER2)
        p.n1.add_addr(link.name_a, new)
        p.n1.del_addr(link.name_a, old)
        p.ping_from(p.n1, INNER2)
        want = format_endpoint(new.split("/")[0], 1)
        wait_for(lambda: p.n2_sees() == want, timeout=5, message=f"ns2 to see ns1 at {want}")


def test_route_lookups_see_the_fwmark_and_sticky_sources_are_bounded(node_factory) -> None:
    """The route check asks the kernel with the sockets' fwmark (wg-quick's policy routing selects
    routes by it); and sources learned from unauthenticated datagrams cannot grow without bound."""
    node, other = node_factory("m"), node_factory("o")
    veth(node, other, "10.0.0.1/24", "10.0.0.2/24", name_a="veth1", name_b="veth2")
    veth(node, other, "10.1.0.1/24", "10.1.0.2/24", name_a="veth3", name_b="veth4")
    node.run("ip", "route", "add", "10.0.0.0/24", "dev", "veth3", "table", "100")
    node.run("ip", "rule", "add", "fwmark", "7", "lookup", "100")
    out = node.run(sys.executable, "-c", textwrap.dedent("""\
        import socket
        from ravenvpn.device import sticky, udp
        r = sticky.RouteWatch()
        dst, src = socket.inet_aton("10.0.0.2"), socket.inet_aton("10.0.0.1")
        print(r.route_oif(dst, src) == socket.if_nametoindex("veth1"),
              r.route_oif(dst, src, 7) == socket.if_nametoindex("veth3"))
        t = udp.UdpTransport()
        for i in range(udp.MAX_LEARNED + 5000):
            t._learn(("192.0.2.%d" % (i % 250), i), (bytes(4), 1))
        print(len(t._learned) <= udp.MAX_LEARNED, ("192.0.2.0", 0) not in t._learned)
        """), env={"PYTHONPATH": str(ROOT)}).stdout.split()
    assert out == ["True", "True", "True", "True"], out
