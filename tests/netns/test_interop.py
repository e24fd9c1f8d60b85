"""Interop matrix: ravenvpn's daemon (``ravenvpn-wg``) against the reference userspace implementation
(``wireguard-go``) and itself, over real namespaces, veths, TUN devices, ping and iperf3.

Every pair runs the same checks; wireguard-go <-> wireguard-go is the control that proves the tests
themselves are right. Throughput and RTT are printed (``pytest -s``), never asserted.

Per pair:
  * test_tunnel:     A initiates (seen on the underlay), ping v4/v6 inside, 3 s iperf3 TCP each way, wg show
                     counters/handshake/endpoint plausible, the underlay carries only well-formed WireGuard
                     UDP and never the inner plaintext; then both daemons restart and B initiates.
                     With and without preshared key (and with a mismatched key the tunnel must not come up).
  * test_ipv6_underlay: the tunnel over an IPv6-only underlay, inner v4 and v6.
  * test_roaming:    A's underlay address changes mid-stream: traffic resumes, B reports the new endpoint.
  * test_malformed_datagrams: garbage/wrong-size/bad-mac1/unknown-index/replayed datagrams sent to each
                     daemon are dropped (no reply, no endpoint hijack) and the tunnel keeps working.
  * test_wg_quick:   ``wg-quick up/down`` with WG_QUICK_USERSPACE_IMPLEMENTATION set to each daemon.
"""

from __future__ import annotations

import os
import struct
import subprocess
import textwrap
import time

import pytest

from ravenvpn.protocol.constants import REKEY_AFTER_TIME
from tools import wgcraft
from tools.links import veth
from tools.node import Node
from tools.process import process_alive, process_cmdline, wait_for
from tools.traffic import Capture, PingResult, capture, iperf3, ping
from tools.tunnel import IMPLS, Side, Tunnel
from tools.wg import WgPeer, format_endpoint, genpsk, keypair, wg_dump

pytestmark = pytest.mark.netns

PAIRS = [
    ("ravenvpn", "wireguard-go"),
    ("wireguard-go", "ravenvpn"),
    ("ravenvpn", "ravenvpn"),
    ("wireguard-go", "wireguard-go"),  # control
]
PAIR_IDS = [f"{a}-{b}" for a, b in PAIRS]

#: payload pattern for ``ping -p``: must be visible inside the tunnel and never on the underlay
PATTERN = "5241564e2d534543524554"  # "RAVN-SECRET"
#: what the daemon process of each implementation must be (so no test passes against the wrong daemon)
IMPL_EXECUTABLE = {"wireguard-go": "wireguard-go", "ravenvpn": "python"}
#: how much more one side may have received than the other sent, for reads racing a keepalive
COUNTER_SLACK = 1024
#: ``--test-clock`` timer scale of the rekey test: REKEY_AFTER_TIME (120 s) becomes 6 s
REKEY_SCALE = 6 / REKEY_AFTER_TIME


def say(msg: str) -> None:
    print(f"[measure] {msg}", flush=True)


def mbps(res: dict) -> str:
    return f"{res['bits_per_second'] / 1e6:.1f} Mbit/s"


def first_initiation(datagrams: list[wgcraft.UdpDatagram]) -> wgcraft.UdpDatagram | None:
    return next((d for d in datagrams if d.msg_type == wgcraft.MSG_INITIATION), None)


def check_underlay(cap: Capture, t: Tunnel, mtu: int) -> list[wgcraft.UdpDatagram]:
    """Everything on the underlay is WireGuard UDP between the two endpoints, well formed."""
    udp, other = wgcraft.split_capture(cap.packets())
    assert other == [], f"non-WireGuard packets on the underlay: {other[:5]}"
    ends = {(t.a.underlay_ip, t.a.listen_port), (t.b.underlay_ip, t.b.listen_port)}
    for d in udp:
        assert {(d.src, d.sport), (d.dst, d.dport)} == ends, f"UDP outside the tunnel: {d}"
        problem = wgcraft.wire_format_problem(d.payload, mtu)
        assert problem is None, f"malformed WireGuard message {d.src}:{d.sport} -> {d.dst}:{d.dport}: {problem}"
    return udp


def assert_initiator(udp: list[wgcraft.UdpDatagram], initiator: Side, responder: Side) -> None:
    init = first_initiation(udp)
    assert init is not None, "no handshake initiation captured"
    assert (init.src, init.sport) == (initiator.underlay_ip, initiator.listen_port), (
        f"expected {initiator.name} ({initiator.impl}) to initiate, first initiation came from {init.src}:{init.sport}"
    )
    responses = [d for d in udp if d.msg_type == wgcraft.MSG_RESPONSE]
    assert responses and (responses[0].src, responses[0].sport) == (responder.underlay_ip, responder.listen_port)
    types = {d.msg_type for d in udp}
    assert wgcraft.MSG_TRANSPORT in types


def assert_implementations(t: Tunnel) -> None:
    for side in (t.a, t.b):
        exes = side.wg.daemon_executables()
        want = IMPL_EXECUTABLE[side.impl]
        assert exes and all(os.path.basename(e).startswith(want) for e in exes), (
            f"side {side.name} should run {side.impl} ({want}), daemon executables: {exes}"
        )


def ping_ok(src: Side, dst_addr: str, what: str, count: int = 3, interval: float = 0.2) -> PingResult:
    """Ping through the tunnel; the first echo may wait for the handshake, so allow it a long -W."""
    r = ping(src.node, dst_addr, count=count, interval=interval, wait=5)
    assert r.received >= count - 1 and r.received >= 1, f"{what}: {r}\n{r.output}"
    return r


# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("psk", [False, True], ids=["no-psk", "psk"])
@pytest.mark.parametrize("impl_a,impl_b", PAIRS, ids=PAIR_IDS)
def test_tunnel(node_factory, impl_a, impl_b, psk):
    a, b = node_factory("a"), node_factory("b")
    key = genpsk() if psk else None
    t = Tunnel(a, b, impl_a, impl_b, psk=key).up()
    assert_implementations(t)
    label = f"{impl_a}(A) <-> {impl_b}(B) {'psk' if psk else 'no-psk'}"
    t0 = time.time()

    # -- A initiates; underlay carries only WireGuard, never the plaintext pattern --------------
    with capture(a, t.link.name_a) as under, capture(b, "raven0") as inner:
        r4 = ping_ok(t.a, t.b.inner4, "A->B IPv4 (A initiates)")
        r6 = ping_ok(t.a, t.b.inner6, "A->B IPv6", count=3, interval=0.1)
        rp = ping(a, t.b.inner4, count=2, interval=0.1, wait=3, size=200, pattern=PATTERN)
        assert rp.received == 2, rp.output
    udp = check_underlay(under, t, t.mtu)
    assert_initiator(udp, t.a, t.b)
    secret = bytes.fromhex(PATTERN)
    assert secret in inner.raw_bytes(), "positive control: the pattern should be visible inside the tunnel"
    assert secret not in under.raw_bytes(), "inner plaintext visible on the underlay!"
    say(f"{label}: {r4}")
    say(f"{label}: {r6}")

    # -- throughput both ways --------------------------------------------------------------------
    ab = iperf3(a, b, t.b.inner4, seconds=3)
    ba = iperf3(a, b, t.b.inner4, seconds=3, reverse=True)
    say(f"{label}: iperf3 3 s TCP A->B {mbps(ab)} (retr {ab['retransmits']}), B->A {mbps(ba)} (retr {ba['retransmits']})")

    # -- wg show: counters, handshake time, endpoints, psk ---------------------------------------
    ping_ok(t.b, t.a.inner4, "B->A after iperf", count=2, interval=0.1)
    time.sleep(0.3)
    now = time.time()
    da, db = t.a.wg.dump(), t.b.wg.dump()
    pa, pb = da.peers[t.b.public_key], db.peers[t.a.public_key]
    assert da.listen_port == t.a.listen_port and db.listen_port == t.b.listen_port
    assert da.public_key == t.a.public_key and db.public_key == t.b.public_key
    assert pa.endpoint == t.b.endpoint and pb.endpoint == t.a.endpoint
    for p in (pa, pb):
        assert t0 - 2 <= p.latest_handshake <= now + 2, f"implausible latest handshake {p.latest_handshake} (now {now:.0f})"
        assert p.preshared_key == key
    assert pa.tx_bytes >= ab["sent_bytes"], f"A tx {pa.tx_bytes} < iperf bytes sent {ab['sent_bytes']}"
    assert pb.rx_bytes >= ab["received_bytes"], f"B rx {pb.rx_bytes} < iperf bytes received {ab['received_bytes']}"
    assert pb.tx_bytes >= ba["sent_bytes"], f"B tx {pb.tx_bytes} < iperf bytes sent {ba['sent_bytes']}"
    assert pa.rx_bytes >= ba["received_bytes"], f"A rx {pa.rx_bytes} < iperf bytes received {ba['received_bytes']}"
    assert pb.rx_bytes <= pa.tx_bytes + COUNTER_SLACK, f"B received {pb.rx_bytes} > A sent {pa.tx_bytes}"
    assert pa.rx_bytes <= pb.tx_bytes + COUNTER_SLACK, f"A received {pa.rx_bytes} > B sent {pb.tx_bytes}"
    say(f"{label}: wg show A tx {pa.tx_bytes} rx {pa.rx_bytes}, B tx {pb.tx_bytes} rx {pb.rx_bytes}")

    # -- restart both daemons (deleting the link must make them exit); now B initiates -----------
    assert t.restart() == (True, True), "a daemon did not exit after its link was deleted"
    with capture(a, t.link.name_a) as under2:
        r = ping_ok(t.b, t.a.inner4, "B->A after restart (B initiates)")
        r6 = ping_ok(t.b, t.a.inner6, "B->A IPv6 after restart", count=3, interval=0.1)
    assert_initiator(check_underlay(under2, t, t.mtu), t.b, t.a)
    say(f"{label}: after restart, B initiates: {r}; {r6}")

    if psk:
        # -- a mismatched preshared key must not produce a working tunnel ------------------------
        t.stop(t.b)
        t.start(t.b, psk=genpsk())
        bad = ping(b, t.a.inner4, count=2, interval=0.5, wait=1)
        assert bad.received == 0, "tunnel came up although the preshared keys differ"
        assert t.b.wg.peer_status(t.a.public_key).latest_handshake == 0


@pytest.mark.parametrize("impl_b", ["wireguard-go", "ravenvpn"])
def test_traffic_across_rekeys(node_factory, impl_b):
    """ravenvpn initiates and rekeys every ~6 s (the test-only `--test-clock scale=0.05` makes every
    protocol timer 20 times shorter: the protocol's 120 s is too slow for CI) while pings and TCP run;
    the peer - a real wireguard-go, too - must follow every new session."""
    a, b = node_factory("a"), node_factory("b")
    t = Tunnel(a, b, "ravenvpn", impl_b, cmd_a=IMPLS["ravenvpn"] + ["--test-clock", f"scale={REKEY_SCALE}"]).up()
    assert_implementations(t)
    # capture only handshake initiations: a full capture of the TCP run would be hundreds of MB
    with capture(a, t.link.name_a, bpf_filter="udp and udp[8] = 1") as under:
        first = ping_ok(t.a, t.b.inner4, "A->B (A initiates)")
        hs_first = t.b.wg.peer_status(t.a.public_key).latest_handshake
        steady = ping(a, t.b.inner4, count=200, interval=0.1, wait=2)        # 20 s: three rekeys
        tcp = iperf3(a, b, t.b.inner4, seconds=3)
    initiations = [d for d in wgcraft.split_capture(under.packets())[0] if d.msg_type == wgcraft.MSG_INITIATION]
    assert all((d.src, d.sport) == (t.a.underlay_ip, t.a.listen_port) for d in initiations)
    hs_last = t.b.wg.peer_status(t.a.public_key).latest_handshake
    say(f"ravenvpn(A) <-> {impl_b}(B) across rekeys: {len(initiations)} handshakes, {steady}, "
        f"iperf3 {mbps(tcp)}")
    assert len(initiations) >= 4, f"expected a rekey every ~6 s, saw {len(initiations)} initiations"
    assert hs_last > hs_first, "the peer never completed a second handshake"
    assert steady.received >= 196, f"pings lost across rekeys: {steady}"
    assert tcp["bits_per_second"] > 0 and first.received


@pytest.mark.parametrize("impl_b", ["wireguard-go", "ravenvpn"])
def test_restart_back_in_time_is_refused(node_factory, impl_b):
    """A restarted ravenvpn whose wall clock is an hour behind (the test-only `--test-clock
    wall-offset=-3600`; the host clock is untouched) sends initiations with an older TAI64N
    timestamp than the peer last accepted: the peer must refuse them as replays (whitepaper §5.1),
    and take the same daemon restarted on the real clock."""
    a, b = node_factory("a"), node_factory("b")
    t = Tunnel(a, b, "ravenvpn", impl_b, inner6=False).up()
    ping_ok(t.a, t.b.inner4, "A->B before the restart")
    hs_first = t.b.wg.peer_status(t.a.public_key).latest_handshake
    real_clock = t.a.impl_cmd
    t.stop(t.a)
    t.a.impl_cmd = real_clock + ["--test-clock", "wall-offset=-3600"]
    t.start(t.a)
    late = ping(a, t.b.inner4, count=3, interval=0.5, wait=2)
    assert late.received == 0, f"the peer accepted an initiation from an hour ago: {late}"
    assert t.b.wg.peer_status(t.a.public_key).latest_handshake == hs_first
    t.stop(t.a)
    t.a.impl_cmd = real_clock
    t.start(t.a)
    ping_ok(t.a, t.b.inner4, "A->B after a restart on the real clock")
    assert t.b.wg.peer_status(t.a.public_key).latest_handshake >= hs_first


@pytest.mark.parametrize("impl_a,impl_b", PAIRS, ids=PAIR_IDS)
def test_ipv6_underlay(node_factory, impl_a, impl_b):
    a, b = node_factory("a"), node_factory("b")
    t = Tunnel(a, b, impl_a, impl_b, underlay6=True).up()
    assert_implementations(t)
    label = f"{impl_a}(A) <-> {impl_b}(B) v6 underlay"
    with capture(b, t.link.name_b) as under:
        r4 = ping_ok(t.a, t.b.inner4, "A->B inner IPv4 over IPv6")
        r6 = ping_ok(t.b, t.a.inner6, "B->A inner IPv6 over IPv6", count=3, interval=0.1)
    udp = check_underlay(under, t, t.mtu)
    assert_initiator(udp, t.a, t.b)
    assert all(":" in d.src for d in udp)
    assert t.a.wg.peer_status(t.b.public_key).endpoint == f"[{t.b.underlay_ip}]:{t.b.listen_port}"
    assert t.b.wg.peer_status(t.a.public_key).endpoint == f"[{t.a.underlay_ip}]:{t.a.listen_port}"
    perf = iperf3(a, b, t.b.inner6, seconds=1)
    say(f"{label}: {r4}; {r6}; iperf3 1 s TCP over v6/v6 A->B {mbps(perf)}")


@pytest.mark.parametrize("impl_a,impl_b", PAIRS, ids=PAIR_IDS)
def test_roaming(node_factory, impl_a, impl_b):
    """A moves to another network mid-stream (new underlay address 198.18.1.1 on a second link, the old
    link goes down); B must follow from authenticated packets alone and report the new endpoint.

    Why a second link rather than swapping the address on the same veth: wireguard-go (0.0.20220316)
    pins the source address per peer ("sticky sockets") and only forgets it when the route to the peer
    changes interface, or on EINVAL; current kernels answer a vanished source address with ENETUNREACH,
    so wireguard-go as the *roaming* side would never move. A change of network is also what roaming is.
    """
    a, b = node_factory("a"), node_factory("b")
    t = Tunnel(a, b, impl_a, impl_b, inner6=False).up()
    assert_implementations(t)
    second = veth(a, b, "198.18.1.1/24", "198.18.1.2/24", name_a="to-b2", name_b="to-a2")
    ping_ok(t.a, t.b.inner4, "before roaming")
    assert t.b.wg.peer_status(t.a.public_key).endpoint == t.a.endpoint
    count, interval = 40, 0.1
    stream = a.popen("ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1", t.b.inner4,
                     stdout=subprocess.PIPE)
    time.sleep(1.0)
    # B's address stays the same; A now reaches it through the new network only
    a.add_route(f"{t.b.underlay_ip}/32", via=second.ip_b, dev=second.name_a)
    a.run("ip", "link", "set", "dev", t.link.name_a, "down")
    out, _ = stream.communicate(timeout=count * interval + 15)
    seqs = [int(x.split("icmp_seq=")[1].split()[0]) for x in out.splitlines() if "icmp_seq=" in x and "time=" in x]
    assert [s for s in seqs if s > count * 0.75], f"no replies in the last quarter, after the move:\n{out}"
    new_ep = format_endpoint(second.ip_a, t.a.listen_port)
    ep = wait_for(lambda: (e := t.b.wg.peer_status(t.a.public_key).endpoint) == new_ep and e, timeout=5,
                  message=f"B to report A's new endpoint {new_ep}")
    back = ping_ok(t.b, t.a.inner4, "B->A after roaming", count=3, interval=0.1)
    say(f"{impl_a}(A) <-> {impl_b}(B) roaming: {len(seqs)}/{count} echoes answered across the move, "
        f"B now sends to {ep}; {back}")


def _barrage(
    attacker: Node, target: Side, peer: Side, ghost: tuple[str, str], capture_udp: list[wgcraft.UdpDatagram]
) -> str:
    """Throw malformed datagrams at ``target`` from a fresh socket on ``attacker``; returns a summary."""
    # the receiver index ``target`` uses for ``peer``, learnt from the peer's transport packets to it
    to_target = [d for d in capture_udp
                 if d.msg_type == wgcraft.MSG_TRANSPORT and (d.dst, d.dport) == (target.underlay_ip, target.listen_port)]
    assert to_target, "no transport message to the target captured"
    (known_index,) = struct.unpack_from("<I", to_target[0].payload, 4)
    tpub = wgcraft.b64(target.public_key)

    bad = wgcraft.malformed_datagrams(tpub, known_index)
    ghost_priv, ghost_pub = ghost
    unknown_priv, _ = keypair()
    good = wgcraft.initiation(wgcraft.b64(ghost_priv), tpub, sender_index=0x1234ABCD)
    bad_mac1 = bytearray(wgcraft.initiation(wgcraft.b64(ghost_priv), tpub, sender_index=0x1234ABCE).message)
    bad_mac1[116 + 3] ^= 0x40
    bad["initiation-valid-but-bad-mac1"] = bytes(bad_mac1)
    bad["initiation-from-unknown-key"] = wgcraft.initiation(wgcraft.b64(unknown_priv), tpub, 0x1234ABCF).message
    bad["initiation-for-another-responder"] = wgcraft.initiation(
        wgcraft.b64(ghost_priv), wgcraft.b64(keypair()[1]), 0x1234ABD0).message

    ex = wgcraft.udp_exchange(attacker, target.underlay_ip, target.listen_port, list(bad.values()), listen=0.7)
    assert ex.replies == [], f"{target.impl} answered malformed input: {[(len(d), d[:4].hex()) for d, _, _ in ex.replies]}"

    # positive control: a correct initiation from a configured (ghost) peer is answered...
    ex2 = wgcraft.udp_exchange(attacker, target.underlay_ip, target.listen_port, [good.message], listen=5.0,
                               until_replies=1)
    valid = [d for d, _, _ in ex2.replies if wgcraft.is_valid_response(d, good, wgcraft.b64(ghost_pub))]
    assert len(valid) == 1, f"{target.impl} did not answer a valid initiation (control): {ex2.replies}"
    # ...but the same initiation replayed (same timestamp) is not, nor are replayed transport packets
    replays = [good.message, to_target[0].payload, to_target[-1].payload]
    ex3 = wgcraft.udp_exchange(attacker, target.underlay_ip, target.listen_port, replays, listen=0.7)
    assert ex3.replies == [], f"{target.impl} answered a replay: {ex3.replies}"
    # a replayed authentic transport packet must not move the peer's endpoint to the attacker
    ep = target.wg.peer_status(peer.public_key).endpoint
    assert ep == peer.endpoint, f"{target.impl} moved {peer.name}'s endpoint to {ep} after a replay"
    assert target.wg.daemon_alive()
    return f"{len(bad)} malformed + 3 replays dropped, valid control answered"


@pytest.mark.parametrize("impl_a,impl_b", PAIRS, ids=PAIR_IDS)
def test_malformed_datagrams(node_factory, impl_a, impl_b):
    a, b = node_factory("a"), node_factory("b")
    t = Tunnel(a, b, impl_a, impl_b, inner6=False)
    ghosts = {}
    for side in (t.a, t.b):
        # a configured peer nobody runs: lets the attacker build a *valid* initiation as a control
        ghosts[side.name] = keypair()
        t.start(side, extra_peers=[WgPeer(ghosts[side.name][1], ["10.99.0.77/32"])])
    assert_implementations(t)
    with capture(a, t.link.name_a) as under:
        ping_ok(t.a, t.b.inner4, "A->B before barrage", count=2, interval=0.1)
        ping_ok(t.b, t.a.inner4, "B->A before barrage", count=2, interval=0.1)
    udp = check_underlay(under, t, t.mtu)
    summary_b = _barrage(a, t.b, t.a, ghosts["B"], udp)  # attacker sits on A's host, B is the target
    summary_a = _barrage(b, t.a, t.b, ghosts["A"], udp)
    r1 = ping_ok(t.a, t.b.inner4, "A->B after barrage", count=3, interval=0.1)
    r2 = ping_ok(t.b, t.a.inner4, "B->A after barrage", count=3, interval=0.1)
    assert r1.received == 3 and r2.received == 3
    say(f"{impl_a}(A) <-> {impl_b}(B) malformed: B: {summary_b}; A: {summary_a}; tunnel still up: {r1}")


@pytest.mark.parametrize("impl", list(IMPLS))
def test_wg_quick(node_factory, impl):
    """``wg-quick up`` uses WG_QUICK_USERSPACE_IMPLEMENTATION (no kernel module here) and ``down`` deletes
    the link, which must make the daemon exit and remove its socket."""
    a, b = node_factory("a"), node_factory("b")
    t = Tunnel(a, b, impl, "wireguard-go", inner6=False)
    t.start(t.b)
    conf = a.tmpdir / "raven0.conf"
    conf.write_text(textwrap.dedent(f"""\
        [Interface]
        PrivateKey = {t.a.private_key}
        ListenPort = {t.a.listen_port}
        Address = {t.a.inner[0]}
        MTU = 1420

        [Peer]
        PublicKey = {t.b.public_key}
        AllowedIPs = {t.b.inner4}/32
        Endpoint = {t.b.endpoint}
        """))
    conf.chmod(0o600)
    env = {**os.environ, "WG_QUICK_USERSPACE_IMPLEMENTATION": " ".join(IMPLS[impl])}
    env.pop("WG_PROCESS_FOREGROUND", None)
    a.run("wg-quick", "up", str(conf), env=env, timeout=60)
    info = a.run("ip", "-d", "-j", "link", "show", "raven0").stdout
    assert '"info_kind":"tun"' in info.replace(" ", ""), "wg-quick did not use the userspace implementation"
    daemons = [p for p in a.pids() if "raven0" in process_cmdline(p)]
    assert daemons, "no daemon process for raven0"
    exes = [os.readlink(f"/proc/{p}/exe") for p in daemons]
    assert all(os.path.basename(e).startswith(IMPL_EXECUTABLE[impl]) for e in exes), exes
    r = ping_ok(t.a, t.b.inner4, "A (wg-quick) -> B")
    assert wg_dump(a, "raven0").peers[t.b.public_key].latest_handshake > 0
    a.run("wg-quick", "down", str(conf), env=env, timeout=60)
    wait_for(lambda: not any(process_alive(p) for p in daemons), timeout=10,
             message=f"{impl} to exit after wg-quick down")
    assert not a.exists("/run/wireguard/raven0.sock")
    say(f"wg-quick with {impl}: {r}")
