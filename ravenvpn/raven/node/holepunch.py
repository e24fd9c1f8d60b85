"""Direct edge<->edge tunnels through NAT, with the relay gateway as the rendezvous.

:class:`DirectPaths` is the run-time half of :mod:`ravenvpn.raven.plan.direct`, hooked into the
:class:`~ravenvpn.raven.node.wireguard.WireGuardDriver` of an active gateway. It runs one thread
with a UDP socket on the gateway's control address (``169.254.A.B:4502`` on ``raven0``, inside the
tunnels; messages in :mod:`.rendezvous`):

- on the **relay** gateway (not under NAT, peers with every edge): it knows each edge's public
  endpoint -- the source of that edge's latest authenticated packet (WireGuard roaming, whitepaper
  §2.1) -- and, when two edges both ask for a round, sends both an INTRO with the other's endpoint
  and one common start time; when an edge's endpoint changes (NAT rebinding, roaming) it tells the
  other edges at once;
- on a NAT'd **edge**: for each other NAT'd edge (a *pair*) it keeps a direct WireGuard peer (the
  other edge's key, from the cluster) whose allowed IPs hold only the other's control address until
  the path is proven, and a :class:`~ravenvpn.raven.node.punch.PairMachine`. In a round both edges
  send handshake initiations to each other's public endpoint from the same moment (hole punching)
  and probes over the direct peer; once probes have crossed both ways (so an authenticated session
  works in both directions) the other domain's subnets move from the relay peer to the direct peer
  (make-before-break: the tunnel accepts those sources from either peer throughout,
  :meth:`~ravenvpn.protocol.tunnel.Tunnel.share_sources`). While direct, probes every 0.2 s watch the
  path; 1 s of silence moves the subnets back to the relay at once. When the relay shows both edges
  at one public IP (its INTRO gives each edge its own observed endpoint too), a round first tries the
  other edge's private endpoint (its node's InternalIP) for 2 s, the same way (``trying-lan``).

The state of every pair is written to ``<state dir>/<interface>.direct.json`` (``ravenvpn status``
shows it) and each transition is logged. ``RAVENVPN_FORCE_RELAY`` = ``all`` or a comma-separated list
of gateway names keeps all or those pairs on the relay.
"""
from __future__ import annotations

import base64
import contextlib
import errno
import ipaddress
import json
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ContextManager

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..cluster.addresses import IPNetwork, host_network
from ..plan.direct import CONTROL_PORT, DirectPair, DirectPlan, control_address
from ..plan.nodeplan import PeerPlan
from . import rendezvous as rv
from .hops import HopFinder
from .punch import Actions, PairMachine, PairState, Timing
from .records import direct_status_path

if TYPE_CHECKING:
    from ...protocol.tunnel import Peer, Tunnel

__all__ = ["DirectPaths", "forced_relay_from_env", "read_direct_status", "describe_direct", "FORCE_RELAY_ENV"]

log = logging.getLogger("ravenvpn.direct")
FORCE_RELAY_ENV = "RAVENVPN_FORCE_RELAY"
TICK = 0.05                 # seconds between state-machine ticks
HELLO_INTERVAL = 1.0        # edge -> relay while a pair wants a round (and every 5 s otherwise)
HELLO_IDLE_INTERVAL = 5.0
WANT_FRESH = 3.0            # relay: a want older than this is stale
ROUND_MIN_INTERVAL = 2.0    # relay: per pair
ROUND_LEAD = 0.5            # relay: a round starts this long after the INTROs leave (seconds)
STATUS_INTERVAL = 1.0
#: What the non-initiating edge of a round sends to open its NAT toward the other edge: an empty UDP
#: datagram (no payload, nothing to read; every WireGuard implementation drops it as malformed).
NAT_OPENER = b""

#: (wake the pump on exit) -> the running tunnel under the device lock.
TunnelAccess = Callable[[bool], ContextManager["Tunnel"]]


def read_direct_status(state_dir: str | os.PathLike[str], interface: str) -> dict[str, Any] | None:
    """The direct-path status file's content, None when there is none (or it is unreadable)."""
    try:
        data = json.loads(direct_status_path(state_dir, interface).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe_direct(status: dict[str, Any] | None) -> list[str]:
    """Lines for ``ravenvpn status``: one per pair (edge) or per introduced edge (relay)."""
    if not status:
        return []
    lines = []
    if status.get("error"):
        lines.append(f"direct paths off: {status['error']}")
    for gw, pair in sorted(status.get("pairs", {}).items()):
        extra = [f"endpoint {pair.get('endpoint') or '?'}", f"{pair.get('rounds', 0)} rounds"]
        if pair.get("via"):
            extra.insert(0, f"via {pair['via']}")
        if pair.get("hops") is not None:
            extra.append(f"{pair['hops']} hops away")
        if pair.get("next_round_in") is not None and pair.get("state") != "forced-relay":
            extra.append(f"next round in {pair['next_round_in']:.0f} s")
        if pair.get("reason"):
            extra.append(str(pair["reason"]))
        lines.append(f"direct path {gw}: {pair.get('state')} for {pair.get('for', 0):.0f} s ({', '.join(extra)})")
    if status.get("role") == "relay":
        lines.append(f"rendezvous for {len(status.get('edges', {}))} edges, {status.get('rounds', 0)} rounds, "
                     f"{status.get('relayed_packets', 0)} packets relayed")
        for gw, edge in sorted(status.get("edges", {}).items()):
            lines.append(f"  {gw} seen at {edge.get('endpoint') or '?'}")
    return lines


def forced_relay_from_env(environ: dict[str, str] | None = None) -> set[str] | None:
    """The gateways whose pairs ``RAVENVPN_FORCE_RELAY`` keeps on the relay; None: all of them
    (``all``, ``*``, ``1``); empty: none (unset or empty)."""
    text = (environ if environ is not None else os.environ).get(FORCE_RELAY_ENV, "").strip()
    if text.lower() in ("all", "*", "1", "yes", "true"):
        return None
    return {name.strip() for name in text.split(",") if name.strip()}


def _endpoint_text(ep: tuple[str, int]) -> str:
    return f"[{ep[0]}]:{ep[1]}" if ":" in ep[0] else f"{ep[0]}:{ep[1]}"


def _parse_endpoint(text: Any) -> tuple[str, int]:
    if not isinstance(text, str):
        raise ValueError("endpoint is not a string")
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    ipaddress.ip_address(host)
    value = int(port)
    if not 1 <= value <= 65535:
        raise ValueError(f"port {value} out of range")
    return host, value


class DirectPaths:
    """The direct-path manager of one active gateway (see the module doc).

    Args:
        interface: the tunnel interface (``raven0``).
        private_key: the node's 32-byte WireGuard key (message authentication).
        access: ``access(wake)`` gives the running Tunnel under the device lock (and wakes the pump
            afterwards when ``wake``).
        state_dir: where the status file goes; None: no file.
        timing: the state machines' timing. forced: gateways kept on the relay (None: all).

    The driver calls :meth:`update`, :meth:`managed_keys`, :meth:`allowed_ips` and :meth:`converge`
    while it holds the device lock; the manager's own thread takes that lock for each step, so all
    state is guarded by it. :meth:`stop` from the driver's thread.
    """

    def __init__(self, interface: str, private_key: bytes, access: TunnelAccess, *,
                 state_dir: str | os.PathLike[str] | None = None, timing: Timing = Timing(),
                 forced: set[str] | None | bool = False,
                 underlay: Callable[..., None] | None = None, hops: HopFinder | None = None) -> None:
        self.interface = interface
        # underlay(datagrams, ttl=None) sends datagrams from the tunnel's UDP port (NAT openers),
        # with that IP TTL when given (Device.send_underlay)
        self.underlay = underlay
        self.hops = hops or HopFinder()  # hop counts to the other edges' public addresses (TTL openers)
        self.private_key = private_key
        self.access = access
        self.timing = timing
        self.forced: set[str] | None = forced_relay_from_env() if forced is False else forced  # type: ignore[assignment]
        self.status_path = direct_status_path(state_dir, interface) if state_dir is not None else None
        self.plan: DirectPlan | None = None
        self.machines: dict[bytes, PairMachine] = {}
        self.pairs: dict[bytes, DirectPair] = {}
        self._keys: dict[bytes, bytes] = {}          # pair MAC key by the other gateway's key
        self._counter = rv.Counter()
        self._replay = rv.ReplayGuard()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._kernel_dirty = True
        self._outbox: list[tuple[bytes, str]] = []   # (datagram, control address) to send after the lock
        self._wake_pump = False
        self._underlay_out: list[tuple[bytes, tuple[str, int]]] = []
        self._underlay_ttl_out: list[tuple[tuple[str, int], tuple[int, ...]]] = []   # (endpoint, TTLs)
        self._status_due = 0.0
        self._next_hello = 0.0
        self._wanting: set[bytes] = set()
        # relay side
        self._wants: dict[bytes, tuple[set[bytes], float]] = {}
        self._edge_states: dict[bytes, dict[str, str]] = {}
        self._last_round: dict[frozenset[bytes], float] = {}
        self._round = 0
        self._endpoints: dict[bytes, tuple[str, int] | None] = {}
        self._hello_at: dict[bytes, float] = {}
        self.error: str | None = None

    # ------------------------------------------------------------- driver hooks (device lock held)
    def update(self, plan: DirectPlan | None) -> None:
        """Follow a new plan: pairs come and go (a lost pair's subnets return to the relay peer)."""
        now = time.monotonic()
        self.plan = plan
        wanted = {p.public_key: p for p in plan.pairs} if plan is not None else {}
        for key in [k for k in self.machines if k not in wanted]:
            del self.machines[key]
            self.pairs.pop(key, None)
        for key, pair in wanted.items():
            self.pairs[key] = pair
            machine = self.machines.get(key)
            if machine is None:
                machine = self.machines[key] = PairMachine(
                    pair.gateway, now, initiator=plan.local_key < key, timing=self.timing,
                    private=pair.private_endpoint)
            machine.private = pair.private_endpoint    # a new plan may name another active node
            reason = self._forced_reason(pair)
            if reason:
                for line in machine.force_relay(reason, now).transitions:
                    log.info("%s", line)
            else:
                machine.allow(now)
        self._kernel_dirty = True

    @property
    def off(self) -> bool:
        """``RAVENVPN_FORCE_RELAY=all``: no control address, no rendezvous socket, the peers' allowed
        IPs exactly as planned (a cluster of plain relayed gateways); only the status file is kept."""
        return self.forced is None

    def _forced_reason(self, pair: DirectPair) -> str:
        if not pair.punch:
            return pair.reason
        if self.forced is None or pair.gateway in self.forced:
            return f"{FORCE_RELAY_ENV} forces the relay"
        return ""

    def _active(self) -> dict[bytes, DirectPair]:
        """The pairs that get a direct peer: all but those kept on the relay (forced-relay)."""
        return {k: p for k, p in self.pairs.items()
                if self.machines[k].state is not PairState.FORCED_RELAY}

    def managed_keys(self) -> set[bytes]:
        """The direct peers' keys: the driver leaves these peers alone (and removes the others')."""
        return set(self._active())

    def _is_direct(self, key: bytes) -> bool:
        m = self.machines.get(key)
        return m is not None and m.state is PairState.DIRECT

    def allowed_ips(self, want: PeerPlan, base: Iterable[IPNetwork] | None = None) -> tuple[IPNetwork, ...]:
        """A planned peer's allowed IPs as they are now: ``base`` (default: the planned ones) for the
        relay peer without the subnets that a direct peer carries, and the control address of every
        peer that talks rendezvous."""
        plan = self.plan
        ips = list(want.allowed_ips if base is None else base)
        if plan is None or self.off:
            return tuple(ips)
        if want.public_key == plan.relay_key:
            moved = {n for k, p in self.pairs.items() if self._is_direct(k) for n in p.prefixes}
            ips = [n for n in ips if n not in moved]
            ips.append(host_network(control_address(want.public_key)))
        elif any(want.public_key == k for _g, k in plan.introduces):
            ips.append(host_network(control_address(want.public_key)))
        return tuple(ips)

    def converge(self, tunnel: Tunnel) -> None:
        """Make the direct peers match the pairs (under the device lock, after the planned peers)."""
        plan = self.plan
        if plan is None or plan.relay_key is None:
            return
        relay = tunnel.peers.get(plan.relay_key)
        for key, pair in self._active().items():
            peer = tunnel.add_peer(key)
            want = [host_network(pair.control)]
            if self._is_direct(key):
                want += list(pair.prefixes)
            if set(tunnel.allowed_ips(peer)) != set(want):
                tunnel.clear_allowed_ips(peer)
                for net in want:
                    tunnel.add_allowed_ip(peer, net)
            if relay is not None:
                tunnel.share_sources(pair.prefixes, [relay, peer])

    # --------------------------------------------------------------------------- life cycle
    def start(self) -> None:
        """Start the thread (idempotent). Errors (a busy control port) are logged, not raised: the
        gateway then works as before, every pair through the relay."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"direct-{self.interface}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, close the socket, remove the status file. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.status_path is not None:
            with contextlib.suppress(OSError):
                self.status_path.unlink()

    # ------------------------------------------------------------------------------ thread
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._kernel_dirty:
                    self._setup_kernel()
                self._step()
                self._wait()
        except Exception:
            log.exception("direct paths stopped on an internal error; all pairs stay on the relay")
            with contextlib.suppress(Exception):
                with self.access(False) as tunnel:
                    for key in list(self.machines):
                        self._apply(tunnel, key, Actions(route="relay", silence=True), time.monotonic())

    def _wait(self) -> None:
        timeout = TICK
        deadlines = [d for m in list(self.machines.values()) if (d := m.next_deadline()) is not None]
        if deadlines:
            timeout = max(0.0, min(TICK, min(deadlines) - time.monotonic()))
        if self._sock is None:
            self._stop.wait(timeout)
            return
        with contextlib.suppress(OSError, ValueError):
            select.select([self._sock], [], [], timeout)

    def _local_control(self) -> ipaddress.IPv4Address | None:
        return control_address(self.plan.local_key) if self.plan is not None else None

    def _setup_kernel(self) -> None:
        """Our control address on the interface, a /32 route to each partner's (main table, via the
        interface: they vanish with it), and the socket."""
        self._kernel_dirty = False
        local = self._local_control()
        if local is None or self.off:
            return
        plan = self.plan
        assert plan is not None
        partners = [k for _g, k in plan.introduces] if plan.is_relay else [plan.relay_key, *self._active()]
        try:
            with IPRoute() as ipr:
                found = ipr.link_lookup(ifname=self.interface)
                if not found:
                    return
                index = found[0]
                try:
                    ipr.addr("add", index=index, address=str(local), prefixlen=32)
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise
                for key in partners:
                    if key is None:
                        continue
                    ipr.route("replace", dst=f"{control_address(key)}/32", oif=index, prefsrc=str(local))
        except NetlinkError as exc:
            self._disable(f"cannot configure the control address {local} on {self.interface}: {exc}")
            return
        if self._sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((str(local), CONTROL_PORT))
                sock.setblocking(False)
            except OSError as exc:
                sock.close()
                self._disable(f"cannot open the rendezvous socket {local}:{CONTROL_PORT}: {exc.strerror or exc}")
                return
            self._sock = sock
            log.info("rendezvous on %s:%d (%s)", local, CONTROL_PORT, "relay" if plan.is_relay else "edge")

    def _disable(self, why: str) -> None:
        if self.error is None:
            log.error("%s: direct edge-to-edge paths off, the relay carries everything", why)
        self.error = why

    def _receive(self) -> list[tuple[rv.Message, str]]:
        got: list[tuple[rv.Message, str]] = []
        sock = self._sock
        if sock is None:
            return got
        for _ in range(64):
            try:
                data, (host, _port) = sock.recvfrom(8192)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            try:
                sender = rv.peek_sender(data)
                if host != str(control_address(sender)):
                    raise rv.MessageError(f"from {host}, not the sender's control address")
                key = self._pair_key(sender)
                if key is None:
                    raise rv.MessageError("from a gateway that is no partner")
                msg = rv.decode(data, key)
                if not self._replay.accept(msg.sender, msg.counter):
                    raise rv.MessageError("replayed counter")
            except rv.MessageError as exc:
                log.debug("rendezvous datagram from %s dropped: %s", host, exc)
                continue
            got.append((msg, host))
        return got

    def _pair_key(self, other: bytes) -> bytes | None:
        plan = self.plan
        if plan is None:
            return None
        known = other == plan.relay_key or other in self.pairs or any(k == other for _g, k in plan.introduces)
        if not known:
            return None
        key = self._keys.get(other)
        if key is None:
            try:
                key = self._keys[other] = rv.pair_key(self.private_key, other)
            except ValueError:
                return None
        return key

    def _send(self, kind: int, to: bytes, body: dict[str, Any]) -> None:
        key = self._pair_key(to)
        if key is None or self.plan is None:
            return
        data = rv.encode(kind, self.plan.local_key, self._counter.next(), body, key)
        self._outbox.append((data, str(control_address(to))))

    def _step(self) -> None:
        messages = self._receive()
        now = time.monotonic()
        transitions: list[str] = []
        with self.access(False) as tunnel:
            plan = self.plan
            if plan is not None and self._sock is not None:
                if plan.is_relay:
                    self._relay_step(tunnel, messages, now)
                else:
                    transitions = self._edge_step(tunnel, messages, now)
            status = self._status(tunnel, now) if (transitions or now >= self._status_due) else None
            wake, self._wake_pump = self._wake_pump, False
        if wake:
            with self.access(True):
                pass
        underlay, self._underlay_out = self._underlay_out, []
        if underlay and self.underlay is not None:
            with contextlib.suppress(Exception):
                self.underlay(underlay)
        limited, self._underlay_ttl_out = self._underlay_ttl_out, []
        for endpoint, ttls in limited:
            for ttl in ttls:
                if self.underlay is not None:
                    with contextlib.suppress(Exception):
                        self.underlay([(NAT_OPENER, endpoint)], ttl=ttl)
        outbox, self._outbox = self._outbox, []
        for data, host in outbox:
            if self._sock is None:
                break
            with contextlib.suppress(OSError):
                self._sock.sendto(data, (host, CONTROL_PORT))
        for line in transitions:
            log.info("direct path %s", line)
        if status is not None:
            self._status_due = now + STATUS_INTERVAL
            self._write_status(status)

    # ---------------------------------------------------------------------------- edge side
    def _edge_step(self, tunnel: Tunnel, messages: list[tuple[rv.Message, str]], now: float) -> list[str]:
        plan = self.plan
        assert plan is not None and plan.relay_key is not None
        transitions: list[str] = []
        for host, hops in self.hops.finished():
            for key, machine in self.machines.items():
                self._apply(tunnel, key, machine.on_hops(host, hops, now), now)
        for msg, _host in messages:
            if msg.kind == rv.INTRO and msg.sender == plan.relay_key:
                try:
                    peer_key = base64.b64decode(msg.body["peer"])
                    endpoint = _parse_endpoint(msg.body["endpoint"])
                    round_id = int(msg.body["round"])
                    start = msg.body.get("start")
                    start_mono = None if start is None else now + (float(start) - time.time())
                    own = _parse_endpoint(msg.body["you"]) if msg.body.get("you") is not None else None
                except (KeyError, ValueError, TypeError) as exc:
                    log.debug("malformed INTRO: %s", exc)
                    continue
                machine = self.machines.get(peer_key)
                if machine is not None:
                    actions = machine.on_intro(round_id, endpoint, start_mono, now, own=own)
                    self._apply(tunnel, peer_key, actions, now)
                    transitions += actions.transitions
            elif msg.kind == rv.PROBE and msg.sender in self.machines:
                try:
                    self.machines[msg.sender].on_probe(int(msg.body["seq"]), int(msg.body["ack"]),
                                                       float(msg.body["heard"]), now)
                except (KeyError, ValueError, TypeError) as exc:
                    log.debug("malformed PROBE: %s", exc)
        wanting = []
        for key, machine in self.machines.items():
            actions = machine.tick(now)
            self._apply(tunnel, key, actions, now)
            transitions += actions.transitions
            if machine.wants_round(now):
                wanting.append(key)
        newly = bool(set(wanting) - self._wanting)
        self._wanting = set(wanting)
        if now >= self._next_hello or newly:
            self._next_hello = now + (HELLO_INTERVAL if wanting else HELLO_IDLE_INTERVAL)
            self._send(rv.HELLO, plan.relay_key, {
                "want": [rv.b64(k) for k in wanting],
                "state": {rv.b64(k): m.state.value for k, m in self.machines.items()}})
        return transitions

    def _apply(self, tunnel: Tunnel, key: bytes, actions: Actions, now: float) -> None:
        """Carry out a machine's actions on the direct peer (device lock held)."""
        peer = tunnel.peers.get(key)
        plan = self.plan
        pair = self.pairs.get(key)
        if peer is None or plan is None or pair is None:
            return
        relay = tunnel.peers.get(plan.relay_key) if plan.relay_key else None
        if actions.route == "direct":
            # make-before-break: the session works both ways (probes crossed), sources are shared
            for net in pair.prefixes:
                tunnel.add_allowed_ip(peer, net)
            peer.persistent_keepalive_interval = self.timing.keepalive
        elif actions.route == "relay" and relay is not None:
            for net in pair.prefixes:
                tunnel.add_allowed_ip(relay, net)
        if actions.silence:
            _silence(peer)
        if actions.endpoint is not None:
            peer.endpoint = actions.endpoint
        if actions.initiate and peer.endpoint is not None:
            _initiate_now(peer, now)
            self._wake_pump = True
        if actions.open_nat and peer.endpoint is not None and self.underlay is not None:
            self._underlay_out.append((NAT_OPENER, peer.endpoint))
        if actions.open_ttls and peer.endpoint is not None and self.underlay is not None:
            self._underlay_ttl_out.append((peer.endpoint, actions.open_ttls))
        if actions.discover is not None:
            self.hops.request(actions.discover)
        machine = self.machines[key]
        if actions.probe and (machine.initiator or peer.current is not None):
            # The responder waits for a session: a probe would make WireGuard initiate too.
            self._send(rv.PROBE, key, machine.probe_body(now))

    # --------------------------------------------------------------------------- relay side
    def _relay_step(self, tunnel: Tunnel, messages: list[tuple[rv.Message, str]], now: float) -> None:
        plan = self.plan
        assert plan is not None
        edges = {k: g for g, k in plan.introduces}
        for msg, _host in messages:
            if msg.kind != rv.HELLO or msg.sender not in edges:
                continue
            try:
                want = {base64.b64decode(k) for k in msg.body.get("want", [])}
                states = {str(k): str(v) for k, v in dict(msg.body.get("state", {})).items()}
            except (ValueError, TypeError) as exc:
                log.debug("malformed HELLO: %s", exc)
                continue
            self._wants[msg.sender] = ({k for k in want if k in edges and k != msg.sender}, now)
            self._edge_states[msg.sender] = states
            self._hello_at[msg.sender] = now
        for key in edges:
            ep = _observed(tunnel, key)
            old = self._endpoints.get(key)
            if key in self._endpoints and ep != old and ep is not None:
                log.info("rendezvous: endpoint of %s is now %s (was %s)", edges[key], _endpoint_text(ep),
                         _endpoint_text(old) if old else "unknown")
                for other in edges:
                    if other != key and now - self._hello_at.get(other, -1e9) < 60:
                        own = self._endpoints.get(other)
                        self._send(rv.INTRO, other, {"peer": rv.b64(key), "endpoint": _endpoint_text(ep),
                                                     "round": self._round, "start": None,
                                                     "you": _endpoint_text(own) if own else None})
            self._endpoints[key] = ep
        for a, (want_a, at_a) in list(self._wants.items()):
            if now - at_a > WANT_FRESH:
                continue
            for b in list(want_a):
                want_b, at_b = self._wants.get(b, (set(), -1e9))
                pair = frozenset((a, b))
                if (a not in want_b or now - at_b > WANT_FRESH
                        or now - self._last_round.get(pair, -1e9) < ROUND_MIN_INTERVAL):
                    continue
                ep_a, ep_b = self._endpoints.get(a), self._endpoints.get(b)
                if ep_a is None or ep_b is None:
                    continue
                self._round += 1
                self._last_round[pair] = now
                start = time.time() + ROUND_LEAD
                self._send(rv.INTRO, a, {"peer": rv.b64(b), "endpoint": _endpoint_text(ep_b),
                                         "round": self._round, "start": start, "you": _endpoint_text(ep_a)})
                self._send(rv.INTRO, b, {"peer": rv.b64(a), "endpoint": _endpoint_text(ep_a),
                                         "round": self._round, "start": start, "you": _endpoint_text(ep_b)})
                want_a.discard(b)
                want_b.discard(a)
                log.info("rendezvous: round %d for %s (%s) and %s (%s)", self._round, edges[a],
                         _endpoint_text(ep_a), edges[b], _endpoint_text(ep_b))

    # ------------------------------------------------------------------------------ status
    def _status(self, tunnel: Tunnel, now: float) -> dict[str, Any]:
        plan = self.plan
        out: dict[str, Any] = {"interface": self.interface, "updated": time.time(), "error": self.error,
                               "relayed_packets": tunnel.stats.get("relayed", 0)}
        if plan is None:
            out["role"] = None
            return out
        out["control_address"] = str(control_address(plan.local_key))
        if plan.is_relay:
            out["role"] = "relay"
            out["rounds"] = self._round
            out["edges"] = {g: {"endpoint": _endpoint_text(ep) if (ep := self._endpoints.get(k)) else None,
                                "pairs": self._edge_states.get(k, {})}
                            for g, k in plan.introduces}
        else:
            out["role"] = "edge"
            out["pairs"] = {self.pairs[k].gateway: m.snapshot(now) for k, m in self.machines.items()
                            if k in self.pairs}
        return out

    def _write_status(self, status: dict[str, Any]) -> None:
        path = self.status_path
        if path is None:
            return
        try:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(status, indent=1))
            os.replace(tmp, path)
        except OSError as exc:
            log.debug("cannot write %s: %s", path, exc)


def _observed(tunnel: Tunnel, key: bytes) -> tuple[str, int] | None:
    """An edge's public endpoint as this relay sees it: where its latest authenticated packet came
    from (None before any handshake)."""
    peer = tunnel.peers.get(key)
    if peer is None or not peer.last_handshake_time_ns or peer.endpoint is None:
        return None
    return peer.endpoint


def _initiate_now(peer: Peer, now: float) -> None:
    """Make the pump's next tick send a handshake initiation to the peer's endpoint, past WireGuard's
    one-per-REKEY_TIMEOUT limit (the punching schedule caps the rate instead)."""
    peer.initiation_allowed_at = None     # the §6.4 gate (timers.may_initiate)
    peer.handshake_attempts = 0
    peer.retransmit_handshake_at = float("-inf")   # due at the next tick, whatever its clock


def _silence(peer: Peer) -> None:
    """Nothing more toward the other edge's public endpoint until the next round: no endpoint (so no
    initiation, keepalive or data leaves), no keepalive timer, no waiting packets."""
    peer.endpoint = None
    peer.persistent_keepalive_interval = 0
    peer.retransmit_handshake_at = None
    peer.staged.clear()
