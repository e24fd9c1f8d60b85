"""Issue 14 kind 8: every endpoint form `wg` hands a running ravenvpn-wg round-trips through UAPI
(`wg show` prints what was set), and a link-local endpoint is used on the link its zone names.

The link test gives two peers the *same* link-local address, each behind its own veth: only the zone
tells them apart, so both pings through the tunnel work only if each peer's packets leave on its link.
One of the two peers is wireguard-go (interop), the other ravenvpn-wg; both learn A's endpoint from
its packets (a link-local source, with its scope).
"""
from __future__ import annotations

from typing import Callable

import pytest

from tools.links import veth
from tools.node import Node
from tools.tunnel import IMPLS
from tools.traffic import ping
from tools.wg import WgPeer, keypair, start_wg

pytestmark = pytest.mark.netns


@pytest.mark.parametrize("form", ["192.0.2.1:51820", "[2001:db8::1]:51820", "[fe80::2%up0]:51820"],
                         ids=["ipv4", "ipv6", "ipv6-link-local-zone"])
def test_wg_show_prints_the_endpoint_as_set(node_factory: Callable[..., Node], form: str) -> None:
    a, b = node_factory("epf"), node_factory("epfb")
    veth(a, b, "fe80::1/64", "fe80::2/64", name_a="up0", name_b="up0")
    iface = start_wg(a, IMPLS["ravenvpn"], "wg0", keypair()[0], 51820)
    peer = keypair()[1]
    iface.set_peer(WgPeer(peer, endpoint=form))
    assert a.run("wg", "show", "wg0", "endpoints").stdout.split() == [peer, form]
    assert iface.peer_status(peer).endpoint == form


def test_link_local_peers_with_the_same_address_on_two_links(node_factory: Callable[..., Node]) -> None:
    a, b, c = node_factory("ll"), node_factory("llb"), node_factory("llc")
    veth(a, b, "fe80::a/64", "fe80::b/64", name_a="to-b", name_b="to-a")
    veth(a, c, "fe80::a/64", "fe80::b/64", name_a="to-c", name_b="to-a")   # the same address, another link
    ka, kb, kc = keypair(), keypair(), keypair()
    ep_b, ep_c = "[fe80::b%to-b]:51821", "[fe80::b%to-c]:51822"
    wa = start_wg(a, IMPLS["ravenvpn"], "wg0", ka[0], 51820, ["10.99.0.1/24"], [
        WgPeer(kb[1], ["10.99.0.2/32"], endpoint=ep_b),
        WgPeer(kc[1], ["10.99.0.3/32"], endpoint=ep_c),
    ])
    wb = start_wg(b, IMPLS["wireguard-go"], "wg0", kb[0], 51821, ["10.99.0.2/24"], [WgPeer(ka[1], ["10.99.0.1/32"])])
    wc = start_wg(c, IMPLS["ravenvpn"], "wg0", kc[0], 51822, ["10.99.0.3/24"], [WgPeer(ka[1], ["10.99.0.1/32"])])
    for dest in ("10.99.0.2", "10.99.0.3"):
        result = ping(a, dest, count=3, interval=0.2, wait=3)
        assert result.received == 3, f"{dest}: {result}\n--- A's log ---\n{wa.log_text()}"
    dump = wa.dump()
    assert (dump.peers[kb[1]].endpoint, dump.peers[kc[1]].endpoint) == (ep_b, ep_c)
    # C learnt A's endpoint from its packets: the link-local source with its scope.
    assert wc.peer_status(ka[1]).endpoint == "[fe80::a%to-a]:51820"
    assert ping(c, "10.99.0.1", count=2, interval=0.2, wait=3).received == 2
    assert wb.daemon_alive()
