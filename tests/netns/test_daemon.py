"""`ravenvpn-wg` for real: TUN + UAPI socket in fresh namespaces, driven by the unmodified `wg` and `wg-quick`.

Each node (tools/node.py) has a private /run/wireguard, so names cannot collide with other tests or
daemons. The daemon runs from this checkout through a `ravenvpn-wg` wrapper on a private PATH.
"""
from __future__ import annotations

import os
import secrets
import signal
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tools.links import veth
from tools.node import Node
from tools.process import process_alive, process_cmdline, wait_for
from tools.traffic import ping
from tools.tunnel import Tunnel
from tools.wg import WgPeer, genkey, genpsk, pubkey, start_wg, wg_dump

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bindir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a `ravenvpn-wg` that runs this checkout (what wg-quick will find on PATH)."""
    d = tmp_path_factory.mktemp("rvd-bin")
    wrapper = d / "ravenvpn-wg"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" -m ravenvpn.device.daemon "$@"\n')
    wrapper.chmod(0o755)
    d.chmod(0o755)
    return d


@pytest.fixture
def env(bindir: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("LOG_LEVEL", "WG_PROCESS_FOREGROUND")}
    e["PATH"] = f"{bindir}:{e.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    return e


def ifname() -> str:
    return "rvd" + secrets.token_hex(3)


def sock(name: str) -> str:
    return f"/run/wireguard/{name}.sock"


def start(node: Node, name: str, env: dict[str, str], *extra: str) -> Path:
    """Start the daemon like wg-quick does; return its log file."""
    log = node.tmpdir / f"{name}.log"
    node.run("ravenvpn-wg", "--log-file", str(log), *extra, name, env=env, timeout=20)
    return log


def daemon_pid(node: Node, name: str) -> int:
    pids = [p for p in node.pids() if name in process_cmdline(p)]
    assert len(pids) == 1, f"expected one daemon for {name}, found {pids}"
    return pids[0]


def gone(node: Node, name: str, pid: int) -> bool:
    return not process_alive(pid) and not node.exists(sock(name)) and not node.has_link(name)


def key_files(node: Node) -> tuple[str, str, str]:
    """(private key file, its public key, psk file), 0600 in the node's temp dir."""
    private, psk = genkey(), genpsk()
    paths = []
    for label, value in (("priv", private), ("psk", psk)):
        path = node.tmpdir / f"{label}-{secrets.token_hex(2)}"
        path.write_text(value + "\n")
        path.chmod(0o600)
        paths.append(str(path))
    return paths[0], pubkey(private), paths[1]


# ---------------------------------------------------------------------------------------------

def test_start_socket_mode_wg_set_show_and_link_delete(node_factory, env) -> None:
    node = node_factory("d")
    name = ifname()
    log = start(node, name, env)
    assert node.has_link(name)
    mode = int(node.run("stat", "-c", "%a", sock(name)).stdout, 8)
    assert mode == 0o600, oct(mode)
    assert stat.S_ISSOCK(int(node.run("stat", "-c", "%f", sock(name)).stdout, 16))

    priv, pub, psk = key_files(node)
    peer1, peer2 = pubkey(genkey()), pubkey(genkey())
    node.run("wg", "set", name, "private-key", priv, "listen-port", "51820", "fwmark", "0x42",
             "peer", peer1, "preshared-key", psk, "endpoint", "127.0.0.1:51999",
             "allowed-ips", "192.0.2.0/24,2001:db8::/64", "persistent-keepalive", "25",
             "peer", peer2, "endpoint", "[::1]:51998", "allowed-ips", "198.51.100.7/32")
    dump = wg_dump(node, name)
    assert (dump.public_key, dump.listen_port, dump.fwmark) == (pub, 51820, 0x42)
    p1, p2 = dump.peers[peer1], dump.peers[peer2]
    assert p1.endpoint == "127.0.0.1:51999" and p1.persistent_keepalive == 25 and p1.preshared_key
    assert sorted(p1.allowed_ips) == ["192.0.2.0/24", "2001:db8::/64"]
    assert p2.endpoint == "[::1]:51998" and p2.allowed_ips == ["198.51.100.7/32"] and p2.preshared_key is None
    # turning persistent keepalive on sends at once (here: a handshake initiation towards lo)
    wait_for(lambda: wg_dump(node, name).peers[peer1].tx_bytes >= 148, timeout=5, message="initiation sent")

    human = node.run("wg", "show", name).stdout
    assert f"interface: {name}" in human and "listening port: 51820" in human and "(hidden)" in human
    assert name in node.run("wg", "show", "interfaces").stdout.split()
    assert node.run("wg", "show", "all", "dump").stdout.startswith(name + "\t")

    # removal, allowed-ips minus, keepalive off
    node.run("wg", "set", name, "peer", peer2, "remove", "peer", peer1, "persistent-keepalive", "off")
    dump = wg_dump(node, name)
    assert list(dump.peers) == [peer1] and dump.peers[peer1].persistent_keepalive is None

    # MTU changes on the link reach the daemon (over rtnetlink)
    node.run("ip", "link", "set", "dev", name, "mtu", "1380", "up")
    wait_for(lambda: "MTU of" in log.read_text() and "1380" in log.read_text(), timeout=5, message="MTU event")

    pid = daemon_pid(node, name)
    node.run("ip", "link", "del", "dev", name)
    wait_for(lambda: gone(node, name, pid), timeout=10, message="daemon exit after link deletion")
    text = log.read_text()
    assert f"interface {name} was deleted" in text
    assert priv not in text and open(priv).read().strip() not in text      # no key material in the log


def test_showconf_and_syncconf_round_trip(node_factory, env) -> None:
    node = node_factory("c")
    name = ifname()
    start(node, name, env)
    keep, drop, new = (pubkey(genkey()) for _ in range(3))
    conf = node.tmpdir / "a.conf"
    conf.write_text(textwrap.dedent(f"""\
        [Interface]
        PrivateKey = {genkey()}
        ListenPort = 40001

        [Peer]
        PublicKey = {keep}
        AllowedIPs = 192.0.2.1/32, 192.0.2.64/26
        Endpoint = 127.0.0.1:40002

        [Peer]
        PublicKey = {drop}
        PresharedKey = {genpsk()}
        AllowedIPs = 2001:db8:1::/48
        PersistentKeepalive = 15
        """))
    node.run("wg", "setconf", name, str(conf))
    shown = node.run("wg", "showconf", name).stdout
    # showconf -> setconf -> showconf is a fixed point (the daemon keeps everything wg sends)
    conf2 = node.tmpdir / "b.conf"
    conf2.write_text(shown)
    node.run("wg", "setconf", name, str(conf2))
    assert node.run("wg", "showconf", name).stdout == shown
    assert "ListenPort = 40001" in shown and keep in shown and drop in shown

    # syncconf: drop one peer, add one, change allowed IPs of the kept one, without touching its session
    conf3 = node.tmpdir / "c.conf"
    conf3.write_text(shown.split("[Peer]")[0] + textwrap.dedent(f"""\
        [Peer]
        PublicKey = {keep}
        AllowedIPs = 192.0.2.128/25
        Endpoint = 127.0.0.1:40002

        [Peer]
        PublicKey = {new}
        AllowedIPs = 198.51.100.0/24
        """))
    node.run("wg", "syncconf", name, str(conf3))
    dump = wg_dump(node, name)
    assert list(dump.peers) == [keep, new]
    assert dump.peers[keep].allowed_ips == ["192.0.2.128/25"]
    assert dump.peers[new].allowed_ips == ["198.51.100.0/24"]


def test_wg_quick_up_down(node_factory, env) -> None:
    node = node_factory("q")
    name = ifname()
    peer = pubkey(genkey())
    conf = node.tmpdir / f"{name}.conf"
    conf.write_text(textwrap.dedent(f"""\
        [Interface]
        PrivateKey = {genkey()}
        Address = 198.18.10.1/24, fd00:rv::1/64
        ListenPort = 40010
        MTU = 1400

        [Peer]
        PublicKey = {peer}
        AllowedIPs = 198.18.20.0/24, fd00:rw::/64
        Endpoint = 127.0.0.1:40011
        """).replace("fd00:rv::", "fd00:1::").replace("fd00:rw::", "fd00:2::"))
    conf.chmod(0o600)
    qenv = dict(env, WG_QUICK_USERSPACE_IMPLEMENTATION="ravenvpn-wg")
    up = node.run("wg-quick", "up", str(conf), env=qenv, timeout=60)
    assert "Missing WireGuard kernel module" in up.stderr      # i.e. it really took the userspace path
    link = [l for l in node.links() if l["ifname"] == name][0]
    assert link["mtu"] == 1400 and "UP" in link["flags"]
    routes = node.run("ip", "route", "show", "dev", name).stdout + node.run("ip", "-6", "route", "show", "dev", name).stdout
    assert "198.18.20.0/24" in routes and "fd00:2::/64" in routes
    dump = wg_dump(node, name)
    assert dump.listen_port == 40010 and dump.peers[peer].endpoint == "127.0.0.1:40011"
    assert "198.18.10.1/24" in node.run("ip", "addr", "show", "dev", name).stdout

    pid = daemon_pid(node, name)
    node.run("wg-quick", "down", str(conf), env=qenv, timeout=60)
    wait_for(lambda: gone(node, name, pid), timeout=10, message="daemon exit after wg-quick down")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_exits_cleanly_on_signal(node_factory, env, sig) -> None:
    node = node_factory("s")
    name = ifname()
    log = start(node, name, env)
    pid = daemon_pid(node, name)
    os.kill(pid, sig)
    wait_for(lambda: gone(node, name, pid), timeout=10, message=f"daemon exit on {sig.name}")
    assert f"received {sig.name}" in log.read_text()


def test_foreground_mode(node_factory, env) -> None:
    node = node_factory("f")
    name = ifname()
    proc = node.popen("ravenvpn-wg", "-f", name, env=dict(env, LOG_LEVEL="debug"), stderr=-1)
    wait_for(lambda: node.exists(sock(name)), timeout=15, message="socket in foreground mode")
    assert proc.poll() is None
    pid = daemon_pid(node, name)
    os.kill(pid, signal.SIGTERM)
    assert proc.wait(10) == 0
    err = proc.stderr.read()
    assert "up (MTU 1420), UDP port 4500" in err and "shutting down" in err
    assert not node.exists(sock(name)) and not node.has_link(name)


def test_default_port_fallback_and_busy_explicit_port(node_factory, env) -> None:
    node = node_factory("p")
    first, second = ifname(), ifname()
    start(node, first, env)
    log = start(node, second, env)
    assert wg_dump(node, first).listen_port == 4500
    fallback = wg_dump(node, second).listen_port
    assert fallback not in (0, 4500)
    assert "4500 is busy" in log.read_text()

    res = node.run("wg", "set", second, "listen-port", "4500", check=False)
    assert res.returncode != 0 and "Address already in use" in res.stderr
    assert wg_dump(node, second).listen_port == fallback        # old sockets kept
    lines = [l for l in log.read_text().splitlines() if "listen_port" in l]
    assert len(lines) == 1 and "failed to set listen_port 4500" in lines[0]

    # the daemon stays usable; rebinding to a free port works and traffic uses it
    node.run("wg", "set", second, "listen-port", "40020")
    assert wg_dump(node, second).listen_port == 40020
    assert ":40020 " in node.run("ss", "-uln").stdout


def test_bad_invocations_one_line_exit_1(node_factory, env) -> None:
    node = node_factory("b")
    for args in ([], ["a", "b"], ["--bogus", "x"], ["waytoolonginterfacename"], ["bad/name"]):
        res = node.run("ravenvpn-wg", *args, env=env, check=False)
        assert res.returncode == 1, args
        assert res.stderr.count("\n") == 1 and res.stderr.startswith("ravenvpn-wg: "), (args, res.stderr)
        assert "Traceback" not in res.stderr

    # a bad test-only clock is reported before anything is created
    for bad in (["--test-clock"], ["--test-clock", "scale=0"], ["--test-clock=speed=2"]):
        name = ifname()
        res = node.run("ravenvpn-wg", name, *bad, env=env, check=False)
        assert res.returncode == 1 and res.stderr.count("\n") == 1, (bad, res.stderr)
        assert res.stderr.startswith("ravenvpn-wg: --test-clock"), res.stderr
        assert not node.has_link(name) and not node.exists(sock(name))

    # a bad busy-poll budget is reported before anything is created
    for bad in ("fast", "-5", "99999999"):
        name = ifname()
        res = node.run("ravenvpn-wg", name, env=dict(env, RAVENVPN_BUSY_POLL_US=bad), check=False)
        assert res.returncode == 1 and res.stderr.count("\n") == 1, (bad, res.stderr)
        assert res.stderr.startswith("ravenvpn-wg: RAVENVPN_BUSY_POLL_US must be"), res.stderr
        assert not node.has_link(name) and not node.exists(sock(name))

    # name taken by a non-TUN link: one line, nothing created, the other link untouched
    name = ifname()
    node.run("ip", "link", "add", name, "type", "veth", "peer", "name", name + "p")
    res = node.run("ravenvpn-wg", name, env=env, check=False)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "cannot create TUN device" in res.stderr
    assert not node.exists(sock(name)) and node.has_link(name)

    # a second daemon for a live interface is refused; the first keeps working
    live = ifname()
    start(node, live, env)
    res = node.run("ravenvpn-wg", live, env=env, check=False)
    assert res.returncode == 1 and "already handled by another daemon" in res.stderr
    assert res.stderr.count("\n") == 1
    assert wg_dump(node, live).listen_port == 4500

    # failure after the TUN exists (here: UDP bind refused): TUN and socket are cleaned up again
    other = ifname()
    script = textwrap.dedent(f"""\
        import sys
        from ravenvpn.device import daemon, udp
        def refuse(self, *a):
            raise OSError(13, "Permission denied")
        udp.UdpTransport.bind_default = refuse
        sys.exit(daemon.main(["{other}"]))
        """)
    res = node.run(sys.executable, "-c", script, env=dict(env, PYTHONPATH=str(ROOT)), check=False)
    assert res.returncode == 1 and res.stderr == "ravenvpn-wg: cannot open UDP socket: Permission denied\n"
    assert not node.has_link(other) and not node.exists(sock(other))


def test_stale_socket_is_replaced(node_factory, env) -> None:
    node = node_factory("x")
    name = ifname()
    # a socket file nobody listens on, as a killed daemon leaves behind
    node.run(sys.executable, "-c", f"import socket; s=socket.socket(socket.AF_UNIX); s.bind('{sock(name)}')")
    assert node.exists(sock(name))
    start(node, name, env)
    assert wg_dump(node, name).listen_port == 4500


def test_exits_when_socket_removed(node_factory, env) -> None:
    """Like wireguard-go: removing the UAPI socket stops the daemon (and so removes the interface)."""
    node = node_factory("r")
    name = ifname()
    start(node, name, env)
    pid = daemon_pid(node, name)
    node.run("rm", sock(name))
    wait_for(lambda: gone(node, name, pid), timeout=10, message="daemon exit after socket removal")


def test_two_ravenvpn_daemons_ping(node_factory, bindir, env) -> None:
    """End to end: two namespaces, ravenvpn-wg on both, IPv4 and IPv6 inside, IPv4 underlay."""
    a, b = node_factory("a"), node_factory("b")
    link = veth(a, b, "198.18.0.1/24", "198.18.0.2/24")
    ka, kb = genkey(), genkey()
    cmd = [str(bindir / "ravenvpn-wg")]
    ia = start_wg(a, cmd, "rva", ka, 40100, ["198.18.100.1/24", "fd00:100::1/64"],
                  [WgPeer(pubkey(kb), ["198.18.100.2/32", "fd00:100::2/128"], f"{link.ip_b}:40200")],
                  env={"PYTHONPATH": str(ROOT)})
    ib = start_wg(b, cmd, "rvb", kb, 40200, ["198.18.100.2/24", "fd00:100::2/64"],
                  [WgPeer(pubkey(ka), ["198.18.100.1/32", "fd00:100::1/128"])],
                  env={"PYTHONPATH": str(ROOT)})
    t0 = time.time()
    r4 = ping(a, "198.18.100.2", count=3, interval=0.2, deadline=10)
    assert r4.received == 3, r4
    r6 = ping(b, "fd00:100::1", count=3, interval=0.2, deadline=10)
    assert r6.received == 3, r6
    pa = ia.peer_status(ib.public_key)
    pb = ib.peer_status(ia.public_key)
    assert pa.latest_handshake >= int(t0) - 1 and pb.latest_handshake >= int(t0) - 1
    assert pa.rx_bytes > 0 and pa.tx_bytes > 0
    assert pb.endpoint == f"{link.ip_a}:40100"       # learned from the handshake

    # While B's link is down its TUN refuses writes (EIO): packets are dropped, the daemon carries on.
    b.run("ip", "link", "set", "dev", "rvb", "down")
    assert ping(a, "198.18.100.2", count=2, interval=0.2, wait=0.5).received == 0
    assert ib.daemon_alive()
    b.run("ip", "link", "set", "dev", "rvb", "up")
    assert ping(a, "198.18.100.2", count=3, interval=0.2, deadline=10).received >= 2

    assert ia.stop() and ib.stop()                   # link deletion ends both daemons


def _cpu_seconds(node: Node, pid: int) -> float:
    fields = node.run("cat", f"/proc/{pid}/stat").stdout.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_busy_poll_carries_traffic_then_goes_back_to_sleep(node_factory, env) -> None:
    """RAVENVPN_BUSY_POLL_US: the daemon polls without sleeping for that long after traffic, then
    sleeps in epoll again (a quiet tunnel must not keep burning a core)."""
    a, b = node_factory("a"), node_factory("b")
    tunnel = Tunnel(a, b, "ravenvpn", "ravenvpn", inner6=False,
                    env_a={"RAVENVPN_BUSY_POLL_US": "300000"}, env_b={"RAVENVPN_BUSY_POLL_US": "300000"}).up()
    result = ping(a, tunnel.b.inner4, count=20, interval=0.01, deadline=10)
    assert result.received == 20, result
    pid = tunnel.a.wg.daemon_pids[0]
    spinning = _cpu_seconds(a, pid)
    time.sleep(0.2)
    spun = _cpu_seconds(a, pid) - spinning      # still inside the 300 ms budget: polling
    time.sleep(0.5)
    quiet = _cpu_seconds(a, pid)
    time.sleep(1.0)
    slept = _cpu_seconds(a, pid) - quiet        # budget over: back to sleeping in epoll
    # A sleeping daemon spends ~0 s here; a polling one a whole core when it has one. The bound leaves
    # room for a CI machine whose two cores are shared with other test processes.
    assert spun >= 0.02, spun
    assert slept <= 0.1, slept
    assert ping(a, tunnel.b.inner4, count=3, interval=0.05, deadline=10).received == 3
    assert tunnel.down() == (True, True)


def test_wg_quick_full_tunnel_fwmark(node_factory, bindir, env) -> None:
    """AllowedIPs 0.0.0.0/0: wg-quick sets our fwmark and policy routing; only SO_MARK on our UDP sockets
    keeps the encrypted packets out of the tunnel itself."""
    a, b = node_factory("fa"), node_factory("fb")
    link = veth(a, b, "198.18.0.1/24", "198.18.0.2/24")
    ka, kb = genkey(), genkey()
    ib = start_wg(b, [str(bindir / "ravenvpn-wg")], "rvb", kb, 40200, ["198.18.100.2/24"],
                  [WgPeer(pubkey(ka), ["198.18.100.1/32"])], env={"PYTHONPATH": str(ROOT)})
    name = ifname()
    conf = a.tmpdir / f"{name}.conf"
    conf.write_text(textwrap.dedent(f"""\
        [Interface]
        PrivateKey = {ka}
        Address = 198.18.100.1/24

        [Peer]
        PublicKey = {ib.public_key}
        AllowedIPs = 0.0.0.0/0
        Endpoint = {link.ip_b}:40200
        """))
    conf.chmod(0o600)
    qenv = dict(env, WG_QUICK_USERSPACE_IMPLEMENTATION="ravenvpn-wg")
    a.run("wg-quick", "up", str(conf), env=qenv, timeout=60)
    dump = wg_dump(a, name)
    assert dump.fwmark == 51820
    assert ping(a, "198.18.100.2", count=3, interval=0.2, deadline=10).received == 3
    assert ib.peer_status(dump.public_key).endpoint == f"{link.ip_a}:{dump.listen_port}"
    pid = daemon_pid(a, name)
    a.run("wg-quick", "down", str(conf), env=qenv, timeout=60)
    wait_for(lambda: gone(a, name, pid), timeout=10, message="daemon exit after wg-quick down")


def test_udp_transport_in_netns(node_factory, env) -> None:
    """UdpTransport on the node's loopback: dual stack, batching, rebinding, IPv6-less fallback."""
    node = node_factory("u")
    script = textwrap.dedent("""\
        import errno, socket
        from ravenvpn.device import udp
        t = udp.UdpTransport()
        t.bind_default()
        assert t.port == 4500 and t.v4 and t.v6, t.port
        t.send_batch([(b"v4-%d" % i, ("127.0.0.1", 4500)) for i in range(10)] + [(b"v6", ("::1", 4500))])
        # the budget is soft: one GRO read may return several datagrams at once
        got = t.recv_batch(t.v4, 4)
        assert len(got) >= 4 and got[0][1] == ("127.0.0.1", 4500), got
        got += t.recv_batch(t.v4, 100)
        assert [d for d, _ in got] == [b"v4-%d" % i for i in range(10)], got
        assert t.recv_batch(t.v4, 100) == []
        # sizes differ: every datagram arrives as sent, in order
        t.send_batch([(b"a" * n, ("127.0.0.1", 4500)) for n in (8, 8, 8, 3, 9, 9, 2, 20)])
        got = t.recv_batch(t.v4, 100)
        assert [len(d) for d, _ in got] == [8, 8, 8, 3, 9, 9, 2, 20], got
        assert t.recv_batch(t.v6, 10) == [(b"v6", ("::1", 4500))]      # 2-tuple, no flowinfo/scope
        # bursts (back-to-back equal-size datagrams, the last shorter) past the 64-segment GSO limit
        burst = b"".join(b"%05d" % i + b"b" * 95 for i in range(150)) + b"tail"
        t.send_bursts([(memoryview(burst), 100, ("127.0.0.1", 4500)), (memoryview(b"solo"), 100, ("::1", 4500))])
        got = []
        while len(got) < 151:
            more = t.recv_batch(t.v4, 200)
            assert more, len(got)
            got += more
        assert [d for d, _ in got] == [burst[i:i + 100] for i in range(0, len(burst), 100)]
        assert t.recv_batch(t.v6, 10) == [(b"solo", ("::1", 4500))]
        old = t.sockets
        t.bind(40300)
        assert t.port == 40300 and t.retired == old and t.generation == 2
        for s in t.take_retired():
            s.close()
        t.set_fwmark(7)
        assert t.v4.getsockopt(socket.SOL_SOCKET, udp.SO_MARK) == 7
        assert t.v6.getsockopt(socket.SOL_SOCKET, udp.SO_MARK) == 7
        assert t.v4.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= udp.SOCKET_BUFFER
        t.close()

        # no IPv6 at all: carry on with IPv4 only; sends to v6 endpoints are counted as errors
        real_open = udp._open
        def no_v6(family, port, fwmark):
            if family == socket.AF_INET6:
                raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
            return real_open(family, port, fwmark)
        udp._open = no_v6
        t = udp.UdpTransport()
        t.bind_default()
        assert t.v6 is None and t.port == 4500
        t.send_batch([(b"x", ("::1", 1))])
        t.send_bursts([(memoryview(b"y" * 250), 100, ("::1", 1))])
        assert t.send_errors == 4
        print("ok")
        """)
    res = node.run(sys.executable, "-c", script, env=dict(env, PYTHONPATH=str(ROOT)))
    assert res.stdout.strip() == "ok"



def test_embedded_device_close_ends_uapi_clients_and_refuses_late_config(node_factory, env) -> None:
    """As `ravenvpn up` embeds it: close() must end open UAPI connections and no late request
    may reopen sockets, since the process goes on running."""
    node = node_factory("c")
    name = ifname()
    script = textwrap.dedent(f"""\
        import socket, time
        from ravenvpn.device.device import Device
        dev = Device("{name}")
        dev.start()
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect("{sock(name)}")
        s.sendall(b"set=1\\nlisten_port=40123\\n")   # never finished
        time.sleep(0.3)
        dev.close()
        print("client", "eof" if s.recv(100) == b"" else "data")
        try:
            dev.set_listen_port(40124)
            print("late", "reopened")
        except OSError:
            print("late", "refused")
        print("sockets", dev._udp.sockets)
        """)
    out = node.run(sys.executable, "-c", script, env=dict(env, PYTHONPATH=str(ROOT)), timeout=30).stdout
    assert "client eof" in out and "late refused" in out and "sockets []" in out, out
    assert not node.has_link(name) and not node.exists(sock(name))


def test_tun_read_after_close_is_an_oserror_the_pump_handles() -> None:
    """close() may race a last read_batch in the pump thread: that must end as the OSError the pump
    turns into "interface gone", not as another exception that kills the thread with a traceback."""
    import errno
    import io

    from ravenvpn.device.tun import TunDevice

    r, w = os.pipe()
    os.set_blocking(r, False)
    tun = object.__new__(TunDevice)     # the read path over a pipe: no TUN device needed for this
    tun.fd, tun.offload, tun.name, tun.offload_errors = r, False, "fake0", 0
    tun._reader = io.FileIO(r, "rb", closefd=False)
    try:
        os.write(w, b"\x45" + bytes(27))
        assert [len(p) for p in tun.read_batch(8)] == [28]
        assert tun.read_batch(8) == []  # drained: no exception, no packet
        tun.close()
        with pytest.raises(OSError) as info:
            tun.read_batch(8)
        assert info.value.errno == errno.EBADF
    finally:
        os.close(w)


def test_test_clock_option_is_parsed() -> None:
    from ravenvpn.device import daemon

    opts = daemon.parse_args(["--test-clock", "scale=0.05,wall-offset=-3600", "wg0"])
    assert (opts.ifname, opts.timer_scale, opts.wall_offset_ns) == ("wg0", 0.05, -3600 * 10**9)
    assert daemon.parse_args(["wg0"]) == daemon.Options("wg0")
