"""Property-based fuzzing (hypothesis) of ravenvpn's three parsers of untrusted input.

* the core's receive path, :meth:`ravenvpn.protocol.tunnel.Tunnel.receive_datagrams`, fed mutations of
  real captured messages (initiation, response, cookie reply, transport data and keepalive): truncations,
  extensions, type-byte flips, reserved bytes set, slices overwritten, receiver/sender indices replaced by
  indices that are live at the target, splices of two messages, and plain random bytes;
* the UAPI parser, :class:`ravenvpn.device.uapi.Uapi` (``set`` with lines from a grammar of real and bogus
  keys and values; ``serve`` on a socket pair fed random byte streams);
* the cluster loader, :func:`ravenvpn.raven.cluster.load_cluster` (the example cluster with random subtrees
  replaced, random YAML/JSON-shaped objects, and the example's text with bytes mutated), followed by the
  planner for every node of a cluster that loads.

Properties: only the documented exceptions (none from ``receive_datagrams``, :class:`UapiError` from the
UAPI, :class:`ClusterError` from the loader), and the state stays consistent: after every batch of garbage
the tunnel still carries fresh packets both ways, the genuine packets mixed into the batch are delivered,
no peer's endpoint moved to the attacker's address, and the UAPI's peers/allowed IPs stay coherent.

Used two ways: ``tests/test_fuzz_*.py`` run each property with a small ``max_examples`` (CI), and
``python3 -m benchmarks.reliability fuzz --seconds N`` runs them in rounds until the time is up
(:func:`run_for`). Hypothesis is a test dependency (setup.cfg's ``test`` extra).
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import ipaddress
import json
import random
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any, Callable

import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ravenvpn.errors import UapiError
from ravenvpn.protocol import keys
from ravenvpn.protocol.clock import Clock
from ravenvpn.protocol.tunnel import Tunnel
from ravenvpn.errors import ClusterError
from ravenvpn.raven.cluster import load_cluster

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CLUSTER = ROOT / "examples" / "cluster-three-domains.yaml"

A_UNDERLAY, B_UNDERLAY = ("192.0.2.1", 51820), ("192.0.2.2", 51821)
ATTACKER = ("203.0.113.66", 40000)
A_INNER, B_INNER = "10.9.0.1", "10.9.0.2"


# ---------------------------------------------------------------------------------------------
# the receive path
# ---------------------------------------------------------------------------------------------


def ipv4_packet(src: str, dst: str, payload: bytes) -> bytes:
    """A minimal IPv4/UDP packet (checksums zero: the Tunnel checks source and length, not sums)."""
    total = 28 + len(payload)
    udp = struct.pack(">HHHH", 5000, 5001, 8 + len(payload), 0)
    return (bytes([0x45, 0]) + struct.pack(">H", total) + b"\0\0\0\0" + bytes([64, 17, 0, 0])
            + socket.inet_aton(src) + socket.inet_aton(dst) + udp + payload)


class World:
    """Two sans-I/O Tunnels A and B on a simulated wire, with a synthetic clock for both clocks.

    ``corpus`` holds real messages that crossed the wire, by kind; :meth:`round_trip` proves the pair still
    works. Time only moves forward (monotonic ``now`` and the TAI64N wall clock move together).
    """

    def __init__(self) -> None:
        self.now = 1000.0
        self._serial = 0
        wall = lambda: int(1.7e18 + self.now * 1e9)  # noqa: E731 - a clock, tied to the simulated time
        self.a, self.b = Tunnel(clock=Clock(wall=wall)), Tunnel(clock=Clock(wall=wall))
        self.a.private_key, self.b.private_key = keys.generate_private(), keys.generate_private()
        self.pa = self.a.add_peer(self.b.public_key)  # B, as A knows it
        self.pb = self.b.add_peer(self.a.public_key)
        self.pa.endpoint, self.pb.endpoint = B_UNDERLAY, A_UNDERLAY
        self.a.add_allowed_ip(self.pa, ipaddress.ip_network(B_INNER + "/32"))
        self.b.add_allowed_ip(self.pb, ipaddress.ip_network(A_INNER + "/32"))
        self.delivered: dict[str, list[bytes]] = {"a": [], "b": []}
        self.corpus: dict[str, list[bytes]] = {k: [] for k in ("initiation", "response", "cookie", "transport",
                                                                 "keepalive")}
        self._capture_with_cookie()
        self.round_trip()
        assert all(self.corpus[k] for k in ("initiation", "response", "cookie", "transport")), self.corpus

    def tunnel(self, name: str) -> Tunnel:
        return self.a if name == "a" else self.b

    def _record(self, data: bytes) -> None:
        kind = {1: "initiation", 2: "response", 3: "cookie"}.get(data[0])
        if kind is None:
            kind = "keepalive" if len(data) == 32 else "transport"
        bucket = self.corpus[kind]
        if len(bucket) < 16:
            bucket.append(bytes(data))

    def carry(self, sender: str, datagrams: list[tuple[bytes, Any]]) -> None:
        """Deliver datagrams from ``sender`` to the other side and the replies back, until quiet."""
        pending = [(sender, datagrams)]
        hops = 0
        while pending:
            src, batch = pending.pop(0)
            if not batch:
                continue
            hops += 1
            if hops > 64:
                raise AssertionError("the two tunnels never stop answering each other")
            dst = "b" if src == "a" else "a"
            for data, _ in batch:
                self._record(data)
            source = A_UNDERLAY if src == "a" else B_UNDERLAY
            out = self.tunnel(dst).receive_datagrams([(d, source) for d, _ in batch], self.now)
            self.delivered[dst].extend(out.tun)
            pending.append((dst, out.datagrams()))

    def _capture_with_cookie(self) -> None:
        """First handshake with B under load: B answers a cookie reply, A's retry carries mac2."""
        self.b.load_threshold = 1  # any handshake message puts B under load
        first = self.a.send_packets([self.packet("a")], self.now)
        self.carry("a", first.datagrams())  # initiation -> cookie reply, consumed by A
        self.advance(6.0)                    # A retries after REKEY_TIMEOUT with mac2: B answers
        self.b.load_threshold = 64
        assert self.b.stats["tx_cookie_reply"] >= 1 and self.pa.current is not None, dict(self.b.stats)

    def packet(self, sender: str) -> bytes:
        self._serial += 1
        src, dst = (A_INNER, B_INNER) if sender == "a" else (B_INNER, A_INNER)
        return ipv4_packet(src, dst, b"fuzz-%08d" % self._serial)

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + 0.5)
            for side in ("a", "b"):
                self.carry(side, self.tunnel(side).tick(self.now).datagrams())

    def send(self, sender: str) -> bytes:
        pkt = self.packet(sender)
        self.carry(sender, self.tunnel(sender).send_packets([pkt], self.now).datagrams())
        return pkt

    def round_trip(self) -> None:
        """A fresh packet each way arrives (a handshake first, if the sessions expired meanwhile)."""
        for sender, receiver in (("a", "b"), ("b", "a")):
            pkt = self.send(sender)
            if pkt not in self.delivered[receiver]:
                # the first packet may have been staged behind a handshake that just completed
                self.advance(0.5)
                pkt = self.send(sender)
            assert pkt in self.delivered[receiver], (
                f"{sender}->{receiver}: a fresh packet did not arrive; stats a={dict(self.a.stats)} "
                f"b={dict(self.b.stats)}")
        for name in ("a", "b"):
            self.delivered[name].clear()

    def genuine(self, sender: str, n: int) -> tuple[list[bytes], list[bytes]]:
        """``n`` fresh transport messages from ``sender`` (a session exists after round_trip)."""
        pkts = [self.packet(sender) for _ in range(n)]
        out = self.tunnel(sender).send_packets(pkts, self.now)
        msgs = [d for d, _ in out.datagrams() if d[0] == 4]
        return pkts, msgs


# mutation ops: (name, args); applied in order by mutate()
_op = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 200)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("type"), st.integers(0, 255)),
    st.tuples(st.just("reserved"), st.integers(1, 3), st.integers(1, 255)),
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 7)),
    st.tuples(st.just("overwrite"), st.integers(0, 10_000), st.binary(min_size=1, max_size=32)),
    st.tuples(st.just("live_index"), st.sampled_from([4, 8]), st.integers(0, 1 << 16)),
    st.tuples(st.just("counter"), st.sampled_from([0, 1, 2, 8127, 8128, 8129, 1 << 32, (1 << 64) - 1,
                                                   (1 << 64) - 8193])),
    st.tuples(st.just("splice"), st.integers(0, 200), st.integers(0, 1 << 16)),
)

_source = st.one_of(st.just(ATTACKER), st.just(A_UNDERLAY), st.just(B_UNDERLAY),
                    st.tuples(st.just("fd00::66"), st.integers(1, 65535)))


@st.composite
def garbage(draw: st.DrawFn) -> tuple[str, int, list[tuple[Any, ...]], bool] | bytes:
    """Either (corpus kind, which message, mutation ops, re-MAC) or raw random bytes.

    Re-MAC: mac1 recomputed for the target's public key after the mutations, as an attacker who knows
    that public key can, so the mutation reaches the DH and AEAD steps behind the mac1 check."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=1500))
    kind = draw(st.sampled_from(["initiation", "response", "cookie", "transport", "keepalive"]))
    return kind, draw(st.integers(0, 15)), draw(st.lists(_op, min_size=0, max_size=4)), draw(st.booleans())


def mutate(world: World, target: Tunnel, spec: tuple[str, int, list[tuple[Any, ...]], bool] | bytes) -> bytes:
    """Resolve a :func:`garbage` draw against the world's corpus and the target's live indices."""
    if isinstance(spec, bytes):
        return spec
    kind, which, ops, remac = spec
    bucket = world.corpus[kind] or world.corpus["transport"]
    msg = bytearray(bucket[which % len(bucket)])
    for op in ops:
        name = op[0]
        if name == "truncate":
            del msg[op[1] % (len(msg) + 1):]
        elif name == "extend":
            msg += op[1]
        elif name == "type" and msg:
            msg[0] = op[1]
        elif name == "reserved" and len(msg) >= 4:
            msg[op[1]] = op[2]
        elif name == "flip" and msg:
            msg[op[1] % len(msg)] ^= 1 << op[2]
        elif name == "overwrite" and msg:
            at = op[1] % len(msg)
            msg[at:at + len(op[2])] = op[2]
        elif name == "live_index":
            live = sorted(target._index)  # the indices the target would accept: sessions and handshakes
            if live and len(msg) >= op[1] + 4:
                struct.pack_into("<I", msg, op[1], live[op[2] % len(live)])
        elif name == "counter" and len(msg) >= 16:
            struct.pack_into("<Q", msg, 8, op[1])
        elif name == "splice":
            kinds = [k for k in world.corpus if world.corpus[k]]
            other = world.corpus[kinds[op[2] % len(kinds)]]
            tail = other[op[2] % len(other)]
            at = op[1] % (len(msg) + 1)
            msg = msg[:at] + tail[at:]
    if remac and len(msg) in (148, 92) and target.public_key is not None:
        at = len(msg) - 32
        key = hashlib.blake2s(b"mac1----" + target.public_key).digest()
        msg[at:] = hashlib.blake2s(bytes(msg[:at]), digest_size=16, key=key).digest() + bytes(16)
    return bytes(msg)


@dataclasses.dataclass
class Batch:
    target: str                          # "a" or "b": who receives
    items: list[Any]                     # garbage specs
    sources: list[Any]
    genuine_at: list[int]                # positions where a genuine fresh message is inserted
    advance: float                       # seconds the clock moves first (timers, rekeys, expiry)
    under_load: bool                     # the target treats any handshake message as load (cookie path)


batches = st.builds(
    Batch,
    target=st.sampled_from(["a", "b"]),
    items=st.lists(garbage(), min_size=1, max_size=8),
    sources=st.lists(_source, min_size=8, max_size=8),
    genuine_at=st.lists(st.integers(0, 8), max_size=3),
    advance=st.one_of(st.just(0.0), st.floats(0, 3), st.sampled_from([10.0, 125.0, 181.0])),
    under_load=st.booleans(),
)


def check_receive(world: World, batch: Batch) -> None:
    """One batch of mutated datagrams (with genuine ones mixed in) at one side; then the invariants."""
    world.advance(batch.advance)
    world.round_trip()  # a session exists, so genuine messages can be made
    target = world.tunnel(batch.target)
    sender = "b" if batch.target == "a" else "a"
    endpoint_before = (world.pa.endpoint, world.pb.endpoint)
    datagrams = [(mutate(world, target, spec), batch.sources[i % 8]) for i, spec in enumerate(batch.items)]
    pkts, genuine = world.genuine(sender, len(batch.genuine_at))
    real_source = A_UNDERLAY if sender == "a" else B_UNDERLAY
    for pos, msg in sorted(zip(batch.genuine_at, genuine), reverse=True):
        datagrams.insert(min(pos, len(datagrams)), (msg, real_source))
    if batch.under_load:
        target.load_threshold = 1
    try:
        out = target.receive_datagrams(datagrams, world.now)  # must not raise, whatever the bytes
    finally:
        target.load_threshold = 64
    for pkt in pkts:
        assert pkt in out.tun, f"a genuine packet among garbage was lost; stats {dict(target.stats)}"
    for data, dest in out.datagrams():
        # answers go to where the datagram came from, and only handshake answers/cookies/keepalives
        assert data[0] in (2, 3, 4), data[:4]
    # the cookie replies and responses the garbage provoked are simply lost (the attacker has them)
    assert (world.pa.endpoint, world.pb.endpoint) == endpoint_before or ATTACKER not in (
        world.pa.endpoint, world.pb.endpoint), "garbage moved a peer's endpoint to the attacker"
    if batch.under_load:
        world.advance(1.5)  # the load state ends before the next handshake could need a cookie
    world.round_trip()


# ---------------------------------------------------------------------------------------------
# the UAPI parser
# ---------------------------------------------------------------------------------------------


class FakeControl:
    """The device-side knobs of the UAPI: port 1 is "busy" (set_listen_port raises OSError)."""

    def __init__(self) -> None:
        self.listen_port = 51820
        self.fwmark = 0
        self.changes = 0

    def set_listen_port(self, port: int) -> None:
        if port == 1:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        self.listen_port = port

    def set_fwmark(self, mark: int) -> None:
        self.fwmark = mark

    def config_changed(self) -> None:
        self.changes += 1


_PRIVATE = keys.generate_private()
_OWN_PUBLIC = keys.public_from_private(keys.clamp(_PRIVATE))
_PEER_KEYS = [keys.public_from_private(keys.generate_private()) for _ in range(4)]
_LOW_ORDER = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")

_hexkey = st.one_of(
    st.sampled_from([k.hex() for k in (*_PEER_KEYS, _OWN_PUBLIC, _PRIVATE, bytes(32), _LOW_ORDER)]),
    st.binary(min_size=32, max_size=32).map(bytes.hex),
    st.text("0123456789abcdefABCDEFxz", max_size=70),
)
_number = st.one_of(st.integers(0, 70000).map(str), st.sampled_from(["", "-1", "0x10", "1e3", "4294967296",
                                                                     "65536", " 1", "1 ", "١٢"]))
_ip = st.one_of(st.ip_addresses().map(str), st.sampled_from(["", "::", "1.2.3", "256.1.1.1", "fe80::1%eth0",
                                                             "::ffff:1.2.3.4", "localhost"]))
_endpoint = st.one_of(
    st.builds(lambda ip, port: f"{ip}:{port}" if ":" not in ip else f"[{ip}]:{port}", _ip, _number),
    st.text(max_size=40),
)
_allowed = st.one_of(
    st.builds(lambda neg, ip, bits: f"{'-' if neg else ''}{ip}/{bits}", st.booleans(), _ip,
              st.one_of(st.integers(0, 130).map(str), st.just(""), st.just("x"))),
    st.text(max_size=30),
)
_true = st.sampled_from(["true", "false", "", "TRUE", "1"])
_VALUES: dict[str, st.SearchStrategy[str]] = {
    "private_key": _hexkey, "public_key": _hexkey, "preshared_key": _hexkey,
    "listen_port": _number, "fwmark": _number, "persistent_keepalive_interval": _number,
    "replace_peers": _true, "update_only": _true, "remove": _true, "replace_allowed_ips": _true,
    "endpoint": _endpoint, "allowed_ip": _allowed, "protocol_version": st.sampled_from(["1", "2", ""]),
}
_line = st.one_of(
    st.sampled_from(sorted(_VALUES)).flatmap(lambda k: _VALUES[k].map(lambda v: f"{k}={v}")),
    st.text(max_size=40),  # anything, '=' or not
)
uapi_requests = st.lists(_line, max_size=24)


def new_uapi() -> tuple[Any, Tunnel, FakeControl]:
    from ravenvpn.device.uapi import Uapi

    tunnel = Tunnel()
    control = FakeControl()
    return Uapi(tunnel, control, threading.RLock()), tunnel, control


def check_uapi_consistent(uapi: Any, tunnel: Tunnel) -> None:
    """``get`` serialises; peers are distinct from our own key; each prefix belongs to one peer."""
    text = uapi.get()
    assert all("=" in line for line in text.splitlines()), text
    own = tunnel.public_key
    owners: dict[Any, bytes] = {}
    for key, peer in tunnel.peers.items():
        assert key == peer.public_key and key != own
        for net in tunnel.allowed_ips(peer):
            assert net not in owners, f"{net} owned by two peers"
            owners[net] = key
            assert tunnel.peer_for_address(str(net.network_address)) is not None


def check_uapi_set(lines: list[str]) -> None:
    uapi, tunnel, control = new_uapi()
    for chunk in (lines[: len(lines) // 2], lines[len(lines) // 2:]):
        try:
            uapi.set(chunk)
        except UapiError as exc:
            assert exc.errno in (errno.EINVAL, errno.EPROTO, errno.EADDRINUSE), exc.errno
            assert "\n" not in str(exc) and _PRIVATE.hex() not in str(exc)
        check_uapi_consistent(uapi, tunnel)
    # the device is still configurable afterwards
    peer = _PEER_KEYS[0]
    uapi.set([f"private_key={_PRIVATE.hex()}", f"public_key={peer.hex()}", "replace_allowed_ips=true",
              "allowed_ip=10.77.0.0/16", "endpoint=192.0.2.9:51820"])
    assert tunnel.peer_for_address("10.77.1.1") is tunnel.peers[peer]
    check_uapi_consistent(uapi, tunnel)


_stream_piece = st.one_of(
    st.sampled_from([b"get=1\n", b"set=1\n", b"\n", b"get=1\n\n", b"set=1\nreplace_peers=true\n\n",
                     b"get=2\n", b"set=1\n" + b"x" * 5000 + b"\n\n"]),
    _line.map(lambda s: s.encode("utf-8", "surrogatepass") + b"\n"),
    st.binary(max_size=64),
)
uapi_streams = st.lists(_stream_piece, max_size=12).map(b"".join)


def check_uapi_serve(stream: bytes) -> None:
    """One client connection carrying ``stream``: serve() returns, raises nothing, and every reply is
    ``[key=value lines] errno=N`` followed by a blank line."""
    uapi, tunnel, _ = new_uapi()
    server, client = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            uapi.serve(server)
        except BaseException as exc:  # noqa: BLE001 - the property is "nothing escapes"
            errors.append(exc)
        finally:
            server.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client.settimeout(10)
    received = bytearray()
    try:
        try:
            client.sendall(stream)
            client.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server hung up on an invalid operation: allowed
        while chunk := client.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    finally:
        client.close()
    t.join(10)
    assert not t.is_alive(), "serve() did not return after the client closed"
    assert not errors, f"serve() raised {errors[0]!r}"
    if received:
        replies = bytes(received).split(b"\n\n")
        assert replies[-1] == b"", "a reply was cut off"
        for reply in replies[:-1]:
            last = reply.split(b"\n")[-1]
            assert last.startswith(b"errno=") and last[6:].lstrip(b"-").isdigit(), reply[-80:]
    check_uapi_consistent(uapi, tunnel)


# ---------------------------------------------------------------------------------------------
# the cluster loader
# ---------------------------------------------------------------------------------------------

_EXAMPLE_TEXT = EXAMPLE_CLUSTER.read_text()
_EXAMPLE_DOCS = [d for d in yaml.safe_load_all(_EXAMPLE_TEXT) if d is not None]
_K8S_WORDS = ["apiVersion", "kind", "metadata", "name", "labels", "spec", "status", "endpoints", "nodeName",
              "type", "port", "underNAT", "publicIP", "config", "publicKey", "nodes", "privateIP", "subnets",
              "items", "List", "Gateway", "Node", "conditions", "Ready", "True", "addresses", "InternalIP",
              "podCIDR", "podCIDRs", "tunnel", "proxy", "raven.openyurt.io/gateway", "activeEndpoints",
              "exposeType", "tunnelConfig", "Replicas", "raven.openyurt.io/v1beta1", "v1"]
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 40), 1 << 40),
                    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(_K8S_WORDS),
                    st.text(max_size=20), st.ip_addresses().map(str),
                    st.builds(lambda ip, n: f"{ip}/{n}", st.ip_addresses().map(str), st.integers(0, 130)))
_json = st.recursive(_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(_K8S_WORDS), st.text(max_size=8)), inner, max_size=5)),
    max_leaves=20)


def _replace_at(obj: Any, path: list[int], value: Any, delete: bool) -> Any:
    """``obj`` with the subtree chosen by ``path`` (indices modulo the branching) replaced or deleted."""
    if not path or not isinstance(obj, (dict, list)) or not obj:
        return value
    if isinstance(obj, dict):
        keys_ = list(obj)
        k = keys_[path[0] % len(keys_)]
        new = dict(obj)
        if delete and len(path) == 1:
            del new[k]
        else:
            new[k] = _replace_at(obj[k], path[1:], value, delete)
        return new
    i = path[0] % len(obj)
    new_list = list(obj)
    if delete and len(path) == 1:
        del new_list[i]
    else:
        new_list[i] = _replace_at(obj[i], path[1:], value, delete)
    return new_list


@st.composite
def cluster_texts(draw: st.DrawFn) -> str:
    how = draw(st.integers(0, 9))
    if how <= 5:  # the real example, with a few subtrees replaced, deleted or duplicated
        docs: Any = list(_EXAMPLE_DOCS)
        for _ in range(draw(st.integers(1, 4))):
            path = draw(st.lists(st.integers(0, 50), min_size=1, max_size=7))
            docs = _replace_at(docs, path, draw(_json), draw(st.booleans()))
        if draw(st.booleans()):
            docs = docs + [docs[draw(st.integers(0, 50)) % len(docs)]] if docs else docs
        if draw(st.booleans()):
            return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
        return yaml.safe_dump_all(docs, sort_keys=False)
    if how <= 7:  # random objects
        return yaml.safe_dump_all(draw(st.lists(_json, max_size=3)))
    # the example's text with bytes cut, flipped or inserted
    text = bytearray(_EXAMPLE_TEXT.encode())
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        text[at:at + draw(st.integers(0, 40))] = draw(st.binary(max_size=8))
    return text.decode("utf-8", "replace")


def check_cluster(text: str) -> None:
    """Loading raises nothing but a one-line ClusterError; a cluster that loads plans for every node."""
    from ravenvpn.raven.plan import plan

    try:
        cluster = load_cluster(text)
    except ClusterError as exc:
        assert str(exc) and "\n" not in str(exc).strip(), f"not a one-line error: {exc!r}"
        return
    for node in cluster.nodes:  # a cluster that loads must plan for each of its nodes
        try:
            plan(cluster, node.name)
        except ClusterError:
            pass


# ---------------------------------------------------------------------------------------------
# running them
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Target:
    name: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], Any]


def targets() -> list[Target]:
    world: list[World] = []

    def receive(batch: Batch) -> None:
        if not world:
            world.append(World())
        check_receive(world[0], batch)

    return [
        Target("receive path", batches, receive),
        Target("uapi set", uapi_requests, check_uapi_set),
        Target("uapi serve", uapi_streams, check_uapi_serve),
        Target("cluster loader", cluster_texts(), check_cluster),
    ]


def property_test(target: Target, max_examples: int, seed: int | None = None) -> Callable[[], None]:
    """The hypothesis test for ``target`` (no example database: runs are independent and leave no files)."""
    conf = settings(max_examples=max_examples, deadline=None, database=None, derandomize=seed is not None,
                    suppress_health_check=list(HealthCheck), print_blob=True,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink])
    test = conf(given(target.strategy)(target.check))
    if seed is not None:
        from hypothesis import seed as hseed

        test = hseed(seed)(test)
    return test


def _counting(check: Callable[[Any], Any], counted: dict[str, int]) -> Callable[[Any], None]:
    def counting(x: Any) -> None:  # no default arguments: @given refuses them
        counted["n"] += 1
        check(x)
    return counting


def run_for(seconds: float, chunk: int = 200, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every target in rounds of ``chunk`` examples for about ``seconds`` in all (split evenly).

    Returns one dict per target: examples tried, seconds, and the first failure (None if none). Each round
    starts from a fresh random seed, so longer runs explore more (hypothesis cannot stop on time itself).
    """
    results = []
    all_targets = targets()
    share = seconds / len(all_targets)
    for target in all_targets:
        counted = {"n": 0}
        t = Target(target.name, target.strategy, _counting(target.check, counted))
        start = time.monotonic()
        failure = None
        while time.monotonic() - start < share and failure is None:
            try:
                property_test(t, chunk, seed=random.getrandbits(64))()
            except Exception as exc:  # noqa: BLE001 - reported, not raised: the other targets still run
                failure = f"{type(exc).__name__}: {exc}"
        elapsed = time.monotonic() - start
        log(f"fuzz {target.name}: {counted['n']} inputs in {elapsed:.0f} s, "
            f"{'FAILED: ' + failure.splitlines()[0] if failure else 'no failure'}")
        results.append({"target": target.name, "inputs": counted["n"], "seconds": elapsed, "failure": failure})
    return results
