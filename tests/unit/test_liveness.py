"""The liveness state machine (ravenvpn.raven.liveness) on a simulated LAN with an injected clock.

Real cryptography and the real message formats; only the network is simulated (a list of in-flight
datagrams delivered after a step, with loss and partitions), so timings are exact and seeds fixed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

import pytest

from ravenvpn.protocol import keys
from ravenvpn.raven.liveness import wire
from ravenvpn.raven.liveness.machine import (CLAIM_STALE, DEAD_AFTER, SETTLE, Candidate, DomainConfig,
                                             Liveness, decide, PeerState)

PORT = wire.LIVENESS_PORT
STEP = 0.01
GW = "gw-hangzhou"
IPS = {"hz-1": "192.168.1.11", "hz-2": "192.168.1.12", "hz-3": "192.168.1.13"}
PRIV = {n: keys.generate_private() for n in ("hz-1", "hz-2")}
CANDS = tuple(Candidate(n, IPS[n], keys.public_from_private(PRIV[n])) for n in ("hz-1", "hz-2"))
ATTACKER = "192.168.1.66"


def config(node: str, candidates: tuple[Candidate, ...] = CANDS,
           remote: tuple[tuple[str, tuple[Candidate, ...]], ...] = ()) -> DomainConfig:
    return DomainConfig(GW, node, candidates, frozenset(IPS.values()), remote)


@dataclass
class Net:
    """Nodes by IP; datagrams sent in one step arrive at the next; ``drop(src, dst)`` loses one."""

    now: float = 100.0
    nodes: dict[str, Liveness] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    flight: list[tuple[bytes, str, str]] = field(default_factory=list)
    drop: Callable[[str, str], bool] = lambda s, d: False
    sniffed: list[tuple[bytes, str, str]] = field(default_factory=list)
    history: list[tuple[float, str, bool]] = field(default_factory=list)

    def add(self, name: str) -> Liveness:
        node = Liveness(config(name), PRIV.get(name), self.now)
        self.nodes[IPS[name]] = node
        self.names[IPS[name]] = name
        return node

    def kill(self, name: str) -> None:
        del self.nodes[IPS[name]]

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now += STEP
            flight, self.flight = self.flight, []
            for data, src, dst in flight:
                self.sniffed.append((data, src, dst))
                if dst in self.nodes and not self.drop(src, dst):
                    for out, addr in self.nodes[dst].receive(data, (src, PORT), self.now):
                        self.flight.append((out, dst, addr[0]))
            for ip, node in list(self.nodes.items()):
                before = node.local_active
                for out, addr in node.tick(self.now):
                    self.flight.append((out, ip, addr[0]))
                if node.local_active != before:
                    self.history.append((self.now, self.names[ip], node.local_active))

    def active(self) -> list[str]:
        return sorted(self.names[ip] for ip, n in self.nodes.items() if n.local_active)

    def view(self, name: str) -> str | None:
        return self.nodes[IPS[name]].view().active_of(GW)


def domain() -> Net:
    net = Net()
    for name in IPS:
        net.add(name)
    net.run(SETTLE + 0.5)
    return net


def test_the_preferred_candidate_becomes_active_after_settling() -> None:
    net = domain()
    assert net.active() == ["hz-1"]
    assert {n: net.view(n) for n in IPS} == {"hz-1": "hz-1", "hz-2": "hz-1", "hz-3": "hz-1"}
    [(at, who, active)] = net.history
    assert who == "hz-1" and active and 100.0 + SETTLE <= at <= 100.0 + SETTLE + 0.5


def test_a_dead_active_is_replaced_within_one_second_and_members_follow() -> None:
    net = domain()
    net.kill("hz-1")
    t0 = net.now
    while net.view("hz-3") != "hz-2":
        net.run(STEP)
        assert net.now - t0 <= 1.0, "member still follows the dead gateway after 1 s"
    assert net.active() == ["hz-2"]
    assert net.now - t0 <= DEAD_AFTER + 0.1


def test_the_returning_old_active_does_not_take_over() -> None:
    net = domain()
    net.kill("hz-1")
    net.run(1.5)
    net.add("hz-1")           # restarted: new keys for its sessions, term forgotten
    net.run(5.0)
    assert net.active() == ["hz-2"]
    assert [h[1:] for h in net.history if h[1] == "hz-1"] == [("hz-1", True)]   # only its first start
    assert {n: net.view(n) for n in IPS} == {"hz-1": "hz-2", "hz-2": "hz-2", "hz-3": "hz-2"}


def test_no_flapping_with_ten_percent_loss() -> None:
    rng = random.Random(7)
    net = domain()
    net.drop = lambda s, d: rng.random() < 0.10
    net.run(60.0)
    assert net.active() == ["hz-1"]
    assert len(net.history) == 1, net.history


def test_our_own_stall_is_not_their_death() -> None:
    """A watcher that did not run for 2 s (CPU starved) does not conclude the active died."""
    net = domain()
    standby = net.nodes[IPS["hz-2"]]
    del net.nodes[IPS["hz-2"]]          # not ticked, receives nothing
    net.run(2.0)
    net.nodes[IPS["hz-2"]] = standby
    net.run(0.5)
    assert net.active() == ["hz-1"]


def test_partition_between_candidates_then_heal_leaves_exactly_one_active() -> None:
    net = domain()
    pair = {IPS["hz-1"], IPS["hz-2"]}
    net.drop = lambda s, d: {s, d} == pair
    net.run(3.0)
    assert net.active() == ["hz-1", "hz-2"]            # both sides of the partition serve
    assert net.view("hz-3") == "hz-2"                  # members follow the higher term
    net.drop = lambda s, d: False
    net.run(2.0)
    assert net.active() == ["hz-2"]
    assert {n: net.view(n) for n in IPS} == {"hz-1": "hz-2", "hz-2": "hz-2", "hz-3": "hz-2"}
    net.run(10.0)
    assert net.active() == ["hz-2"]


def test_planned_resign_hands_over_at_once() -> None:
    net = domain()
    a = net.nodes[IPS["hz-1"]]
    for out, addr in a.resign(net.now):
        net.flight.append((out, IPS["hz-1"], addr[0]))
    t0 = net.now
    net.run(0.05)
    assert net.active() == ["hz-2"] and net.view("hz-3") == "hz-2", net.now - t0
    net.run(5.0)
    assert net.active() == ["hz-2"]                    # the resigned one never claims again


def _inject(net: Net, data: bytes, src: str, dst: str) -> None:
    net.flight.append((data, src, dst))


def test_forged_and_replayed_messages_change_nothing() -> None:
    net = domain()
    member = net.nodes[IPS["hz-3"]]
    recorded = [d for d in net.sniffed if d[0][0] == wire.STATE and d[2] == IPS["hz-3"]]
    assert recorded
    rejected = member.rejected
    # 1. replay: every STATE hz-3 received so far, again, and from hz-2's address too
    for data, src, dst in recorded:
        _inject(net, data, src, dst)
        _inject(net, data, IPS["hz-2"], dst)
    # 2. forgery: a STATE "hz-2 is active, term 99" under a key the attacker made up
    fake = wire.SessionKeys(bytes(32), bytes(32))
    _inject(net, wire.make_state(1, 10**6, fake, wire.FLAG_ACTIVE, 99), IPS["hz-2"], IPS["hz-3"])
    # 3. a WELCOME nobody asked for, and garbage
    _inject(net, wire.make_welcome(5, bytes(16), fake), IPS["hz-2"], IPS["hz-3"])
    _inject(net, b"\x03" + bytes(40), IPS["hz-2"], IPS["hz-3"])
    _inject(net, b"", IPS["hz-2"], IPS["hz-3"])
    # 4. a CLAIM on the LAN (claims are only accepted from the tunnel)
    _inject(net, wire.make_claim(GW, "hz-2", wire.FLAG_ACTIVE, 99), IPS["hz-2"], IPS["hz-3"])
    net.run(0.05)
    assert member.rejected - rejected >= len(recorded) * 2 + 5
    net.run(3.0)
    assert net.active() == ["hz-1"] and net.view("hz-3") == "hz-1"
    assert len(net.history) == 1


def test_hello_only_from_domain_nodes_and_rate_limited() -> None:
    net = domain()
    active = net.nodes[IPS["hz-1"]]
    hello, _eph, _nonce = wire.make_hello(wire.gateway_id(GW))
    assert active.receive(hello, (ATTACKER, PORT), net.now) == []          # not a node of the domain
    other, _e, _n = wire.make_hello(wire.gateway_id("gw-qingdao"))
    assert active.receive(other, (IPS["hz-3"], PORT), net.now) == []       # another domain's HELLO
    answered = sum(bool(active.receive(wire.make_hello(wire.gateway_id(GW))[0], (IPS["hz-3"], 40000), net.now))
                   for _ in range(100))
    assert 1 <= answered <= 10                                             # burst, then the rate limit


def test_a_welcome_from_a_host_without_the_key_does_not_verify() -> None:
    gid = wire.gateway_id(GW)
    hello, eph, nonce = wire.make_hello(gid)
    h = wire.parse_hello(hello)
    impostor = keys.generate_private()
    from ravenvpn.protocol import crypto
    ks = wire.welcome_keys(crypto.dh(impostor, h.ephemeral), gid, CANDS[0].public_key, h.ephemeral, h.nonce,
                           bytes(16))
    with pytest.raises(wire.WireError):
        wire.open_welcome(wire.make_welcome(1, bytes(16), ks), eph, CANDS[0].public_key, gid, nonce)
    real = wire.welcome_keys(crypto.dh(PRIV["hz-1"], h.ephemeral), gid, CANDS[0].public_key, h.ephemeral,
                             h.nonce, bytes(16))
    assert wire.open_welcome(wire.make_welcome(1, bytes(16), real), eph, CANDS[0].public_key, gid, nonce)[1] == real


# -------------------------------------------------------------------------------- remote holders

QD = (Candidate("qd-1", "192.168.2.11", bytes(32)), Candidate("qd-2", "192.168.2.12", bytes(32)))


def remote_node() -> Liveness:
    return Liveness(config("hz-1", remote=(("gw-qingdao", QD),)), PRIV["hz-1"], 0.0)


def claim(node: str, term: int, flags: int = wire.FLAG_ACTIVE) -> bytes:
    return wire.make_claim("gw-qingdao", node, flags, term)


def test_remote_holder_moves_on_a_better_claim_only() -> None:
    r = remote_node()
    r.receive(claim("qd-1", 1), ("192.168.2.11", PORT), 1.0, via_tunnel=True)
    assert r.view().active_of("gw-qingdao") == "qd-1"
    r.receive(claim("qd-2", 1), ("192.168.2.12", PORT), 1.5, via_tunnel=True)   # same term, later in order
    assert r.view().active_of("gw-qingdao") == "qd-1"
    for t in range(20):                                  # both keep claiming (a partition): no alternation
        r.receive(claim("qd-1", 1), ("192.168.2.11", PORT), 2.0 + t, via_tunnel=True)
        r.receive(claim("qd-2", 1), ("192.168.2.12", PORT), 2.1 + t, via_tunnel=True)
        assert r.view().active_of("gw-qingdao") == "qd-1"
    r.receive(claim("qd-2", 2), ("192.168.2.12", PORT), 30.0, via_tunnel=True)   # a takeover: higher term
    assert r.view().active_of("gw-qingdao") == "qd-2"
    r.receive(claim("qd-1", 1), ("192.168.2.11", PORT), 30.5, via_tunnel=True)
    assert r.view().active_of("gw-qingdao") == "qd-2"


def test_remote_holder_forgets_a_silent_or_resigned_holder() -> None:
    r = remote_node()
    r.receive(claim("qd-2", 5), ("192.168.2.12", PORT), 1.0, via_tunnel=True)
    r.receive(claim("qd-1", 1), ("192.168.2.11", PORT), 2.0, via_tunnel=True)    # all restarted: term 1
    assert r.view().active_of("gw-qingdao") == "qd-2"
    r.receive(claim("qd-1", 1), ("192.168.2.11", PORT), 1.0 + CLAIM_STALE + 0.1, via_tunnel=True)
    assert r.view().active_of("gw-qingdao") == "qd-1"
    r.receive(claim("qd-1", 1, wire.FLAG_ACTIVE | wire.FLAG_RESIGN), ("192.168.2.11", PORT), 5.0, via_tunnel=True)
    r.receive(claim("qd-2", 1), ("192.168.2.12", PORT), 5.01, via_tunnel=True)
    assert r.view().active_of("gw-qingdao") == "qd-2"


def test_claims_need_the_tunnel_and_the_claimed_nodes_address() -> None:
    r = remote_node()
    r.receive(claim("qd-1", 9), ("192.168.2.11", PORT), 1.0, via_tunnel=False)   # from the LAN
    r.receive(claim("qd-1", 9), ("192.168.2.12", PORT), 1.0, via_tunnel=True)    # qd-2 speaking for qd-1
    r.receive(claim("qd-9", 9), ("192.168.2.11", PORT), 1.0, via_tunnel=True)    # no such candidate
    r.receive(claim("qd-1", 9)[:-1], ("192.168.2.11", PORT), 1.0, via_tunnel=True)
    assert r.view().active_of("gw-qingdao") is None and r.rejected == 4


def test_decide_never_makes_a_non_candidate_active() -> None:
    d = decide(("hz-1", "hz-2"), "hz-3", False, False, 0, {"hz-1": PeerState(), "hz-2": PeerState()}, 0, True, None)
    assert not d.local_active and d.active is None


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x04" + bytes(12), wire.make_claim("g", "n", 1, 2) + b"x",
                                  b"\x04\x00\x00\x00\x01" + bytes(8) + b"\x05ab"])
def test_malformed_claims_are_wire_errors(data: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.parse_claim(data)


def _isolate(net: Net, name: str) -> None:
    ip = IPS[name]
    net.drop = lambda s, d: ip in (s, d)


def test_a_cut_off_standby_does_not_claim_and_a_cut_off_active_steps_down() -> None:
    net = domain()
    _isolate(net, "hz-2")
    net.run(3.0)
    assert net.active() == ["hz-1"]                    # the standby heard nobody: no claim
    _isolate(net, "hz-1")
    net.run(3.0)
    assert net.active() == ["hz-2"]                    # the active heard nobody: stepped down; hz-2 took over
    net.drop = lambda s, d: False
    net.run(3.0)
    assert net.active() == ["hz-2"] and net.view("hz-3") == "hz-2"


def test_a_flapping_link_moves_the_role_at_most_once() -> None:
    net = domain()
    for i in range(15):                                # the active's link: down 2 s, up 2 s, for 60 s
        _isolate(net, "hz-1")
        net.run(2.0)
        net.drop = lambda s, d: False
        net.run(2.0)
    changes = [h for h in net.history if h[0] > 100.0 + SETTLE + 0.1]
    assert net.active() == ["hz-2"]
    assert len(changes) <= 2, changes                  # hz-1 stepped down, hz-2 took over; nothing after


def test_a_domain_of_two_candidates_and_no_member_still_fails_over() -> None:
    net = Net()
    for name in ("hz-1", "hz-2"):
        node = Liveness(DomainConfig(GW, name, CANDS, frozenset({IPS["hz-1"], IPS["hz-2"]})), PRIV[name], net.now)
        net.nodes[IPS[name]] = node
        net.names[IPS[name]] = name
    net.run(SETTLE + 0.5)
    assert net.active() == ["hz-1"]
    net.kill("hz-1")
    net.run(1.0)
    assert net.active() == ["hz-2"]


def test_heard_messages_are_authenticated_and_not_replayable() -> None:
    net = domain()
    active = net.nodes[IPS["hz-1"]]
    heard = [d for d in net.sniffed if d[0][0] == wire.HEARD and d[2] == IPS["hz-1"] and d[1] == IPS["hz-3"]]
    assert heard
    before = active.rejected
    for data, src, _dst in heard[:5]:
        assert active.receive(data, (src, PORT), net.now) == []
    fake = wire.SessionKeys(bytes(32), bytes(32), bytes(32))
    active.receive(wire.make_heard(1, 10**6, fake), (IPS["hz-3"], PORT), net.now)
    assert active.rejected - before == 6


def test_the_service_on_real_sockets_fails_over_on_loopback() -> None:
    """The UDP service (threads, sockets, IP_PKTINFO) around the machine: three nodes on 127.0.0.x."""
    import socket as _socket
    import threading as _threading
    import time as _time
    from ravenvpn.raven.liveness.service import LivenessService

    probe = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    ips = {"hz-1": "127.0.0.11", "hz-2": "127.0.0.12", "hz-3": "127.0.0.13"}
    cands = tuple(Candidate(n, ips[n], keys.public_from_private(PRIV[n])) for n in ("hz-1", "hz-2"))
    changed = _threading.Event()

    def start(name: str) -> LivenessService:
        cfg = DomainConfig(GW, name, cands, frozenset(ips.values()), port=port, address=ips[name])
        return LivenessService(cfg, PRIV.get(name), "rvtnonexist0", lambda view: changed.set())

    services = {n: start(n) for n in ips}
    try:
        def wait(pred: Callable[[], bool], timeout: float) -> bool:
            end = _time.monotonic() + timeout
            while _time.monotonic() < end:
                if pred():
                    return True
                _time.sleep(0.02)
            return False

        assert wait(lambda: services["hz-3"].view().active_of(GW) == "hz-1", 5.0)
        assert services["hz-1"].view().local_active and not services["hz-2"].view().local_active
        services.pop("hz-1").close()
        t0 = _time.monotonic()
        assert wait(lambda: services["hz-3"].view().active_of(GW) == "hz-2", 5.0)
        print(f"\nloopback failover seen by the member after {_time.monotonic() - t0:.2f} s")
        assert changed.is_set()
    finally:
        for s in services.values():
            s.close()


def test_a_busy_liveness_port_is_one_line_naming_it() -> None:
    import socket as _socket
    from ravenvpn.errors import RavenError
    from ravenvpn.raven.liveness.service import LivenessService

    holder = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    holder.bind(("127.0.0.21", 0))
    port = holder.getsockname()[1]
    try:
        cfg = DomainConfig(GW, "hz-3", CANDS, frozenset({"127.0.0.21"}), port=port, address="127.0.0.21")
        with pytest.raises(RavenError) as err:
            LivenessService(cfg, None, "raven0", lambda view: None)
        assert f"liveness UDP port 127.0.0.21:{port}" in str(err.value) and "\n" not in str(err.value)
        assert "--liveness-port" in str(err.value)
    finally:
        holder.close()
