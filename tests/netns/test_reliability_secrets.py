"""Secrets and cleanliness: no key material in debug logs, no inner plaintext on the underlay, a key file
readable by others refused, and nothing left behind after a scenario."""
from __future__ import annotations

import os
from pathlib import Path

from benchmarks import reliability as R
from tools.node import Node, leftovers, require_root
from tools.process import pids_in_namespaces
from tools.wg import own_script


def test_no_key_material_in_debug_logs_nor_plaintext_on_the_underlay(node_factory) -> None:
    r = R.secrets_check(node_factory)
    assert r["tunnel_ok"]
    assert r["marker_in_clear"], "control: the marker must cross the tunnel in the clear on raven0"
    assert not r["marker_on_wire"], "inner plaintext on the underlay"
    assert r["underlay_packets"] > 30
    assert r["uapi_logged"] and r["log_lines"]["A"] > 5, "debug logging must actually be on"
    assert not r["keys_in_logs"], r["keys_in_logs"]
    assert not r["log_problems"], r["log_problems"]


def test_up_refuses_a_private_key_file_readable_by_others(node_factory) -> None:
    node = node_factory("upk")
    key = node.tmpdir / "hz-1.key"
    key.write_text((Path(__file__).parents[2] / "examples" / "keys" / "hz-1.key").read_text())
    cluster = Path(__file__).parents[2] / "examples" / "cluster-three-domains.yaml"
    for mode in (0o644, 0o640):
        os.chmod(key, mode)
        proc = node.run(own_script("ravenvpn"), "up", "--cluster", str(cluster), "--node", "hz-1",
                        "--private-key", str(key), check=False, timeout=30)
        err = proc.stderr.strip()
        assert proc.returncode != 0 and "permissions" in err and "chmod 600" in err, err
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert not node.has_link("raven0"), "nothing may be configured after refusing the key"


def test_nothing_left_after_a_scenario() -> None:
    """A whole scenario (restart, the quickest with daemons, kills and restarts) in nodes of a private
    prefix: afterwards no namespace, mount, process, UAPI socket or host link of it remains."""
    require_root()
    host_links = {ln.split(":")[1].strip() for ln in os.popen("ip -o link").read().splitlines()}
    host_sockets = set(os.listdir("/run/wireguard")) if os.path.isdir("/run/wireguard") else set()
    made: list[Node] = []

    def make(label: str) -> Node:
        node = Node(label, prefix="rvq")
        made.append(node)
        return node

    try:
        r = R.restart_recovery(make, "traffic")
        assert r["recovered_s"] is not None
        inodes = [(n.netns_inode, n.mount_inode) for n in made]
        names = [n.name for n in made]
    finally:
        for node in made:
            node.close()
    assert leftovers(names=names) == []
    for net_ino, mnt_ino in inodes:
        assert pids_in_namespaces(net_ino, mnt_ino) == [], "a process survived its node"
    assert {ln.split(":")[1].strip() for ln in os.popen("ip -o link").read().splitlines()} <= host_links
    now = set(os.listdir("/run/wireguard")) if os.path.isdir("/run/wireguard") else set()
    assert now <= host_sockets, now - host_sockets
