"""The kernel's WireGuard selftest, tools/testing/selftests/wireguard/netns.sh, mirrored for ravenvpn-wg.

Each test is named after the netns.sh section it mirrors and keeps its topology, addresses, ports and
commands (`wg set`, `ip`, `ping -f`, `iperf3`, `ncat`), so a reader can hold the two side by side:

    ns1: wg0 192.168.241.1/24 fd00::1/112  ──┐            ┌── ns2: wg0 192.168.241.2/24 fd00::2/112
                                             └─ ns0: lo ──┘
                               (both UDP sockets live in ns0: 127.0.0.1:1 and 127.0.0.1:2, [::1]:1/2)

The namespace trick is the same as the kernel's: each wg0 is created in ns0, so its UDP socket stays
there, and the link is moved into ns1/ns2 (`ip -n ns0 link set wg0 netns ns1`). For a userspace device
"created in ns0" means the daemon runs in ns0's network namespace; its UAPI socket is in ns1's private
/run/wireguard (every Node has its own), so `wg` runs in ns1 as `n1 wg ...` does in the script.

What cannot apply to a userspace device is said where the check would be, and listed here:
  * `ip -stats link show wg0` counting WireGuard message bytes: a TUN link's counters are the kernel's
    count of inner packets through the TUN; we check those (exactly), and the WireGuard bytes with
    `wg show transfer` (exactly, as the script does).
  * "route MTUs work with the padding": the kernel pads to the route's MTU (`ip route ... mtu 1299`);
    a TUN read carries no route, so a userspace device pads to the link MTU. We check the part that
    does apply: padding never takes a packet past the link MTU.
  * iperf3 with 50 parallel servers and the big-MTU rerun of every traffic test: kept to one bounded
    run each (5 parallel streams, ping and TCP at the big MTU), for the suite's time budget.
  * "onion routing"/routing loops: the kernel stops a loop with its recursion limit; ravenvpn has none
    and needs none (each lap is a real UDP send that grows the packet until the MTU refuses it); we
    check the loop ends, bounded, and the daemons survive.
  * "return an icmp error along the right route" (a packet for which no peer exists): the kernel sends
    ICMP host unreachable; a userspace device (ravenvpn, wireguard-go) drops it silently. Not checked.
  * "sticky sockets" (reply-to-sender source addresses, the dummy0 and route-precedence cases): in
    tests/ of the sticky-source-address work (issue 12, udp.py); here only "not overly sticky".
  * "no circular reference loops" (interfaces moved crosswise, then both namespaces deleted, kmemleak
    style): a userspace daemon's process lives in its birth namespace and so keeps it, and the link
    moved into the other one, alive; `ip netns del` only drops a name. We check the part that applies:
    each daemon ends when its link goes, wherever the link was moved.
  * /proc/sys/net/core/message_cost, `dummy`/`gre`/`ipip` links: not in this kernel (ifb stands in).
"""
from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tools import netns
from tools.netns import Node, PingResult, iperf3, ping, wait_for, wg_dump

pytestmark = pytest.mark.netns

RAVENVPN_WG = netns.own_script("ravenvpn-wg")
V4 = ("192.168.241.1", "192.168.241.2")
V6 = ("fd00::1", "fd00::2")
ORIG_MTU = 1420
BIG_MTU = 34816 - 1500 + ORIG_MTU       # netns.sh's big_mtu
LOW_ORDER_POINTS = (
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    "4Ot6fDtBuK4WVuP68Z/EatoJjeucMrH9hmIFFl9JuAA=", "X5yVvKNQjCSx0LFVnIPvWwREXMRYHI6G2CJO3dCfEVc=",
    "7P///////////////////////////////////////38=", "7f///////////////////////////////////////38=",
    "7v///////////////////////////////////////38=",
)


# ---------------------------------------------------------------------------------------------
# helpers


def host_ip(*args: str) -> None:
    """`ip` from the test's own namespace: only there are all nodes' /run/netns names mounted, which
    `ip link set ... netns NAME` needs (a node's mount namespace drops the other nodes' nsfs mounts)."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise netns.CommandError(proc.returncode, ["ip", *args], proc.stdout, proc.stderr)


def keyfile(node: Node, key: str) -> str:
    """A 0600 file holding `key`, what `<(echo "$key")` is in the script."""
    path = node.tmpdir / f"key-{secrets.token_hex(4)}"
    path.touch(0o600)
    path.write_text(key + "\n")
    return str(path)


class Wg:
    """One ravenvpn-wg interface: the link lives in `home` (where `wg` and `ip` run for it, and where
    its UAPI socket is), the daemon and its UDP socket in `birth`."""

    def __init__(self, home: Node, birth: Node, ifname: str, log: Path, pid: int) -> None:
        self.home, self.birth, self.ifname, self.log, self.pid = home, birth, ifname, log, pid

    def wg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.home.run("wg", *args, check=check)

    def set(self, *args: str) -> None:
        self.wg("set", self.ifname, *args)

    def show(self, what: str) -> str:
        return self.wg("show", self.ifname, what).stdout.strip()

    def ip(self, *args: str) -> None:
        self.home.run("ip", *args)

    def alive(self) -> bool:
        return netns.process_alive(self.pid)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def assert_clean_log(self) -> None:
        text = self.log_text()
        assert "Traceback" not in text and "ERROR" not in text, text[-3000:]


def add_wg(home: Node, birth: Node | None = None, ifname: str = "wg0") -> Wg:
    """`ip -n BIRTH link add IFNAME type wireguard` (+ `ip -n BIRTH link set IFNAME netns HOME`).

    Starts `ravenvpn-wg` with HOME's mounts (so its UAPI socket is in HOME's /run/wireguard) in
    BIRTH's network namespace, then moves the link into HOME if they differ. The link gets
    `addrgenmode none` (a kernel wg link has no IPv6 link-local address either), so only the
    tests' own packets cross the tunnel and the byte counters are exact.
    """
    birth = birth or home
    log = home.tmpdir / f"{ifname}-{secrets.token_hex(2)}.log"
    env = {k: v for k, v in os.environ.items() if k != "WG_PROCESS_FOREGROUND"}
    env["LOG_LEVEL"] = "verbose"
    argv = ["nsenter", f"--mount={home.mount_path}", f"--net={birth.netns_path}", "--",
            RAVENVPN_WG, "--log-file", str(log), ifname]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"ravenvpn-wg {ifname}: {proc.stderr}{log.read_text() if log.exists() else ''}"
    pids = [p for p in birth.pids() if str(log) in netns.process_cmdline(p)]
    assert len(pids) == 1, pids
    if birth is not home:
        host_ip("-n", birth.name, "link", "set", ifname, "netns", home.name)
    home.run("ip", "link", "set", "dev", ifname, "addrgenmode", "none")
    return Wg(home, birth, ifname, log, pids[0])


def flood(node: Node, addr: str, count: int = 10, size: int | None = None, source: str | None = None) -> PingResult:
    """`ping -c COUNT -f -W 1 ADDR` (ping6 is ping): a flood waits for each reply, up to 1 s."""
    args = ["ping", "-n", "-c", str(count), "-f", "-W", "1"]
    if size is not None:
        args += ["-s", str(size)]
    if source is not None:
        args += ["-I", source]
    proc = node.run(*args, addr, check=False, timeout=count + 30)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", proc.stdout)
    assert m, proc.stdout + proc.stderr
    return PingResult(addr, int(m.group(1)), int(m.group(2)), 0.0, None, None, None, [], [], proc.stdout)


def ping1(node: Node, addr: str, **kw) -> bool:
    """`ping -W 1 -c 1 ADDR` as the script's assertions use it (one retry's worth of slack: the
    first packet of a fresh session waits for a handshake, which a loaded machine may take > 1 s)."""
    return ping(node, addr, count=1, wait=2, **kw).received == 1


class Topology:
    """netns.sh's first topology, configured (configure_peers) with IPv4 outer endpoints."""

    def __init__(self, node_factory) -> None:
        self.n0, self.n1, self.n2 = node_factory("ns0"), node_factory("ns1"), node_factory("ns2")
        self.keys = [netns.genkey() for _ in range(4)]
        self.pubs = [netns.pubkey(k) for k in self.keys]
        self.psk = netns.genpsk()
        self.w1 = add_wg(self.n1, self.n0)
        self.w2 = add_wg(self.n2, self.n0)
        self.configure_peers()
        self.w1.set("peer", self.pubs[1], "endpoint", "127.0.0.1:2")
        self.w2.set("peer", self.pubs[0], "endpoint", "127.0.0.1:1")

    def configure_peers(self) -> None:
        w1, w2, n1, n2 = self.w1, self.w2, self.n1, self.n2
        w1.ip("addr", "add", "192.168.241.1/24", "dev", "wg0")
        w1.ip("addr", "add", "fd00::1/112", "dev", "wg0", "nodad")
        w2.ip("addr", "add", "192.168.241.2/24", "dev", "wg0")
        w2.ip("addr", "add", "fd00::2/112", "dev", "wg0", "nodad")
        w1.set("private-key", keyfile(n1, self.keys[0]), "listen-port", "1", "peer", self.pubs[1],
               "preshared-key", keyfile(n1, self.psk), "allowed-ips", "192.168.241.2/32,fd00::2/128")
        w2.set("private-key", keyfile(n2, self.keys[1]), "listen-port", "2", "peer", self.pubs[0],
               "preshared-key", keyfile(n2, self.psk), "allowed-ips", "192.168.241.1/32,fd00::1/128")
        w1.ip("link", "set", "up", "dev", "wg0")
        w2.ip("link", "set", "up", "dev", "wg0")

    def set_mtu(self, mtu: int) -> None:
        for w in (self.w1, self.w2):
            w.ip("link", "set", "wg0", "mtu", str(mtu))

    def pings(self) -> None:
        """tests(): ping -c 10 -f both ways, over IPv4 and IPv6."""
        for node, addr in ((self.n2, V4[0]), (self.n1, V4[1]), (self.n2, V6[0]), (self.n1, V6[1])):
            res = flood(node, addr)
            assert res.received == res.transmitted == 10, res.output

    def check_alive(self) -> None:
        for w in (self.w1, self.w2):
            assert w.alive(), w.log_text()[-3000:]
            w.assert_clean_log()


@pytest.fixture
def topo(node_factory) -> Topology:
    return Topology(node_factory)


def transfer(w: Wg) -> tuple[int, int]:
    """(rx, tx) of the first peer, from `wg show wg0 transfer`."""
    _pub, rx, tx = w.show("transfer").splitlines()[0].split("\t")
    return int(rx), int(tx)


def link_stats(w: Wg) -> tuple[int, int]:
    """(rx_bytes, tx_bytes) of the link, from `ip -stats link show` (as the script reads them)."""
    lines = w.home.run("ip", "-stats", "link", "show", "dev", w.ifname).stdout.splitlines()
    return int(lines[3].split()[0]), int(lines[5].split()[0])


# ---------------------------------------------------------------------------------------------
# the namespace trick (the script's set-up)


def test_netns_sh_setup_create_in_ns0_move_to_ns1(node_factory) -> None:
    """`ip0 link add dev wg0 type wireguard; ip0 link set wg0 netns $netns1`: the daemon must take
    the move's RTM_DELLINK for what it is, follow the link (its MTU changes), keep its UDP socket
    in ns0, ignore a new link that takes the old ifindex in ns0, and end when the link is deleted
    in ns1. Before the fix it logged "interface wg0 was deleted" and exited at the move."""
    n0, n1 = node_factory("ns0"), node_factory("ns1")
    w = add_wg(n1, n0)
    old_index = next(link["ifindex"] for link in n1.links() if link["ifname"] == "wg0")
    assert not n0.has_link("wg0")
    time.sleep(0.5)         # the move's RTM_DELLINK has reached the daemon
    assert w.alive(), w.log_text()
    assert "moved to another network namespace" in w.log_text()

    w.set("private-key", keyfile(n1, netns.genkey()), "listen-port", "1")
    assert w.show("listen-port") == "1"
    # The UDP socket is where the daemon was born: ns0 has port 1 bound, ns1 nothing.
    assert ":1 " in n0.run("ss", "-Hlun", "sport = :1").stdout
    assert not n1.run("ss", "-Hlun", "sport = :1").stdout.strip()

    # The daemon follows the link into ns1: MTU changes there reach it.
    w.ip("link", "set", "wg0", "mtu", "1300", "up")
    wait_for(lambda: "MTU of wg0 is now 1300" in w.log_text(), timeout=5, message="MTU event from ns1")

    # ns0 reuses the number for another link (netns.sh creates the next wg0 there); deleting that
    # link must not end the daemon.
    n0.run("ip", "link", "add", "wg0", "index", str(old_index), "type", "ifb")
    n0.run("ip", "link", "del", "wg0")
    time.sleep(0.5)
    assert w.alive(), w.log_text()

    w.ip("link", "del", "wg0")
    wait_for(lambda: not w.alive() and not n1.exists("/run/wireguard/wg0.sock"), timeout=10,
             message="daemon exit after `ip -n ns1 link del wg0`")
    assert "interface wg0 was deleted" in w.log_text()
    w.assert_clean_log()


class UdpListener:
    """`ncat -l -u -p PORT` in a node, as the script reads it (`read -r -N 1 -t 1 out <&4`)."""

    def __init__(self, node: Node, port: int = 1111) -> None:
        self.node, self.port = node, port
        self.proc = node.popen("ncat", "-l", "-u", "-p", str(port), stdout=subprocess.PIPE, text=False)
        wait_for(lambda: node.run("ss", "-Hlun", f"sport = :{port}").stdout.strip(), timeout=10,
                 message=f"ncat listening on udp {port}")

    def read(self, timeout: float) -> bytes:
        """What arrived within `timeout` seconds (b"" if nothing)."""
        import select
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return os.read(self.proc.stdout.fileno(), 65536) if ready else b""

    def close(self) -> None:
        self.node.stop_process(self.proc)


def test_netns_sh_private_key_set_after_keepalive_peer(node_factory) -> None:
    """Issue 12: `wg set wg0 peer P endpoint E persistent-keepalive 1`, link up, then the private key:
    the key makes the peer usable, and a peer with persistent keepalive must start at once (the
    kernel and wireguard-go send within a second). Before the fix nothing was sent for >= 5 s."""
    n0 = node_factory("ns0")
    w = add_wg(n0)
    listener = UdpListener(n0)
    try:
        w.set("listen-port", "1", "peer", netns.pubkey(netns.genkey()), "endpoint", "127.0.0.1:1111",
              "persistent-keepalive", "1")
        w.ip("link", "set", "up", "dev", "wg0")
        assert listener.read(1.0) == b""        # no key: nothing to send
        w.set("private-key", keyfile(n0, netns.genkey()))
        first = listener.read(3.0)
        assert first[:1] == b"\x01", f"no handshake initiation within 3 s after the key was set: {first!r}"
    finally:
        listener.close()
    assert w.alive()
    w.assert_clean_log()
