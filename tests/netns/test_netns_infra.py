"""Proves the real-network test infrastructure (tools/node.py, links.py, traffic.py, wg.py, tunnel.py) does
what tests rely on: namespaces that really are separate hosts, private /run/wireguard per node, a working
WireGuard helper (validated with wireguard-go on both sides), and teardown that leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tools import child_node
from tools.links import veth
from tools.node import Node, cleanup_stale, leftovers
from tools.process import CommandError, pids_in_namespaces, process_alive
from tools.traffic import capture, iperf3, ping
from tools.tunnel import Tunnel
from tools.wg import wg_dump

pytestmark = pytest.mark.netns


def test_two_nodes_veth_ping(node_factory):
    a, b = node_factory("a"), node_factory("b")
    link = veth(a, b, "198.18.0.1/24", "198.18.0.2/24", addr6_a="fd00:18::1/64", addr6_b="fd00:18::2/64")
    r4 = ping(a, link.ip_b, count=3, interval=0.05)
    r6 = ping(b, link.ip6_a, count=3, interval=0.05)
    print(f"\n[measure] veth {r4}\n[measure] veth {r6}")
    assert r4.received == 3 and r6.received == 3, (r4.output, r6.output)
    assert len(r4.rtts) == 3 and r4.rtt_avg is not None
    # /sys is the node's own sysfs: only its own links are listed there (what wg-quick/ip rely on)
    assert sorted(a.run("ls", "/sys/class/net").stdout.split()) == ["lo", "to-b"]
    # pyroute2 handle operates inside the namespace
    with a.ipr() as ipr:
        names = {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
    assert names == {"lo", "to-b"}
    # the host namespace gained no interface
    host_links = {x["ifname"] for x in json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout)}
    assert "to-b" not in host_links and "to-a" not in host_links


def test_private_run_wireguard(node_factory):
    a, b = node_factory("a"), node_factory("b")
    marker = f"/run/wireguard/only-in-{a.name}"
    a.run("touch", marker)
    assert a.exists(marker)
    assert not b.exists(marker)
    assert not os.path.exists(marker), "a node's /run/wireguard leaked to the host"
    fstype = a.run("findmnt", "-n", "-o", "FSTYPE", "/run/wireguard").stdout.strip()
    assert fstype == "tmpfs"
    # /var/run is the same place for the daemons
    assert a.exists(marker.replace("/run/", "/var/run/"))


def test_wireguard_go_tunnel(node_factory):
    """wireguard-go on both ends, same interface name in both nodes: validates start_wg/wg_dump/stop."""
    a, b = node_factory("a"), node_factory("b")
    t = Tunnel(a, b, "wireguard-go", "wireguard-go").up()
    assert t.a.wg.daemon_pids and t.b.wg.daemon_pids
    r = ping(a, t.b.inner4, count=3, interval=0.2, wait=5)
    assert r.received >= 2, r.output  # the first may wait for the handshake, but should arrive
    r6 = ping(b, t.a.inner6, count=3, interval=0.1, wait=5)
    assert r6.received == 3, r6.output
    perf = iperf3(a, b, t.b.inner4, seconds=2)
    print(f"\n[measure] wireguard-go<->wireguard-go {r}\n[measure] iperf3 2 s TCP A->B: "
          f"{perf['bits_per_second'] / 1e6:.1f} Mbit/s, retransmits {perf['retransmits']}")
    assert perf["received_bytes"] > 0
    da, db = wg_dump(a, "raven0"), wg_dump(b, "raven0")
    assert da.public_key == t.a.public_key and da.listen_port == t.a.listen_port
    pa = da.peers[t.b.public_key]
    assert pa.endpoint == t.b.endpoint and pa.latest_handshake > 0
    assert pa.tx_bytes >= perf["sent_bytes"]
    assert db.peers[t.a.public_key].rx_bytes >= perf["received_bytes"]
    assert sorted(pa.allowed_ips) == sorted(["10.99.0.2/32", "fd99::2/128"])
    # wireguard-go exits when its link is deleted and removes its UAPI socket
    pids = t.a.wg.daemon_pids + t.b.wg.daemon_pids
    assert t.down() == (True, True)
    assert not any(process_alive(p) for p in pids)
    assert not a.has_link("raven0") and not a.exists("/run/wireguard/raven0.sock")


def test_ping_loss_is_a_result_failure_is_an_error(node_factory):
    a, b = node_factory("a"), node_factory("b")
    veth(a, b, "198.18.0.1/24", "198.18.0.2/24")
    lost = ping(a, "198.18.0.99", count=1, wait=1)  # on the link, nobody there: exit 1, a result
    assert lost.transmitted == 1 and not lost.ok
    with pytest.raises(CommandError, match="Network is unreachable"):  # no route: exit 2, ping failed
        ping(a, "203.0.113.1", count=1)


def test_capture_sees_traffic(node_factory):
    a, b = node_factory("a"), node_factory("b")
    link = veth(a, b, "198.18.0.1/24", "198.18.0.2/24")
    with capture(b, link.name_b, "icmp") as cap:
        ping(a, link.ip_b, count=2, interval=0.05, pattern="c0ffee")
    pkts = cap.packets()
    assert len(pkts) == 4, cap.summary()  # 2 requests + 2 replies
    assert bytes.fromhex("c0ffeec0ffee") in cap.raw_bytes()


def test_teardown_leaves_nothing(netns_env):
    wg_before = sorted(os.listdir("/run/wireguard")) if os.path.isdir("/run/wireguard") else []
    names, inodes, procs, tmpdirs, daemons = [], [], [], [], []
    with pytest.raises(RuntimeError, match="boom"):
        with Node("x") as a, Node("y") as b:
            names += [a.name, b.name]
            inodes += [(a.netns_inode, a.mount_inode), (b.netns_inode, b.mount_inode)]
            tmpdirs += [a.tmpdir, b.tmpdir]
            t = Tunnel(a, b).up()
            daemons += t.a.wg.daemon_pids + t.b.wg.daemon_pids
            procs.append(a.popen("sleep", "600"))
            # a process not tracked by popen (like a daemon) is found by its namespace and killed too
            a.run("sh", "-c", "setsid sleep 600 >/dev/null 2>&1 < /dev/null &")
            assert ping(a, t.b.inner4, count=1, wait=5).ok
            raise RuntimeError("boom")  # teardown must happen on failure too
    assert leftovers(names=names) == []
    for net_ino, mnt_ino in inodes:
        assert pids_in_namespaces(net_ino, mnt_ino) == []
    assert all(p.poll() is not None for p in procs)
    assert not any(process_alive(p) for p in daemons)
    assert not any(d.exists() for d in tmpdirs)
    wg_after = sorted(os.listdir("/run/wireguard")) if os.path.isdir("/run/wireguard") else []
    assert wg_after == wg_before
    for name in names:
        assert not Path(f"/run/netns/{name}").exists()


def test_cleanup_stale_after_crash(netns_env):
    """A run killed with SIGKILL leaves namespaces behind; cleanup_stale removes them (and only them)."""
    prefix = f"rvc{os.getpid() % 10000}"
    child = child_node.spawn("crash", prefix, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == -9, stderr
    name, net_ino, mnt_ino = stdout.split()
    try:
        assert leftovers(names=[name]), "the crashed run should have left its node behind"
        assert pids_in_namespaces(int(net_ino), int(mnt_ino)), "its process should still run"
        removed = cleanup_stale(prefix)
        assert removed == [name]
        assert leftovers(names=[name]) == []
        assert pids_in_namespaces(int(net_ino), int(mnt_ino)) == []
    finally:
        cleanup_stale(prefix)


def test_cleanup_stale_keeps_live_owner(netns_env):
    """A concurrently running session's nodes (owner alive) are left alone."""
    prefix = f"rvl{os.getpid() % 10000}"
    proc = child_node.spawn("live", prefix, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        name = proc.stdout.readline().strip()
        assert name.startswith(prefix)
        assert cleanup_stale(prefix) == []
        assert leftovers(names=[name])
    finally:
        proc.stdin.close()
        proc.wait(30)
    assert leftovers(names=[name]) == []
