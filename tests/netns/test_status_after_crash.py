"""Operator review leftovers: after ``kill -9`` of ``ravenvpn up``, ``ravenvpn status`` counted the
recorded routes as left behind, though the routes through raven0 vanished with the TUN; it now names
only the routes and rules still in the kernel."""
from __future__ import annotations

import json
import signal

import pytest

from tests.netns.test_operator_safety import NOBODY, Host, host, one_line  # noqa: F401  (host: the fixture)
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


def test_status_as_non_root_says_live_counters_need_root_instead_of_zeros(host: Host) -> None:  # noqa: F811
    """Operator review: with a state directory others may read, ``status`` as non-root printed
    ``latest handshake never, rx 0 B, tx 0 B`` for every peer, though the UAPI socket (root only)
    was merely unreadable. Now it says so, and root still sees the counters."""
    state = host.public / "state"
    state.mkdir(mode=0o755)
    proc, log = host.up("--state-dir", str(state))
    try:
        wait_for(lambda: (state / "raven0.status.json").exists(), timeout=30, message="the status file")
        res = host.ravenvpn("status", "--state-dir", str(state), prefix=tuple(NOBODY), state=False)
        assert res.returncode == 0, res.stderr
        assert "  live counters (handshakes, bytes): need root to read them (cannot open " \
               "/var/run/wireguard/raven0.sock)\n" in res.stdout, res.stdout
        assert " B, tx " not in res.stdout and "(planned)" in res.stdout, res.stdout
        as_json = json.loads(host.ravenvpn("status", "--json", "--state-dir", str(state), prefix=tuple(NOBODY),
                                           state=False).stdout)
        assert as_json["live_unavailable"].startswith("live counters: need root")
        assert all("rx_bytes" not in p for p in as_json["peers"])
        res = host.ravenvpn("status", "--state-dir", str(state), state=False)
        assert "need root" not in res.stdout and "latest handshake never, rx 0 B, tx 0 B" in res.stdout, res.stdout
    finally:
        host.node.stop_process(proc)
        host.ravenvpn("down", "--state-dir", str(state), state=False)


def test_after_kill_9_status_does_not_name_the_vanished_tun(host: Host) -> None:  # noqa: F811
    """The recorded TUN was named as left behind ("interface raven0 (ifindex 3, tun)") though it
    went with its process."""
    proc, log = host.up()
    host.wait_up(proc, log)
    host.node.stop_process(proc, signal.SIGKILL)
    wait_for(lambda: not host.node.has_link("raven0"), timeout=10, message="the TUN to go with its process")
    line = one_line(host.ravenvpn("status"))
    assert "interface raven0" not in line and "and its records (" in line, line
