"""Variants of field case F09 (raven0's MTU from the links the tunnel's packets use), found by
trying related host set-ups: a multipath (ECMP) default route, an IPv6 underlay. Real kernel routes
in a namespace (helpers of tests/netns/test_mtu_derivation.py)."""
from __future__ import annotations

from typing import Callable

import pytest

from tests.netns.test_mtu_derivation import Up, add_link, f09_host, probe
from tools.node import Node

pytestmark = pytest.mark.netns


def test_a_multipath_default_route_counts_with_its_smallest_nexthop_link(node_factory: Callable[..., Node]) -> None:
    """``default nexthop via A dev a0 nexthop via B dev b0`` (ECMP over two uplinks) has no link of its
    own (RTA_MULTIPATH, no RTA_OIF): it was taken as "no default route", MTU 1500, so raven0 got 1420
    over 1400-byte uplinks. A flow may take either nexthop: the smaller link decides."""
    node = node_factory("mtump")
    add_link(node, "up0", 1400, "192.168.1.11/24")
    add_link(node, "up1", 1380, "192.168.2.11/24")
    add_link(node, "tailscale0", 1280, "100.64.0.1/10")    # unrelated: not on the default route
    node.run("ip", "route", "add", "default", "nexthop", "via", "192.168.1.1", "dev", "up0", "onlink",
             "nexthop", "via", "192.168.2.1", "dev", "up1", "onlink")
    assert probe(node) == [1380, "up1", "default route"]


def test_an_ipv6_endpoint_is_measured_on_its_ipv6_route(node_factory: Callable[..., Node]) -> None:
    node = node_factory("mtuv6")
    add_link(node, "up0", 1500, "192.168.1.11/24")
    node.run("ip", "route", "add", "default", "via", "192.168.1.1", "dev", "up0", "onlink")
    add_link(node, "up6", 1450)
    node.run("ip", "-6", "addr", "add", "2001:db8:1::11/64", "dev", "up6", "nodad")
    node.run("ip", "-6", "route", "add", "default", "via", "2001:db8:1::1", "dev", "up6")
    assert probe(node, "2001:db8:9::1") == [1450, "up6", "route to 2001:db8:9::1"]
    assert probe(node, "2001:db8:9::1", "198.51.100.1") == [1450, "up6", "route to 2001:db8:9::1"]


def test_ravenvpn_up_follows_an_underlay_mtu_change_while_running(node_factory: Callable[..., Node]) -> None:
    """``ip link set up0 mtu 1400`` under a running ``ravenvpn up`` left raven0 at 1420 until the
    cluster file changed or SIGHUP (the datagrams of full-size packets then go fragmented); the
    agent now re-derives the MTU every few seconds and re-plans when it moved."""
    node = node_factory("mtuchg")
    f09_host(node)
    up = Up(node, "--no-failover")      # no liveness events: nothing else makes it re-plan
    try:
        assert up.mtu() == 1420, up.log()
        node.run("ip", "link", "set", "up0", "mtu", "1400")
        up.wait_mtu(1320)
        assert "MTU 1320 from link up0 (MTU 1400" in up.log()
    finally:
        up.stop()
