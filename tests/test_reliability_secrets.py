"""Secrets and cleanliness: no key material in debug logs, no inner plaintext on the underlay, a key file
readable by others refused, and nothing left behind after a scenario."""
from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

from benchmarks import reliability as R
from tools import netns
from tools.netns import capture, genpsk, own_script, ping
from tools.tunnel import Tunnel

MARKER = "RAVENVPN-PLAINTEXT-MARKER-7f3a9c"
_UDP_SEND = "import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); " \
            "[s.sendto(sys.argv[3].encode(),(sys.argv[1],int(sys.argv[2]))) for _ in range(5)]"
_TCP_SEND = "import socket,sys; s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=10); " \
            "s.sendall(sys.argv[3].encode()*50); s.close()"
_TCP_SINK = "import socket,sys; v=socket.socket(); v.bind((sys.argv[1],int(sys.argv[2]))); v.listen(1); " \
            "print('up',flush=True); c,_=v.accept(); print(len(c.recv(1<<20)))"


def key_forms(b64: str) -> list[str]:
    raw = base64.b64decode(b64)
    return [b64, b64.rstrip("="), raw.hex(), raw.hex().upper()]


def test_no_key_material_in_debug_logs_nor_plaintext_on_the_underlay(node_factory) -> None:
    a, b = node_factory("sca"), node_factory("scb")
    env = {"LOG_LEVEL": "debug", "RAVENVPN_TEST_REKEY_AFTER_TIME": "2"}
    psk = genpsk()
    t = Tunnel(a, b, impl_a="ravenvpn", impl_b="ravenvpn", psk=psk, env_a=env, env_b=env).up()
    with capture(a, t.link.name_a, "udp") as under, capture(b, t.ifname, "") as inner:
        assert ping(b, t.a.inner4, count=3, interval=0.2, wait=3, pattern=MARKER.encode().hex()[:32]).ok
        b.run(sys.executable, "-c", _UDP_SEND, t.a.inner4, "9999", MARKER)
        sink = a.popen(sys.executable, "-c", _TCP_SINK, t.a.inner4, "7777", stdout=subprocess.PIPE)
        assert sink.stdout is not None and sink.stdout.readline().strip() == "up"
        b.run(sys.executable, "-c", _TCP_SEND, t.a.inner4, "7777", MARKER)
        sink.wait(10)
        # rekeys (every 2 s), a new private key and bad UAPI requests carrying key material
        ping(a, t.b.inner4, count=20, interval=0.25, wait=2)
    wire, clear = under.raw_bytes(), inner.raw_bytes()
    assert MARKER.encode() in clear, "control: the marker must cross the tunnel in the clear on raven0"
    assert MARKER.encode() not in wire and MARKER.encode()[:16] not in wire, "inner plaintext on the underlay"
    assert len(under.packets()) > 30

    new_priv = netns.genkey()
    t.a.wg.node.run("sh", "-c", f"umask 077; printf '%s\\n' {new_priv} > /tmp/k.$$ && "
                    f"wg set {t.ifname} private-key /tmp/k.$$; rm -f /tmp/k.$$")
    bad = [f"private_key={base64.b64decode(new_priv).hex()}zz", f"preshared_key={base64.b64decode(psk).hex()}0",
           f"public_key={base64.b64decode(t.b.public_key).hex()}\npreshared_key={base64.b64decode(psk).hex()[:-1]}"]
    for line in bad:
        a.run(sys.executable, "-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); "
              "s.connect(sys.argv[1]); s.sendall(('set=1\\n'+sys.argv[2]+'\\n\\n').encode()); print(s.recv(99))",
              t.a.wg.socket_path, line)
    logs = {"A": t.a.wg.log_text(), "B": t.b.wg.log_text()}
    assert "UAPI" in logs["A"] and len(logs["A"].splitlines()) > 5, "debug logging must actually be on"
    secrets = {"A private": t.a.private_key, "B private": t.b.private_key, "psk": psk, "A new private": new_priv}
    for who, text in logs.items():
        for name, key in secrets.items():
            for form in key_forms(key):
                assert form not in text, f"{name} key ({form[:6]}...) appears in {who}'s debug log"


def test_up_refuses_a_private_key_file_readable_by_others(node_factory) -> None:
    node = node_factory("upk")
    key = node.tmpdir / "hz-1.key"
    key.write_text((Path(__file__).parents[1] / "examples" / "keys" / "hz-1.key").read_text())
    cluster = Path(__file__).parents[1] / "examples" / "cluster-three-domains.yaml"
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
    netns.require_root()
    host_links = {ln.split(":")[1].strip() for ln in os.popen("ip -o link").read().splitlines()}
    host_sockets = set(os.listdir("/run/wireguard")) if os.path.isdir("/run/wireguard") else set()
    made: list[netns.Node] = []

    def make(label: str) -> netns.Node:
        node = netns.Node(label, prefix="rvq")
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
    assert netns.leftovers(names=names) == []
    for net_ino, mnt_ino in inodes:
        assert netns.pids_in_namespaces(net_ino, mnt_ino) == [], "a process survived its node"
    assert {ln.split(":")[1].strip() for ln in os.popen("ip -o link").read().splitlines()} <= host_links
    now = set(os.listdir("/run/wireguard")) if os.path.isdir("/run/wireguard") else set()
    assert now <= host_sockets, now - host_sockets
