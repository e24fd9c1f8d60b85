"""The applier against a real kernel, inside a namespace: diff, idempotence, rollback, teardown."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from tools.links import veth
from tools.node import Node
from tools.process import wait_for

REPO = Path(__file__).resolve().parents[2]
SCRIPT = r"""
import ipaddress, json, sys
from ravenvpn.errors import RavenError
from ravenvpn.raven.plan.nodeplan import NodePlan, Role, Route, Rule
from ravenvpn.raven.node.applier import Applier
spec, action, state = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
routes = tuple(Route(ipaddress.ip_network(r["dst"]), r.get("dev"),
                     ipaddress.ip_address(r["gw"]) if r.get("gw") else None, r["table"], mtu=r.get("mtu"))
               for r in spec.get("routes", []))
rules = tuple(Rule(**r) for r in spec.get("rules", []))
plan = NodePlan("n1", Role.ACTIVE_GATEWAY, "gw", "tst0", 4500, 1420, routes=routes, rules=rules,
                sysctls=tuple(spec.get("sysctls", {}).items()))
applier = Applier(interface="tst0", state_dir=state)
try:
    report = applier.apply(plan) if action == "apply" else applier.cleanup()
except RavenError as exc:
    print(json.dumps({"error": str(exc)}))
    sys.exit(0)
print(json.dumps(report.__dict__))
"""


def snapshot(node: Node) -> dict[str, str]:
    return {
        "routes4": node.run("ip", "-4", "route", "show", "table", "all").stdout,
        "routes6": node.run("ip", "-6", "route", "show", "table", "all").stdout,
        "rules4": node.run("ip", "-4", "rule").stdout,
        "rules6": node.run("ip", "-6", "rule").stdout,
        "fwd": node.run("sysctl", "-n", "net.ipv4.ip_forward").stdout,
        "rp": node.run("sysctl", "-n", "net.ipv4.conf.all.rp_filter").stdout,
    }


@pytest.fixture
def gw() -> Iterator[tuple[Node, Any]]:
    with Node("apl") as node, Node("aplpeer") as other:
        link = veth(node, other, "192.168.50.1/24", "192.168.50.2/24", name_a="eth1", name_b="eth1")
        # The kernel adds the link-local address (and its local route) a moment after link-up;
        # wait for it so the before/after snapshots don't race it.
        wait_for(lambda: "local fe80::" in node.run("ip", "-6", "route", "show", "table", "local").stdout,
                 timeout=10, message="IPv6 link-local address on eth1")
        yield node, link


def apply(node: Node, spec: dict, action: str = "apply") -> dict:
    state = str(node.tmpdir / "state")
    out = node.run(sys.executable, "-c", SCRIPT, json.dumps(spec), action, state,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(out.stdout)


SPEC = {
    "routes": [
        {"dst": "10.244.2.0/24", "dev": "eth1", "table": 9028},
        {"dst": "172.16.9.9/32", "dev": "eth1", "table": 9028, "mtu": 1420},
        {"dst": "10.244.3.0/24", "gw": "192.168.50.2", "table": 9027},
        {"dst": "fd00:2::/64", "dev": "eth1", "table": 9028},
    ],
    "rules": [
        {"priority": 101, "table": 9028, "family": 4},
        {"priority": 101, "table": 9028, "family": 6},
        {"priority": 100, "table": 254, "family": 4, "ip_proto": "udp", "sport": 4500},
    ],
    "sysctls": {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "2"},
}


def test_apply_is_idempotent_and_teardown_restores_exactly(gw: tuple[Node, Any]) -> None:
    node, _ = gw
    before = snapshot(node)
    first = apply(node, SPEC)
    assert len(first["routes_added"]) == 4 and len(first["rules_added"]) == 3 and len(first["sysctls_set"]) == 2
    routes = node.run("ip", "route", "show", "table", "9028").stdout
    assert "10.244.2.0/24 dev eth1" in routes and "mtu 1420" in routes
    assert "10.244.3.0/24 via 192.168.50.2" in node.run("ip", "route", "show", "table", "9027").stdout
    assert "ipproto udp sport 4500 lookup main" in node.run("ip", "rule").stdout
    assert node.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
    second = apply(node, SPEC)
    assert second == {"routes_added": [], "routes_removed": [], "rules_added": [], "rules_removed": [],
                      "sysctls_set": []}
    apply(node, {}, "teardown")
    assert snapshot(node) == before


def test_only_the_difference_changes(gw: tuple[Node, Any]) -> None:
    node, _ = gw
    apply(node, SPEC)
    changed = dict(SPEC, routes=SPEC["routes"][1:] + [{"dst": "10.244.7.0/24", "dev": "eth1", "table": 9028}])
    report = apply(node, changed)
    assert report["routes_added"] == ["10.244.7.0/24 table 9028"]
    assert report["routes_removed"] == ["10.244.2.0/24 table 9028"]
    assert report["rules_added"] == report["rules_removed"] == []
    apply(node, {}, "teardown")


def test_failed_apply_rolls_back_and_names_the_problem(gw: tuple[Node, Any]) -> None:
    node, _ = gw
    before = snapshot(node)
    bad = dict(SPEC, routes=SPEC["routes"] + [{"dst": "10.9.0.0/24", "dev": "nosuchdev", "table": 9028}])
    result = apply(node, bad)
    assert "nosuchdev" in result["error"] and "\n" not in result["error"]
    apply(node, {}, "teardown")
    assert snapshot(node) == before


def test_kernel_refusal_midway_is_undone_by_apply_itself(gw: tuple[Node, Any]) -> None:
    node, _ = gw
    before = snapshot(node)
    # Routes and sysctls go in first; the kernel then refuses a next hop that is not on-link.
    bad = dict(SPEC, routes=SPEC["routes"] + [{"dst": "10.9.0.0/24", "gw": "10.200.0.1", "table": 9027}])
    result = apply(node, bad)
    assert "error" in result and "\n" not in result["error"]
    assert snapshot(node) == before     # no teardown needed: the failed apply undid its own changes
    apply(node, {}, "teardown")


def test_refusal_after_a_changed_route_puts_the_earlier_route_back(gw: tuple[Node, Any]) -> None:
    node, _ = gw
    apply(node, SPEC)
    applied = snapshot(node)
    # Two routes change in place (a new MTU, a next hop instead of a device), then the kernel refuses one:
    # rolling back must reinstall the earlier routes, not leave those prefixes to the main table.
    changed = [{"dst": "10.244.2.0/24", "gw": "192.168.50.2", "table": 9028},
               {"dst": "172.16.9.9/32", "dev": "eth1", "table": 9028, "mtu": 1380}]
    bad = dict(SPEC, routes=changed + SPEC["routes"][2:] + [{"dst": "10.9.0.0/24", "gw": "10.200.0.1", "table": 9027}])
    result = apply(node, bad)
    assert "error" in result and "\n" not in result["error"]
    assert snapshot(node) == applied
    apply(node, {}, "teardown")


def test_foreign_routes_and_rules_are_left_alone(gw: tuple[Node, Any]) -> None:
    node, _ = gw
    node.run("ip", "route", "add", "10.77.0.0/16", "via", "192.168.50.2")
    node.run("ip", "rule", "add", "priority", "500", "lookup", "main")
    before = snapshot(node)
    apply(node, SPEC)
    apply(node, {}, "teardown")
    assert snapshot(node) == before


def test_underlay_mtu_leaves_out_our_own_tunnel_whatever_its_name(gw: tuple[Node, Any]) -> None:
    node, _ = gw
    node.run("ip", "link", "add", "wg7", "mtu", "1420", "type", "veth", "peer", "name", "wg7p", "mtu", "1420")
    node.run("ip", "link", "set", "wg7", "up")
    # The endpoint's route leads into wg7; everything else goes by the default route over eth1.
    node.run("ip", "route", "add", "203.0.113.0/24", "dev", "wg7")
    node.run("ip", "route", "add", "default", "via", "192.168.50.2")
    out = node.run(sys.executable, "-c",
                   "from ravenvpn.raven.node.links import underlay_mtu; "
                   "print(underlay_mtu('wg7', ['203.0.113.1']), underlay_mtu('raven0', ['203.0.113.1']))",
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    # A route into our own tunnel is no underlay (it would shrink the planned MTU by 80 on every
    # reconcile); for another interface, wg7 is just the link toward that endpoint (issue 14 kind 4).
    assert out.stdout.split() == ["1500", "1420"]


# --- ownership: only what was recorded (issue 13, H1/H4) -----------------------------------------

def test_teardown_removes_only_the_entries_it_added(gw: tuple[Node, Any]) -> None:
    """Another agent's route and rule in Raven's table 9028, and a sysctl changed since, stay."""
    node, _ = gw
    apply(node, SPEC)
    node.run("ip", "route", "add", "10.250.9.0/24", "dev", "eth1", "table", "9028")
    node.run("ip", "rule", "add", "priority", "102", "lookup", "9028")
    node.run("sysctl", "-w", "net.ipv4.conf.all.rp_filter=1")     # someone else's value now
    report = apply(node, {}, "teardown")
    assert len(report["routes_removed"]) == 4 and len(report["rules_removed"]) == 3
    assert report["sysctls_set"] == ["net.ipv4.ip_forward=0"]
    assert node.run("ip", "route", "show", "table", "9028").stdout.split() == \
        ["10.250.9.0/24", "dev", "eth1", "scope", "link"]
    assert "102:\tfrom all lookup 9028" in node.run("ip", "rule").stdout
    assert node.run("sysctl", "-n", "net.ipv4.conf.all.rp_filter").stdout.strip() == "1"
    node.run("ip", "route", "del", "10.250.9.0/24", "table", "9028")
    node.run("ip", "rule", "del", "priority", "102")


@pytest.mark.parametrize("taken, message", [
    (("ip", "route", "add", "10.244.2.0/24", "dev", "eth1", "table", "9028"),
     "table 9028: a route to 10.244.2.0/24 is already installed, not by ravenvpn"),
    (("ip", "rule", "add", "priority", "101", "lookup", "9028"),
     "rule ipv4 priority 101 lookup 9028 is already installed, not by ravenvpn"),
])
def test_an_entry_another_agent_installed_is_not_taken_over(gw: tuple[Node, Any], taken: tuple[str, ...],
                                                            message: str) -> None:
    node, _ = gw
    node.run(*taken)
    before = snapshot(node)
    result = apply(node, SPEC)
    assert message in result["error"] and "stop it first" in result["error"], result
    assert snapshot(node) == before
    apply(node, {}, "teardown")             # nothing of ours recorded: the other agent's entry stays
    assert snapshot(node) == before
