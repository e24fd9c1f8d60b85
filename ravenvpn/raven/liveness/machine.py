"""The liveness state machine of one node: sans-I/O, driven by datagrams and a monotonic clock.

:class:`Liveness` is fed received datagrams (:meth:`Liveness.receive`) and clock ticks
(:meth:`Liveness.tick`) and returns the datagrams to send; :meth:`Liveness.view` says who it
believes is active, for :func:`ravenvpn.raven.plan.failover.apply_liveness`. All times are
``time.monotonic()`` seconds passed in by the caller; nothing here reads a clock or a socket.
Not thread-safe: the caller serialises calls (the service holds a lock).

Roles on the private network of one domain (see :mod:`.wire` for the messages):

* every node *watches* every tunnel candidate of its domain but itself (HELLO → WELCOME, then
  the candidate pushes a STATE every :data:`STATE_INTERVAL`); a candidate unheard for
  :data:`DEAD_AFTER` is dead;
* a candidate that holds its key also *serves* watchers: one session per source address, HELLOs
  accepted only from the domain's node IPs and rate-limited per source and in total;
* an active candidate sends a CLAIM to every candidate of every remote gateway each
  :data:`CLAIM_INTERVAL` (through the tunnel), and receivers keep one *holder* per remote gateway.

The election rule (:func:`decide`), evaluated by every node on what it heard:

1. Claimants are the live candidates that say "active" (and ourselves if we are active). The
   best claimant has the highest term, then the earliest place in the candidate order (the
   file's elected endpoint first, then ``spec.endpoints`` order). An active node that hears a
   better claimant steps down: a healed partition ends with exactly one active.
2. A standby candidate takes over when no live candidate claims the role, it is the first live
   candidate in the order, and it has listened for :data:`SETTLE` since it started (so a node
   that returns hears the current active before it could claim). Its term is one more than any
   term it has heard: the current active keeps the role while alive, the returning one follows.
3. A candidate must be *connected* to hold or take the role: in a domain with member nodes, some
   other node of the domain heard it within :data:`DEAD_AFTER` (the watchers' HEARDs) or it hears a
   live candidate; to *take* the role it must have been connected for :data:`SETTLE` (like a
   starting node, a returning one first hears who is active). An active cut off from its LAN steps
   down, a cut-off standby does not claim; so a flapping link does not make its node grab the role
   each time it is isolated and win it back on every return. (A domain of candidates only has no such witness: there a
   cut-off candidate claims, and the term rule settles it when the link returns.)
4. A remote gateway moves a domain's holder to a claimant with a higher term (or the same term
   and an earlier place), or to any claimant once the holder's claims are :data:`CLAIM_STALE`
   old — never on a rekey, which carries no claim.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ...protocol import crypto
from ...protocol.ratelimit import HandshakeRateLimiter
from . import wire

__all__ = [
    "STATE_INTERVAL", "DEAD_AFTER", "HELLO_RETRY", "SETTLE", "CLAIM_INTERVAL", "CLAIM_STALE",
    "Candidate", "DomainConfig", "LivenessView", "PeerState", "Decision", "decide", "Liveness",
]

STATE_INTERVAL = 0.1   # seconds between STATEs a candidate pushes to each watcher
DEAD_AFTER = 0.6       # seconds without an authentic STATE: the candidate is dead (6 intervals: 10 % loss
                       # loses 6 in a row once in a million)
HELLO_RETRY = 0.25     # seconds between HELLOs to a candidate we have no live session with
SETTLE = 0.8           # seconds a starting candidate listens before it may claim the role
CLAIM_INTERVAL = 0.5   # seconds between CLAIMs of an active candidate to remote gateways
CLAIM_STALE = 3.0      # seconds after which a remote holder that stopped claiming may be replaced
FRESH = 0.3            # seconds: to take the role, the domain must have heard us this recently (a node
                       # cut off sees the active die after DEAD_AFTER, when its last HEARD is as old)
LAG_GRACE = 0.3        # a tick later than this after the previous one: we were not running, not them
HELLO_RATE, HELLO_BURST = 10.0, 5          # per source address
HELLO_TOTAL_RATE, HELLO_TOTAL_BURST = 100.0, 50

Address = tuple[str, int]
Datagram = tuple[bytes, Address]


@dataclass(frozen=True)
class Candidate:
    """A tunnel endpoint of a Gateway whose node is Ready in the file."""

    node: str
    address: str          # the node's private IP (status.nodes privateIP)
    public_key: bytes     # config.publicKey of its tunnel endpoint


@dataclass(frozen=True)
class DomainConfig:
    """What the file says about the local node's domain and the remote gateways' candidates.

    ``candidates`` is in preference order: the file's elected endpoint (``status.activeEndpoints``)
    first, then the others in ``spec.endpoints`` order. ``watchers`` are the private IPs of every
    node of the domain (the only sources whose HELLO a candidate answers). ``remote`` maps each
    remote gateway to its candidates in its own preference order.
    """

    gateway: str
    local_node: str
    candidates: tuple[Candidate, ...]
    watchers: frozenset[str]
    remote: tuple[tuple[str, tuple[Candidate, ...]], ...] = ()
    port: int = wire.LIVENESS_PORT
    address: str = "0.0.0.0"      # the local node's private IP: the service binds it

    def candidate(self, node: str) -> Candidate | None:
        """The candidate on ``node``, None when that node is none."""
        return next((c for c in self.candidates if c.node == node), None)

    def order(self, node: str) -> int:
        """``node``'s place in the preference order (0 first); after every candidate when it is none."""
        return next((i for i, c in enumerate(self.candidates) if c.node == node), len(self.candidates))


@dataclass(frozen=True)
class LivenessView:
    """Who is active, as this node's liveness sees it: the input of ``apply_liveness``.

    ``active`` maps gateway names to the node liveness says terminates their tunnels; a gateway
    absent from it is left to the file's election. ``local_active`` says whether the local node
    holds the role (only then may the plan make it the active gateway).
    """

    active: tuple[tuple[str, str | None], ...] = ()
    local_active: bool = False
    term: int = 0

    def active_of(self, gateway: str) -> str | None:
        """The node liveness says is ``gateway``'s active one; None when unknown or said to be nobody."""
        return dict(self.active).get(gateway)


@dataclass
class PeerState:
    """What a watcher knows of one candidate."""

    alive: bool = False
    active: bool = False
    term: int = 0


@dataclass(frozen=True)
class Decision:
    """The outcome of :func:`decide`: whether we hold the role, our term, and who is active."""

    local_active: bool
    term: int
    active: str | None      # the domain's active candidate as far as we know


def decide(order: tuple[str, ...], local: str, local_is_candidate: bool, local_active: bool,
           local_term: int, peers: dict[str, PeerState], max_term: int, may_take_over: bool,
           previous: str | None, connected: bool = True) -> Decision:
    """The election rule (module docstring, points 1-3); pure.

    ``order`` is the candidate preference order, ``peers`` the watched candidates' states,
    ``max_term`` the highest term heard so far, ``may_take_over`` false while settling or after a
    resign, ``previous`` the last known active (kept when nobody claims: members do not flap),
    ``connected`` whether the domain still hears us (point 3).
    """
    def rank(node: str, term: int) -> tuple[int, int]:
        idx = order.index(node) if node in order else len(order)
        return (term, -idx)

    claimants = {n: s.term for n, s in peers.items() if s.alive and s.active and n in order}
    if local_active and not connected:
        local_active = False                                 # cut off: give the role up
    if local_active and local_is_candidate:
        claimants[local] = local_term
    if claimants:
        best = max(claimants, key=lambda n: rank(n, claimants[n]))
        if local_active and best != local:
            return Decision(False, local_term, best)          # a better claimant: step down
        return Decision(local_active and local_is_candidate, local_term, best)
    if local_is_candidate and may_take_over and connected:
        live = [n for n in order if n == local or (n in peers and peers[n].alive)]
        if live and live[0] == local:
            term = max(max_term, local_term) + 1
            return Decision(True, term, local)
    keep = previous if previous in order and previous != local else None
    return Decision(False, local_term, keep)


@dataclass
class _Served:
    """A watcher's session at the candidate (us)."""

    session: int
    keys: wire.SessionKeys
    counter: int = 0
    heard_at: float = float("-inf")     # its last authentic HEARD
    heard_counter: int = -1


@dataclass
class _Watch:
    """Our session with one candidate."""

    candidate: Candidate
    pending: tuple[X25519PrivateKey, bytes] | None = None  # ephemeral private, nonce of the last HELLO
    hello_at: float = float("-inf")
    session: int | None = None
    keys: wire.SessionKeys | None = None
    last_counter: int = -1
    heard_at: float = float("-inf")
    sent_heard: int = 0
    state: PeerState = field(default_factory=PeerState)


@dataclass
class _Holder:
    node: str
    term: int
    seen_at: float


class Liveness:
    """One node's liveness protocol (see the module docstring). Not thread-safe.

    ``private_key`` is the node's WireGuard static key when it is a candidate (None otherwise: it
    then only watches). ``now`` is the monotonic time at start: the settle period runs from it.
    """

    def __init__(self, config: DomainConfig, private_key: bytes | None, now: float) -> None:
        self._static = X25519PrivateKey.from_private_bytes(private_key) if private_key else None
        self._public = self._static.public_key().public_bytes_raw() if self._static else None
        self._started = now
        self._last_tick = now
        self._served: dict[Address, _Served] = {}
        self._watches: dict[str, _Watch] = {}
        self._holders: dict[str, _Holder] = {}
        self._per_source = HandshakeRateLimiter(HELLO_RATE, HELLO_BURST)
        self._total = HandshakeRateLimiter(HELLO_TOTAL_RATE, HELLO_TOTAL_BURST)
        self._next_state = now
        self._next_claim = now
        self.local_active = False
        self.term = 0
        self._max_term = 0
        self._resigned = False
        self._active: str | None = None
        self._connected_since: float | None = None
        self.rejected = 0          # datagrams dropped (bad, forged, replayed, rate-limited): for tests
        self.config = config
        self.configure(config, now)

    # ------------------------------------------------------------------ configuration
    def configure(self, config: DomainConfig, now: float) -> None:
        """Follow a new cluster file: watch its candidates, forget the others."""
        self.config = config
        self._gw_id = wire.gateway_id(config.gateway)
        wanted = {c.node: c for c in config.candidates if c.node != config.local_node}
        for node in list(self._watches):
            if node not in wanted or self._watches[node].candidate != wanted[node]:
                del self._watches[node]
        for node, cand in wanted.items():
            self._watches.setdefault(node, _Watch(cand))
        self._served = {a: s for a, s in self._served.items() if a[0] in config.watchers}
        if self.local_active and not self.is_candidate:
            self.local_active = False
        self._decide(now)

    @property
    def is_candidate(self) -> bool:
        """The local node is a Ready tunnel candidate and holds its key."""
        own = self.config.candidate(self.config.local_node)
        return own is not None and self._public is not None and crypto.constant_time_eq(own.public_key, self._public)

    # ------------------------------------------------------------------ the view
    def view(self) -> LivenessView:
        """Who is active (own domain, and remote holders heard through the tunnel)."""
        active: dict[str, str | None] = {h: v.node for h, v in self._holders.items()}
        if self.local_active:
            active[self.config.gateway] = self.config.local_node
        elif self._active is not None:
            active[self.config.gateway] = self._active
        elif self.is_candidate:
            active[self.config.gateway] = None   # nobody known yet: not us, and not the file's guess
        return LivenessView(tuple(sorted(active.items())), self.local_active, self.term)

    def peer_states(self) -> dict[str, PeerState]:
        """The watched candidates' states (copies), by node name."""
        return {n: PeerState(w.state.alive, w.state.active, w.state.term) for n, w in self._watches.items()}

    # ------------------------------------------------------------------ input
    def receive(self, data: bytes, source: Address, now: float, via_tunnel: bool = False) -> list[Datagram]:
        """Handle one datagram from ``source``; ``via_tunnel``: it arrived on the tunnel interface.

        Returns the datagrams to send. Anything malformed, unauthentic, replayed or over the rate
        is dropped silently (counted in ``rejected``): an attacker learns nothing from replies.
        """
        kind = wire.message_type(data)
        try:
            if kind == wire.HELLO and not via_tunnel:
                return self._on_hello(data, source, now)
            if kind == wire.WELCOME and not via_tunnel:
                self._on_welcome(data, source, now)
            elif kind == wire.STATE and not via_tunnel:
                self._on_state(data, source, now)
            elif kind == wire.HEARD and not via_tunnel:
                self._on_heard(data, source, now)
            elif kind == wire.CLAIM and via_tunnel:
                self._on_claim(data, source, now)
            else:
                self.rejected += 1
        except wire.WireError:
            self.rejected += 1
        return []

    def _on_hello(self, data: bytes, source: Address, now: float) -> list[Datagram]:
        hello = wire.parse_hello(data)
        if (self._static is None or not self.is_candidate or source[0] not in self.config.watchers
                or not crypto.constant_time_eq(hello.gateway_id, self._gw_id)):
            self.rejected += 1
            return []
        if not self._per_source.allow(source[0], now) or not self._total.allow("*", now):
            self.rejected += 1
            return []
        try:
            shared = crypto.dh(self._static, hello.ephemeral)
        except ValueError:
            self.rejected += 1
            return []
        assert self._public is not None
        nonce_c = os.urandom(16)
        keys = wire.welcome_keys(shared, self._gw_id, self._public, hello.ephemeral, hello.nonce, nonce_c)
        served = _Served(int.from_bytes(os.urandom(4), "little"), keys)
        self._served[source] = served   # one session per source: a new HELLO replaces the old
        return [(wire.make_welcome(served.session, nonce_c, keys), source), self._state_to(source, served)]

    def _watch_at(self, source: Address) -> _Watch | None:
        return next((w for w in self._watches.values()
                     if w.candidate.address == source[0] and source[1] == self.config.port), None)

    def _on_welcome(self, data: bytes, source: Address, now: float) -> None:
        watch = self._watch_at(source)
        if watch is None or watch.pending is None:
            raise wire.WireError("unexpected WELCOME")
        eph, nonce = watch.pending
        session, keys = wire.open_welcome(data, eph, watch.candidate.public_key, self._gw_id, nonce)
        watch.pending = None
        watch.session, watch.keys, watch.last_counter, watch.sent_heard = session, keys, -1, 0

    def _on_state(self, data: bytes, source: Address, now: float) -> None:
        watch = self._watch_at(source)
        session = wire.state_session(data)
        if watch is None or watch.keys is None or watch.session != session:
            raise wire.WireError("STATE of no session")
        state = wire.open_state(data, watch.keys)
        if state.counter <= watch.last_counter:
            raise wire.WireError("replayed STATE")
        watch.last_counter = state.counter
        watch.heard_at = now
        was = (watch.state.alive, watch.state.active, watch.state.term)
        watch.state = PeerState(alive=not state.resigning, active=state.active and not state.resigning,
                                term=state.term)
        if state.resigning:
            watch.heard_at = float("-inf")
            watch.session = watch.keys = None     # it is going away: a new HELLO when it comes back
        self._max_term = max(self._max_term, state.term)
        if (watch.state.alive, watch.state.active, watch.state.term) != was:
            self._decide(now)

    def _on_heard(self, data: bytes, source: Address, now: float) -> None:
        served = self._served.get(source)
        session, counter = wire.open_heard(
            data, lambda sid: served.keys if served is not None and served.session == sid else None)
        assert served is not None
        if counter <= served.heard_counter:
            raise wire.WireError("replayed HEARD")
        served.heard_counter, served.heard_at = counter, now

    def _connected(self, now: float, within: float = DEAD_AFTER) -> bool:
        """Point 3 of the rule: another node of the domain heard us (or we heard a live candidate)
        ``within`` seconds; always true when the domain has no member to ask."""
        candidates = {c.address for c in self.config.candidates}
        if not (self.config.watchers - candidates):
            return True
        return (any(now - s.heard_at <= within for s in self._served.values())
                or any(w.state.alive and now - w.heard_at <= within for w in self._watches.values()))

    def _on_claim(self, data: bytes, source: Address, now: float) -> None:
        claim = wire.parse_claim(data)
        remote = dict(self.config.remote).get(claim.gateway)
        cand = next((c for c in remote or () if c.node == claim.node), None)
        # The tunnel authenticated the source address; it must be the claimed node's own.
        if cand is None or cand.address != source[0]:
            raise wire.WireError("CLAIM from no candidate of that gateway")
        order = [c.node for c in remote or ()]
        held = self._holders.get(claim.gateway)
        if not claim.active:
            if held is not None and held.node == claim.node:
                held.seen_at = float("-inf")        # resigned: any claimant may take it at once
            return
        if held is None or held.node == claim.node:
            self._holders[claim.gateway] = _Holder(claim.node, max(claim.term, held.term if held else 0), now)
            return
        def rank(node: str, term: int) -> tuple[int, int]:
            return (term, -(order.index(node) if node in order else len(order)))

        better = rank(claim.node, claim.term) > rank(held.node, held.term)
        if better or now - held.seen_at > CLAIM_STALE:
            self._holders[claim.gateway] = _Holder(claim.node, claim.term, now)

    # ------------------------------------------------------------------ time
    def tick(self, now: float) -> list[Datagram]:
        """Advance to ``now``: expire dead candidates, send HELLOs, STATEs and CLAIMs that are due."""
        out: list[Datagram] = []
        lag = now - self._last_tick
        if lag > LAG_GRACE:
            # We did not run for a while (CPU starved, suspended): their silence is our deafness.
            for w in self._watches.values():
                w.heard_at += lag
            for served in self._served.values():
                served.heard_at += lag
        self._last_tick = now
        changed = False
        for w in self._watches.values():
            alive = w.keys is not None and now - w.heard_at <= DEAD_AFTER
            if w.state.alive and not alive:
                w.state = PeerState(False, False, w.state.term)
                w.session = w.keys = None
                changed = True
            if w.keys is None and now - w.hello_at >= HELLO_RETRY:
                hello, eph, nonce = wire.make_hello(self._gw_id)
                w.pending, w.hello_at = (eph, nonce), now
                out.append((hello, (w.candidate.address, self.config.port)))
        if changed or self.local_active or now - self._started >= SETTLE or not self._watches:
            self._decide(now)
        if now >= self._next_state:
            self._next_state = now + STATE_INTERVAL
            out.extend(self._states())
            for w in self._watches.values():
                if w.keys is not None and w.session is not None:
                    w.sent_heard += 1
                    out.append((wire.make_heard(w.session, w.sent_heard, w.keys),
                                (w.candidate.address, self.config.port)))
        if self.local_active and now >= self._next_claim:
            self._next_claim = now + CLAIM_INTERVAL
            out.extend(self._claims(wire.FLAG_ACTIVE))
        return out

    def next_deadline(self) -> float:
        """The monotonic time of the next due action (the caller sleeps until then at most)."""
        return min(self._next_state, self._next_claim if self.local_active else float("inf"),
                   *(w.hello_at + HELLO_RETRY for w in self._watches.values() if w.keys is None),
                   *(w.heard_at + DEAD_AFTER for w in self._watches.values() if w.keys is not None))

    def claim_now(self) -> None:
        """Make the next :meth:`tick` send CLAIMs (when active): routes through the tunnel just came up."""
        self._next_claim = float("-inf")

    def resign(self, now: float) -> list[Datagram]:
        """Give up the role (planned handover): STATEs and CLAIMs that say so; never claim again."""
        self._resigned = True
        was_active = self.local_active
        self.local_active = False
        out = self._states(wire.FLAG_RESIGN)
        if was_active:
            out.extend(self._claims(wire.FLAG_RESIGN))
        self._decide(now)
        return out

    # ------------------------------------------------------------------ internals
    def _decide(self, now: float) -> None:
        cfg = self.config
        connected = self._connected(now)
        if not connected:
            self._connected_since = None
        elif self._connected_since is None:
            self._connected_since = now
        settled = (now - self._started >= SETTLE and self._connected_since is not None
                   and now - self._connected_since >= SETTLE and self._connected(now, FRESH))
        d = decide(tuple(c.node for c in cfg.candidates), cfg.local_node, self.is_candidate,
                   self.local_active, self.term, {n: w.state for n, w in self._watches.items()},
                   self._max_term, not self._resigned and (settled or not self._watches),
                   self._active, connected)
        if d.local_active != self.local_active:
            self._next_state = now          # tell the watchers at once
            self._next_claim = now
        self.local_active, self.term, self._active = d.local_active, d.term, d.active
        self._max_term = max(self._max_term, d.term)

    def _state_to(self, addr: Address, served: _Served, extra: int = 0) -> Datagram:
        served.counter += 1
        flags = (wire.FLAG_ACTIVE if self.local_active else 0) | extra
        return wire.make_state(served.session, served.counter, served.keys, flags, self.term), addr

    def _states(self, extra: int = 0) -> list[Datagram]:
        if not self.is_candidate:
            return []
        return [self._state_to(addr, s, extra) for addr, s in self._served.items()]

    def _claims(self, flags: int) -> list[Datagram]:
        msg = wire.make_claim(self.config.gateway, self.config.local_node, flags, self.term)
        return [(msg, (c.address, self.config.port)) for _gw, cands in self.config.remote for c in cands]
