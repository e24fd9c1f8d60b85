"""An impaired underlay (tools/impair.py + iptables statistic loss): data arrives intact, and the replay
window admits reordered messages and drops duplicates.

The live test sends a small file (the 5 MB runs with figures, against wireguard-go and a plain tunnel,
are ``python3 -m benchmarks.reliability --only impair``); a loopback test checks that the relay applies
exactly the impairment it is configured with; a simulation of two sans-I/O cores over the same loss
checks that rekeys never hold data back; the unit test replays real transport messages reordered and
duplicated into the sans-I/O core, where every delivery and every drop can be counted exactly.
"""
from __future__ import annotations

import random

from benchmarks import fuzz
from benchmarks import reliability as R


def test_replay_window_admits_reordered_drops_duplicates_and_too_old() -> None:
    world = fuzz.World()
    rng = random.Random(3)
    pkts, msgs = world.genuine("a", 8300)
    assert len(msgs) == 8300
    order = list(range(len(msgs)))
    for i in range(len(order) - 300):  # 25 % held back by up to 300 positions
        if rng.random() < 0.25:
            j = i + rng.randint(1, 300)
            order[i], order[j] = order[j], order[i]
    stream: list[int] = []
    for i in order:
        stream.append(i)
        if rng.random() < 0.05:
            stream.insert(len(stream) - rng.randint(0, min(40, len(stream) - 1)), i)  # a copy, maybe early
    # the first message last: 8299 counters behind the greatest, beyond the 8128 window -> dropped
    stream = [i for i in stream if i != 0] + [0]
    dups = len(stream) - len(set(stream))
    assert dups > 300
    b = world.b
    replay_before = b.stats["rx_replay"]
    delivered: list[bytes] = []
    for k in range(0, len(stream), 32):
        batch = [(msgs[i], fuzz.A_UNDERLAY) for i in stream[k:k + 32]]
        delivered += b.receive_datagrams(batch, world.now).tun
    assert sorted(delivered) == sorted(pkts[1:]), "each reordered message within the window exactly once"
    assert b.stats["rx_replay"] - replay_before == dups + 1, dict(b.stats)  # + the one too old
    world.round_trip()


def test_impaired_underlay_file_intact_duplicates_dropped(node_factory) -> None:
    # 10 % loss here, not the command's 30 %: with 30 % each way one TCP connection, even without a VPN,
    # often spends minutes in exponential retransmission back-off (README, "Impaired underlay"), too slow
    # and too random for CI. The other impairments are the issue's.
    r = R.impaired_transfer(node_factory, size=200_000, timeout=40, loss=0.10)
    tr = r["transfer"]
    assert r["intact"], tr
    assert r["daemons_alive"] and not r["log_problems"], r["log_problems"]
    assert r["iptables_dropped"] > 0
    assert r["tcp_sender"]["TcpRetransSegs"] > 0, r["tcp_sender"]  # losses hit the file, and TCP recovered them
    assert r["first_reply_s"] is not None
    for side in ("replay_b", "replay_a"):
        w = r[side]
        assert w["no_duplicate_accepted"], w
        assert w["reordered_accepted"] in (True, None), w
        assert w["beyond_window"] == 0, w
    rb = r["replay_b"]
    assert rb["duplicates"] > 0 and rb["reordered"] > 0, rb


def test_impair_relay_applies_exactly_the_configured_impairment() -> None:
    """tools/impair.py itself, on loopback: it loses nothing beyond its configured loss (every datagram it
    counts as delivered arrives, none fails to send), holds back the configured share, duplicates the
    configured share, and its delays stay within delay ± jitter (+ hold for held-back ones). The impaired
    transfer's figures are only as good as this."""
    import socket
    import struct
    import threading
    import time

    from tools import impair

    n, loss, reorder, dup, delay, jitter, hold = 3000, 0.30, 0.25, 0.05, 0.05, 0.02, 0.03
    peers = {side: socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for side in "ab"}
    for s in peers.values():
        s.bind(("127.0.0.1", 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    cfg = {"a": {"listen": ["127.0.0.1", 0], "peer": list(peers["a"].getsockname())},
           "b": {"listen": ["127.0.0.1", 0], "peer": list(peers["b"].getsockname())},
           "delay": delay, "jitter": jitter, "reorder": reorder, "hold": hold, "duplicate": dup,
           "loss": loss, "seed": 7}
    relay = impair.Relay(cfg)
    relay_a = relay.socks["a"].getsockname()
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    arrivals: list[tuple[int, float, float]] = []  # (counter, sent, received)
    peers["b"].settimeout(0.5)

    def receive() -> None:
        while True:
            try:
                data = peers["b"].recv(2048)
            except socket.timeout:
                return
            counter, sent = struct.unpack_from("<Qd", data, 8)
            arrivals.append((counter, sent, time.monotonic()))

    rx = threading.Thread(target=receive)
    rx.start()
    try:
        for counter in range(n):  # a transport message's header (type 4, index 1, counter), send time, padding
            peers["a"].sendto(struct.pack("<IIQd", 4, 1, counter, time.monotonic()) + bytes(100), relay_a)
            if counter % 10 == 9:
                time.sleep(0.01)
        rx.join(timeout=30)
    finally:
        relay.running = False
        thread.join(timeout=5)
        for s in [*peers.values(), *relay.socks.values()]:
            s.close()
    d = relay.dirs["a"]
    assert d.received == n and d.send_errors == 0, d.as_dict()
    assert len(arrivals) == d.delivered == d.received - d.dropped + d.duplicated, d.as_dict()

    def near(count: int, p: float, of: int) -> bool:  # within 5 standard deviations of the binomial mean
        return abs(count - p * of) <= 5 * (of * p * (1 - p)) ** 0.5

    assert near(d.dropped, loss, n), d.as_dict()
    kept = n - d.dropped
    assert near(d.duplicated, dup, kept), d.as_dict()
    assert near(d.held_back, reorder, kept + d.duplicated), d.as_dict()
    counters = [c for c, _, _ in arrivals]
    assert len(counters) - len(set(counters)) == d.duplicates == d.duplicated
    highest, late = -1, 0
    for c in dict.fromkeys(counters):  # first copies, in arrival order
        late += c < highest
        highest = max(highest, c)
    assert late == d.reordered > 0.5 * d.held_back, d.as_dict()  # at 1 datagram/ms nearly every hold is overtaken
    slack = 0.1  # the relay's and this receiver's scheduling on a loaded machine (50 ms seen at load 11)
    delays = [got - sent for _, sent, got in arrivals]
    assert min(delays) >= delay - jitter - 0.002, min(delays)
    assert max(delays) <= delay + jitter + hold + slack, max(delays)
    assert delay - jitter <= sum(delays) / len(delays) <= delay + jitter + hold, sum(delays) / len(delays)


def test_rekeys_under_loss_never_hold_back_or_lose_data() -> None:
    """Two sans-I/O cores on a simulated link with the issue's 30 % loss each way and 100 ± 50 ms: A sends
    10 packets/s for 400 s (three REKEY_AFTER_TIMEs), B echoes each. Once the first session is up, every
    packet leaves its core at once (none waits staged while a rekey's initiation or response is lost) and
    none is lost beyond the link's loss: the old session carries data until the new one is confirmed
    (whitepaper §6.2; wireguard-go alike). The live figures show the same (README, "Impaired underlay")."""
    import heapq
    import ipaddress
    import random
    import struct

    from ravenvpn.protocol import keys
    from ravenvpn.protocol.clock import Clock
    from ravenvpn.protocol.tunnel import Tunnel

    rng = random.Random(11)
    loss, delay, jitter, rate, seconds = 0.30, 0.10, 0.05, 10.0, 400.0
    start = now = 1000.0
    wall = lambda: int(1.7e18 + now * 1e9)  # noqa: E731 - TAI64N follows the simulated time
    a, b = Tunnel(clock=Clock(wall=wall)), Tunnel(clock=Clock(wall=wall))
    a.private_key, b.private_key = keys.generate_private(), keys.generate_private()
    pa, pb = a.add_peer(b.public_key), b.add_peer(a.public_key)
    pa.endpoint, pb.endpoint = fuzz.B_UNDERLAY, fuzz.A_UNDERLAY
    a.add_allowed_ip(pa, ipaddress.ip_network(fuzz.B_INNER + "/32"))
    b.add_allowed_ip(pb, ipaddress.ip_network(fuzz.A_INNER + "/32"))
    events: list[tuple[float, int, str, bytes]] = []
    handed: dict[bytes, float] = {}   # payload -> when its sender handed it to its core
    arrived: dict[bytes, float] = {}  # payload -> when it came out of the other core
    sessions: set[int] = set()        # receiver indices of transport messages A sent

    def push(t: float, kind: str, data: bytes) -> None:
        heapq.heappush(events, (t, len(events) + len(handed), kind, data))

    def emit(side: str, out: object, t: float) -> None:
        for data, _ in out.datagrams():  # type: ignore[attr-defined]
            if side == "a" and data[0] == 4:
                sessions.add(struct.unpack_from("<I", data, 4)[0])
            if rng.random() >= loss:
                push(t + delay + rng.uniform(-jitter, jitter), "to_b" if side == "a" else "to_a", data)
        for pkt in out.tun:  # type: ignore[attr-defined]
            payload = bytes(pkt[-12:])
            arrived.setdefault(payload, t)
            if side == "b":
                push(t, "b_send", b"b" + payload[1:])  # the echo

    for k in range(int(seconds * rate)):
        push(start + k / rate, "a_send", b"a%011d" % k)
    for k in range(int(seconds * 10)):
        push(start + k * 0.1, "tick", b"")
    while events:
        now, _, kind, data = heapq.heappop(events)
        if kind in ("a_send", "b_send"):
            handed[data] = now
            src, dst, core = (fuzz.A_INNER, fuzz.B_INNER, a) if kind == "a_send" else (fuzz.B_INNER, fuzz.A_INNER, b)
            emit(kind[0], core.send_packets([fuzz.ipv4_packet(src, dst, data)], now), now)
        elif kind == "to_b":
            emit("b", b.receive_datagrams([(data, fuzz.A_UNDERLAY)], now), now)
        elif kind == "to_a":
            emit("a", a.receive_datagrams([(data, fuzz.B_UNDERLAY)], now), now)
        else:
            emit("a", a.tick(now), now)
            emit("b", b.tick(now), now)
    assert len(sessions) >= 3, sessions  # the first session and at least two rekeys
    up = min(arrived.values()) + 30  # the first handshake may take a few REKEY_TIMEOUTs
    held = [(round(arrived[p] - handed[p], 3), p) for p in arrived if handed[p] > up and arrived[p] - handed[p] > delay + jitter]
    assert not held, held[:5]
    sent = [p for p, t in handed.items() if t > up]
    got = sum(p in arrived for p in sent)
    p_ok = 1 - loss
    assert abs(got - p_ok * len(sent)) <= 5 * (len(sent) * p_ok * loss) ** 0.5, (got, len(sent))


def test_plain_baseline_tunnel_carries_the_file(node_factory) -> None:
    """The benchmark's no-VPN baseline (``python3 -m tools.impair plain``) carries TCP intact through the
    same relay, so its figures are TCP's own on the path."""
    r = R.impaired_transfer(node_factory, size=100_000, timeout=40, loss=0.10, impl="plain", warmup_pings=5)
    assert r["intact"], r["transfer"]
    assert r["daemons_alive"]
    assert r["relay"]["to_b"]["other"] > 0 and r["relay"]["to_b"]["unique"] == 0  # no WireGuard messages
