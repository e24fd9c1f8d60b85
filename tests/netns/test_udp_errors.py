"""Path MTU and send errors in the UDP layer (issue 14 kind 3, field case F08).

Every class of send error gets a deliberate answer (udp.UdpTransport's docstring): EMSGSIZE from a
GSO send means "these datagrams one by one" for that destination only; EAGAIN/ENOBUFS back off and
retry; unreachable networks and firewall refusals are counted and never end anything.

The namespace tests use real kernels' answers (a route with a smaller MTU, an iptables DROP in
OUTPUT, a missing route); the fake-socket tests cover orchestration the kernel cannot be made to
produce on demand (a full send buffer, a kernel without UDP GSO).
"""
from __future__ import annotations

import errno
import logging
import socket
import sys
import textwrap
from pathlib import Path

import pytest

from ravenvpn.device import udp
from tools.links import veth
from tools.node import Node
from tools.traffic import iperf3, ping
from tools.tunnel import Tunnel

ROOT = Path(__file__).resolve().parents[2]


def test_bulk_tcp_flows_over_a_path_mtu_below_the_tunnel_datagrams(node_factory) -> None:
    """F08: the route toward the peer has MTU 1300 < 1420 + 80. GSO sends fail with EMSGSIZE
    (kernel >= 6.14; EINVAL before); the datagrams must go one by one (the kernel fragments them)
    and bulk TCP keeps flowing, with GSO still on for the device. Before: ~0.1 Mbit/s."""
    a, b = node_factory("a"), node_factory("b")
    t = Tunnel(a, b, "ravenvpn", "wireguard-go", inner6=False)
    a.run("ip", "route", "replace", f"{t.link.ip_b}/32", "dev", t.link.name_a, "mtu", "1300")
    t.up()
    assert ping(a, t.b.inner4, count=2, interval=0.2, size=1300, deadline=10).received == 2
    res = iperf3(a, b, t.b.inner4, seconds=3)
    mbit = res["bits_per_second"] / 1e6
    print(f"[measure] F08 bulk TCP over a 1300-byte path, ravenvpn -> wireguard-go: {mbit:.1f} Mbit/s")
    assert mbit >= 10, res
    assert "Traceback" not in t.a.iface.log_text()


SCRIPT_PREAMBLE = """\
import errno, logging, socket, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="LOG %(levelname)s %(message)s")
from ravenvpn.device import udp
"""


def run_script(node: Node, body: str) -> str:
    res = node.run(sys.executable, "-c", SCRIPT_PREAMBLE + textwrap.dedent(body),
                   env={"PYTHONPATH": str(ROOT), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    return res.stdout


def test_emsgsize_turns_gso_off_for_that_destination_only(node_factory) -> None:
    """A real route MTU makes the kernel refuse the GSO send; every datagram still arrives, in order,
    and a destination behind a normal route keeps GSO."""
    a, b = node_factory("a"), node_factory("b")
    link = veth(a, b, "192.0.2.1/24", "192.0.2.2/24")
    b.add_addr(link.name_b, "192.0.2.3/24")
    a.run("ip", "route", "replace", "192.0.2.2/32", "dev", link.name_a, "mtu", "1300")
    out = run_script(a, f"""\
        t = udp.UdpTransport()
        t.bind(0)
        size = 1452
        burst = b"".join(b"%05d" % i + b"x" * (size - 5) for i in range(20))
        t.send_bursts([(memoryview(burst), size, ("192.0.2.2", 9999)), (memoryview(burst), size, ("192.0.2.3", 9999))])
        t.send_bursts([(memoryview(burst), size, ("192.0.2.2", 9999))])
        print("gso", t.gso, "no_gso", sorted(ip for ip, _ in t._no_gso), "errors", t.send_errors, t.error_counts)
        """)
    assert "gso True no_gso ['192.0.2.2'] errors 0" in out, out
    assert out.count("UDP GSO toward 192.0.2.2 refused") == 1, out


def test_a_firewall_refusal_is_counted_and_logged_once(node_factory) -> None:
    a, b = node_factory("a"), node_factory("b")
    veth(a, b, "192.0.2.1/24", "192.0.2.2/24")
    a.run("iptables", "-A", "OUTPUT", "-p", "udp", "--dport", "9", "-j", "DROP")
    out = run_script(a, """\
        t = udp.UdpTransport()
        t.bind(0)
        for _ in range(3):
            t.send_batch([(b"x" * 100, ("192.0.2.2", 9)), (b"y", ("192.0.2.2", 10))])
            t.send_bursts([(memoryview(b"z" * 500), 100, ("192.0.2.2", 9))])
        print("errors", t.send_errors, "forbidden", t.error_counts.get("forbidden"))
        """)
    assert "errors 18 forbidden 6" in out, out
    assert out.count("a firewall rule?") == 1, out


def test_an_unreachable_network_is_counted_and_nothing_breaks(node_factory) -> None:
    a = node_factory("a")
    a.run("ip", "link", "set", "lo", "up")
    out = run_script(a, """\
        t = udp.UdpTransport()
        t.bind(0)
        t.send_batch([(b"x", ("203.0.113.9", 51820))])
        t.send_bursts([(memoryview(b"y" * 300), 100, ("203.0.113.9", 51820))])
        t.send_batch([(b"ok", ("127.0.0.1", t.port))])
        print("errors", t.send_errors, "unreachable", t.error_counts.get("unreachable"),
              "got", t.recv_batch(t.v4, 10)[0][0])
        """)
    assert "errors 4 unreachable 2 got b'ok'" in out, out


# -- orchestration with a fake socket: errors the kernel does not produce on demand --------------

class FakeSocket:
    """Records sends; raises the queued errors first (one per call)."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = list(errors)
        self.sent: list[tuple[bytes, int | None]] = []     # (data, gso size)

    def _maybe_fail(self) -> None:
        if self.errors:
            code = self.errors.pop(0)
            raise OSError(code, "fake")

    def sendto(self, data, endpoint) -> int:
        self._maybe_fail()
        self.sent.append((bytes(data), None))
        return len(data)

    def sendmsg(self, buffers, ancillary, flags, endpoint) -> int:
        self._maybe_fail()
        gso = next((int.from_bytes(v, "little") for lvl, kind, v in ancillary if kind == udp.UDP_SEGMENT), None)
        data = b"".join(bytes(b) for b in buffers)
        self.sent.append((data, gso))
        return len(data)

    def fileno(self) -> int:
        # A real (writable) socket stands behind it, for the poll of the back-off.
        if not hasattr(self, "_real"):
            self._real = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return self._real.fileno()


def transport(sock: FakeSocket) -> udp.UdpTransport:
    t = udp.UdpTransport()
    t.v4 = sock          # type: ignore[assignment]
    t.gso = True
    return t


def datagrams_of(sent: list[tuple[bytes, int | None]], size: int) -> list[bytes]:
    out = []
    for data, gso in sent:
        step = gso or len(data)
        out += [data[i:i + step] for i in range(0, len(data), step)]
    return out


BURST = b"".join(b"%03d" % i + b"d" * 97 for i in range(10))


@pytest.mark.parametrize("code", [errno.EAGAIN, errno.ENOBUFS])
def test_a_full_buffer_backs_off_and_retries(code: int) -> None:
    sock = FakeSocket([code])
    t = transport(sock)
    t.send_bursts([(memoryview(BURST), 100, ("192.0.2.2", 1))])
    assert datagrams_of(sock.sent, 100) == [BURST[i:i + 100] for i in range(0, 1000, 100)]
    assert t.send_errors == 0 and t.error_counts == {"busy": 1}


def test_a_buffer_that_stays_full_drops_the_rest_of_the_burst_and_counts_it() -> None:
    sock = FakeSocket([errno.EAGAIN] * 50)
    t = transport(sock)
    t.send_bursts([(memoryview(BURST), 100, ("192.0.2.2", 1)), (memoryview(b"s" * 50), 100, ("192.0.2.3", 1))])
    assert t.send_errors >= 10 and t.error_counts["busy"] >= 1
    assert t._backoff_spent <= udp.BACKOFF_BUDGET + 0.05     # the pump never waits long


def test_a_kernel_without_udp_gso_turns_it_off_once_and_loses_nothing(caplog) -> None:
    sock = FakeSocket([errno.ENOPROTOOPT])
    t = transport(sock)
    with caplog.at_level(logging.INFO, logger="ravenvpn.udp"):
        t.send_bursts([(memoryview(BURST), 100, ("192.0.2.2", 1))])
        t.send_bursts([(memoryview(BURST), 100, ("192.0.2.4", 1))])
    assert t.gso is False and t.send_errors == 0
    assert datagrams_of(sock.sent, 100) == [BURST[i:i + 100] for i in range(0, 1000, 100)] * 2
    assert all(gso is None for _, gso in sock.sent)
    assert len([r for r in caplog.records if "GSO unavailable" in r.getMessage()]) == 1


@pytest.mark.parametrize("code", [errno.EMSGSIZE, errno.EINVAL, errno.EIO])
def test_a_path_that_refuses_gso_gets_single_datagrams_and_others_keep_gso(code: int) -> None:
    sock = FakeSocket([code])
    t = transport(sock)
    t.send_bursts([(memoryview(BURST), 100, ("192.0.2.2", 1))])
    first = list(sock.sent)
    assert datagrams_of(first, 100) == [BURST[i:i + 100] for i in range(0, 1000, 100)]
    assert all(gso is None for _, gso in first) and t.send_errors == 0
    sock.sent.clear()
    t.send_bursts([(memoryview(BURST), 100, ("192.0.2.2", 1)), (memoryview(BURST), 100, ("192.0.2.9", 1))])
    assert [gso for _, gso in sock.sent] == [None] * 10 + [100]     # no second refusal; others keep GSO
    assert t.gso is True


def test_einval_with_a_sticky_source_drops_the_source_and_resends() -> None:
    sock = FakeSocket([errno.EINVAL])
    t = transport(sock)
    endpoint = ("192.0.2.2", 1)
    t._learned[endpoint] = (bytes([192, 0, 2, 1]), 2)
    t._cmsgs[endpoint] = [(socket.IPPROTO_IP, 8, bytes(12))]
    t.send_batch([(b"hello", endpoint)])
    assert sock.sent == [(b"hello", None)] and t.send_errors == 0
    assert endpoint not in t._learned and t._cmsgs[endpoint] == []
    assert t.error_counts == {"einval_source": 1}


def test_datagrams_too_big_for_another_tunnel_on_the_path_are_dropped_not_fragmented(node_factory) -> None:
    """Where the path leaves through another tunnel device (TUN, WireGuard) that is too small, the
    GSO datagrams are dropped as before instead of fragmented: fragments would feed a routing loop
    between two tunnels without end (tests/netns/test_selftest_netns.py's routing loop)."""
    a = node_factory("a")
    a.run("ip", "tuntap", "add", "dev", "tun9", "mode", "tun")
    a.run("ip", "link", "set", "tun9", "up", "mtu", "1300")
    a.run("ip", "route", "add", "192.0.2.0/24", "dev", "tun9")
    out = run_script(a, """\
        t = udp.UdpTransport()
        t.bind(0)
        size = 1452
        t.send_bursts([(memoryview(b"x" * size * 20), size, ("192.0.2.2", 9999))])
        print("errors", t.send_errors, t.error_counts, "no_gso", list(t._no_gso))
        """)
    assert "errors 20 {'emsgsize_tunnel': 1} no_gso []" in out, out
    assert out.count("do not fit the tunnel device") == 1, out
