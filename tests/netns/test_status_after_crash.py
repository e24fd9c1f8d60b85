"""Operator review leftovers: after ``kill -9`` of ``ravenvpn up``, ``ravenvpn status`` counted the
recorded routes as left behind, though the routes through raven0 vanished with the TUN; it now names
only the routes and rules still in the kernel."""
from __future__ import annotations

import signal

import pytest

from tests.netns.test_operator_safety import Host, host, one_line  # noqa: F401  (host: the fixture)
from tools.process import wait_for

pytestmark = pytest.mark.netns


def test_after_kill_9_status_counts_only_the_routes_still_installed(host: Host) -> None:  # noqa: F811
    proc, log = host.up()
    host.wait_up(proc, log)
    assert host.ip("route", "show", "table", "9028").strip(), "the active gateway installs routes via raven0"
    host.node.stop_process(proc, signal.SIGKILL)
    wait_for(lambda: not host.node.has_link("raven0"), timeout=10, message="the TUN to go with its process")
    assert host.ip("route", "show", "table", "9028").strip() == ""      # gone with the device
    rules = [r for r in host.ip("rule").splitlines() if "lookup 9028" in r or "sport 4500" in r]
    line = one_line(host.ravenvpn("status"))
    left = line.split(" left ", 1)[1].split(" and its records", 1)[0]
    assert "routes" not in left, line
    assert left.startswith(f"{len(rules)} rules"), (line, rules)
