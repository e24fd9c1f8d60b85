"""The per-pair state machine of a direct edge<->edge path (sans-I/O: time is passed in).

One :class:`PairMachine` per other NAT'd edge gateway, on each edge. States::

    forced-relay      the setting (or the NAT types) keeps the pair on the relay; nothing is sent
    relayed           data goes through the relay; waits (quietly) until the next round may start
    trying-lan        a round's first phase when the relay shows both edges at one public IP: for
                      2 s the initiator sends handshake initiations (4) to the other's *private*
                      endpoint (its InternalIP, port 4500) and probes follow as in punching
    punching          a round runs: from the common start time, on a fixed schedule, one edge (the
                      initiator: the lower public key) sends WireGuard handshake initiations to the
                      other's public endpoint and the other sends NAT openers (empty UDP datagrams
                      from its tunnel port, which any WireGuard drops; TTL-limited where a router
                      lies between the NATs) to the first's; probes every 0.2 s once a session exists
    direct            both ways proven by authenticated probes; the other domain's subnets are
                      routed to the direct peer; probes every 0.2 s watch the path; ``via`` says
                      where: ``public`` (the punched public endpoint) or ``lan`` (the private one)
    failed-symmetric  several rounds failed in a row (the NATs map per destination, as
                      ``MASQUERADE --random-fully`` does): relayed, one capped round every 5 min

    relayed --INTRO(start)--> punching --probe acked--> direct --silence 1 s--> relayed (quiet)
    punching --window over--> relayed (quiet, backoff) | failed-symmetric (after 3 failures)
    relayed --INTRO(start, same public IP)--> trying-lan --probe acked--> direct (via lan)
    trying-lan --2 s, nothing proven--> punching (the public endpoint, from the round's start + 2 s)

Two edges behind one public IP may share a LAN (one site NAT) or not (carrier-grade NAT puts
different sites behind one address; their private addresses may even coincide). The same public
IP is therefore only a reason to *try* the private endpoint, never proof: the pair goes direct there
only when authenticated probes (which only the other gateway's key can answer) cross both ways.
Punching toward the shared public IP itself would need the NAT to hairpin, which many do not.
The relay's INTRO tells each edge its own observed public endpoint too, so both edges of a round
see the same two endpoints and agree on the phases: a same-IP round is a LAN phase of 2 s, then an
ordinary punching round that starts (for both, at once) when the LAN phase ends. If the LAN phase
fails the machine clears the direct peer (nothing more goes to the private address) before punching
the public endpoint; a later round tries the private endpoint again, so those retries follow the
rounds' backoff (35 s, 70 s, ... then every 5 min) and are capped at 4 initiations each. A lost
LAN path falls back to the relay like a public one.

Timing, and why: a Linux NAT router (conntrack) that receives the other edge's packet *before* its own
edge's outgoing packet created the mapping records that packet as a connection of its own, if it lets it
in; the later outgoing packet then clashes with it and gets another port, and the other edge's
retries keep the bad entry alive. Hence (1) both edges start at the same wall-clock time, sent by the
relay to both at once, so the mappings usually exist before the other side's packets arrive; (2)
after a failed round or a lost direct path an edge stays *silent* toward the other edge's endpoint
(no initiations, probes or keepalives) for longer than conntrack's UDP timeout (30 s), so any such
entry expires before the next round; (3) rounds back off (35 s, 70 s, ... 300 s) and the initiations
of a round are capped (7 in 4 s). (4) Only one edge initiates: initiations that cross in flight
make both sides drop their own pending handshake for the other's, and a round of crossings never
completes (WireGuard itself breaks such ties only by its random retry jitter). Raven sends keepalives every 5 s toward NAT'd peers; the direct
peer gets the same once direct.

(1) alone leaves a race on a NAT router that accepts unsolicited UDP: the initiator's first
initiation and the other edge's first opener leave at the same moment, and where the WAN adds no
delay the initiation can reach the far router before that router has forwarded its own edge's
opener (and an unlimited opener can likewise reach the initiator's router before the initiation
leaves it). Hence (5) TTL-limited openers: each edge learns once per endpoint address how many
hops away the other NAT router is (``H``, :mod:`.hops`: traceroute-style probes from a socket of
its own); the non-initiator's openers carry every TTL in ``2 .. H-1``, enough to pass its own NAT
(hop 1) and to die before hop ``H``, so they make the local mapping and never reach the other
router, and they go out *early*: when the INTRO arrives (or as soon as ``H`` is known, within
:data:`~.hops.DISCOVERY_TIMEOUT` of it), about half a second (the relay's round lead) before the
initiator's first initiation at the common start -- a margin that also covers wall-clock skew
between the two edges up to a few hundred milliseconds (each converts the relay's wall-clock start
to its own monotonic clock). They are repeated on the initiation schedule to keep the mapping fresh.
Where no TTL is safe (the two NATs are neighbours, ``H <= 2``, as on the lab's flat WAN) or nothing
answered the probes, openers go unlimited on the initiation schedule as before, and (1) with the
WAN's own delay has to do; while ``H`` is still being found, no opener is sent (an unlimited one
could be the poisoning packet).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum

from .hops import opener_ttls

__all__ = ["PairState", "PairMachine", "Actions", "Timing"]


class PairState(StrEnum):
    """Where a pair's traffic goes and what the machine is doing (shown in ``ravenvpn status``)."""

    FORCED_RELAY = "forced-relay"
    RELAYED = "relayed"
    TRYING_LAN = "trying-lan"
    PUNCHING = "punching"
    DIRECT = "direct"
    FAILED_SYMMETRIC = "failed-symmetric"


@dataclass(frozen=True)
class Timing:
    """The machine's timing, seconds. Defaults are the production values (see the module doc)."""

    probe_interval: float = 0.2
    initiations: tuple[float, ...] = (0.0, 0.3, 0.6, 1.0, 1.5, 2.5, 4.0)  # after the round's start
    window: float = 6.0              # a round that proved nothing by then failed
    dead_after: float = 1.0          # direct: no probe heard for this long -> back to the relay
    quiet: float = 35.0              # silence after a failure: > conntrack's UDP timeout (30 s)
    max_quiet: float = 300.0
    symmetric_after: int = 3         # failed rounds in a row -> failed-symmetric
    symmetric_retry: float = 300.0
    keepalive: int = 5               # persistent keepalive on the direct peer, seconds (Raven's)
    lan_initiations: tuple[float, ...] = (0.0, 0.3, 0.7, 1.2)  # trying-lan: after the round's start
    lan_window: float = 2.0          # trying-lan: then the public punching phase starts


@dataclass
class Actions:
    """What the runtime must do after one :meth:`PairMachine.tick` (all optional).

    ``endpoint``: set the direct peer's endpoint to this ``(host, port)``; ``silence``: clear it
    (stop all sending toward the other edge); ``initiate``: send a handshake initiation now;
    ``route``: ``"direct"`` or ``"relay"`` -- move the subnets; ``probe``: send a probe now;
    ``open_nat``: send a NAT opener (an empty UDP datagram from the tunnel port) now;
    ``open_ttls``: send one such opener with each of these IP TTLs now (they die before the other
    NAT router); ``discover``: find the hop count to this address (:mod:`.hops`, in a worker) and
    report it with :meth:`PairMachine.on_hops`.
    """

    endpoint: tuple[str, int] | None = None
    silence: bool = False
    initiate: bool = False
    route: str | None = None
    probe: bool = False
    open_nat: bool = False
    open_ttls: tuple[int, ...] = ()
    discover: str | None = None
    transitions: list[str] = field(default_factory=list)   # log lines


class PairMachine:
    """The state of one pair on one edge. ``now`` is monotonic seconds everywhere. Not thread-safe."""

    def __init__(self, gateway: str, now: float, *, initiator: bool = True, forced: str = "",
                 timing: Timing = Timing(), rng: random.Random | None = None,
                 private: tuple[str, int] | None = None) -> None:
        self.gateway = gateway
        self.private = private           # the other edge's private endpoint (InternalIP, port), if known
        self.via: str | None = None      # direct: "public" or "lan"
        self.lan_start = 0.0             # trying-lan: the round's start (self.start: the punch phase's)
        self._lan_done = 0
        self.lan_attempts = 0
        self.lan_failures = 0
        self.initiator = initiator       # this edge sends the handshake initiations of a round
        self.timing = timing
        self._rng = rng or random.Random()
        self.state = PairState.FORCED_RELAY if forced else PairState.RELAYED
        self.reason = forced
        self.since = now
        self.next_round = now            # relayed: no round before this
        self.failures = 0                # failed rounds in a row
        self.rounds = 0
        self.losses = 0                  # times a direct path went silent
        self.round_id = -1
        self.endpoint: tuple[str, int] | None = None   # the other edge's public endpoint (from the relay)
        self.start = 0.0
        self._initiations_done = 0
        self._next_probe = 0.0
        self.probe_seq = 0
        self.heard_seq = -1              # last probe seq heard from the other edge
        self.heard_at: float | None = None
        self.acked_at: float | None = None   # when the other edge last reported hearing us
        self.hops: int | None = None     # forwarding hops to the other edge's public address (None: unknown)
        self._hops_for: str | None = None    # the address self.hops was asked for
        self._hops_done = False          # discovery for that address finished (self.hops may be None)

    # ------------------------------------------------------------------ events
    def wants_round(self, now: float) -> bool:
        """Ready for a punching round (the edge says so in its HELLO)."""
        return self.state in (PairState.RELAYED, PairState.FAILED_SYMMETRIC) and now >= self.next_round

    def on_intro(self, round_id: int, endpoint: tuple[str, int], start: float | None, now: float,
                 own: tuple[str, int] | None = None) -> Actions:
        """The relay's INTRO: the other edge's public endpoint, and a round's start (monotonic) or
        None for an endpoint refresh. ``own``: this edge's public endpoint as the relay saw it (None
        from a relay that does not say); at the other's IP, the round begins with trying-lan."""
        out = Actions()
        if start is None:
            if endpoint != self.endpoint:
                self.endpoint = endpoint
                if self.state is PairState.DIRECT and self.via != "lan":
                    out.endpoint = endpoint     # roaming would find it too; the relay saw it first
            return out
        if not self.wants_round(now) or round_id == self.round_id:
            return out
        self.endpoint = endpoint
        self.round_id = round_id
        self.rounds += 1
        self.start = max(start, now)
        self._initiations_done = 0
        self.heard_seq, self.heard_at, self.acked_at = -1, None, None
        self._next_probe = self.start
        if own is not None and own[0] == endpoint[0]:
            # one public IP: maybe one LAN, maybe carrier-grade NAT; only probes can tell
            self.lan_start, self._lan_done = self.start, 0
            self.start = max(start + self.timing.lan_window, now)
            self.lan_attempts += 1
            where = f"{self.private[0]}:{self.private[1]}" if self.private else "unknown"
            self._goto(PairState.TRYING_LAN, now, f"round {round_id}: behind one public IP {own[0]} with it; "
                       f"its private endpoint {where} first", out)
            out.endpoint = self.private
            self._hops_toward(endpoint[0], out)     # found during the LAN window, ready for punching
            return out
        self._goto(PairState.PUNCHING, now, f"round {round_id} to {endpoint[0]}:{endpoint[1]}", out)
        out.endpoint = endpoint
        if not self._hops_toward(endpoint[0], out) and not self.initiator:
            out.open_ttls = opener_ttls(self.hops)    # early: the mapping exists before any initiation
        return out

    def _hops_toward(self, host: str, out: Actions) -> bool:
        """Ask for hop discovery toward ``host`` unless its hop count is known (a failed discovery
        is asked again); True when it was asked (:meth:`on_hops` then opens the NAT)."""
        if host == self._hops_for and not (self._hops_done and self.hops is None):
            return not self._hops_done
        self.hops, self._hops_for, self._hops_done = None, host, False
        out.discover = host                 # within the round's lead; on_hops opens the NAT then
        return True

    def on_hops(self, host: str, hops: int | None, now: float) -> Actions:
        """The hop count to ``host`` was found (None: nothing answered). During a round, the
        non-initiator opens its NAT at once with TTL-limited openers, ahead of the initiations."""
        out = Actions()
        if host != self._hops_for or self._hops_done:
            return out
        self.hops, self._hops_done = hops, True
        if self.state is PairState.PUNCHING and not self.initiator:
            out.open_ttls = opener_ttls(hops)
        return out

    def on_probe(self, seq: int, ack: int, heard: float, now: float) -> None:
        """An authenticated probe from the other edge, over the direct peer: it reaches us; with
        ``ack`` >= 0 and ``heard`` (seconds since it last heard us) small, we reach it too."""
        if self.state not in (PairState.PUNCHING, PairState.DIRECT, PairState.TRYING_LAN):
            return
        if seq > self.heard_seq:
            self.heard_seq = seq
        self.heard_at = now
        if ack >= 0 and heard < self.timing.dead_after:
            self.acked_at = now - heard

    def next_deadline(self) -> float | None:
        """When the next scheduled initiation is due (monotonic), None when none is: the runtime
        sleeps exactly until then, so both edges fire within a millisecond of the common start."""
        if self.state is PairState.TRYING_LAN:
            sched = self.timing.lan_initiations
            if self.initiator and self.private is not None and self._lan_done < len(sched):
                return self.lan_start + sched[self._lan_done]
            return self.start           # the punching phase begins on time, on both edges
        if self.state is not PairState.PUNCHING or self._initiations_done >= len(self.timing.initiations):
            return None
        return self.start + self.timing.initiations[self._initiations_done]

    def probe_body(self, now: float) -> dict[str, float | int]:
        """The next PROBE body (counts the seq)."""
        self.probe_seq += 1
        heard = now - self.heard_at if self.heard_at is not None else 1e9
        return {"seq": self.probe_seq, "ack": self.heard_seq, "heard": round(min(heard, 1e9), 3)}

    def force_relay(self, reason: str, now: float) -> Actions:
        """The setting changed to relay-only (or the NAT types rule direct out)."""
        out = Actions()
        if self.state is not PairState.FORCED_RELAY:
            if self.state is PairState.DIRECT:
                out.route = "relay"
            out.silence = True
            self.reason = reason
            self.via = None
            self._goto(PairState.FORCED_RELAY, now, reason, out)
        return out

    def allow(self, now: float) -> None:
        """The setting no longer forces the relay."""
        if self.state is PairState.FORCED_RELAY:
            self.reason = ""
            self.state, self.since, self.next_round = PairState.RELAYED, now, now

    # -------------------------------------------------------------------- time
    def tick(self, now: float) -> Actions:
        """Advance to ``now``; returns what to do."""
        out = Actions()
        t = self.timing
        if self.state is PairState.TRYING_LAN:
            self._tick_lan(now, out)
        if self.state is PairState.PUNCHING:
            if now >= self.start:
                sched = t.initiations
                while self._initiations_done < len(sched) and now >= self.start + sched[self._initiations_done]:
                    self._initiations_done += 1
                    if self.initiator:
                        out.initiate = True
                    elif self._hops_done:       # while H is unknown, no opener (it might poison)
                        out.open_ttls = opener_ttls(self.hops)
                        out.open_nat = not out.open_ttls
                if now >= self._next_probe:
                    self._next_probe = now + t.probe_interval
                    out.probe = True
            if self._both_ways(now):
                self.failures = 0
                out.route = "direct"
                self.via = "public"
                self._goto(PairState.DIRECT, now, "authenticated both ways", out)
            elif now >= self.start + t.window:
                self.failures += 1
                self._fail(now, f"round {self.round_id} failed ({self.failures} in a row)", out)
        elif self.state is PairState.DIRECT:
            if now >= self._next_probe:
                self._next_probe = now + t.probe_interval
                out.probe = True
            silent = now - (self.heard_at or self.since)
            unacked = now - (self.acked_at or self.since)
            if silent > t.dead_after or unacked > t.dead_after:
                self.losses += 1
                self._fail(now, f"direct path silent for {max(silent, unacked):.1f} s", out, route=True)
        return out

    def _tick_lan(self, now: float, out: Actions) -> None:
        """trying-lan: initiations (initiator) and probes toward the private endpoint; direct once
        probes crossed, else punching at the round's start + lan_window."""
        t = self.timing
        if now >= self.lan_start:
            sched = t.lan_initiations
            while self._lan_done < len(sched) and now >= self.lan_start + sched[self._lan_done]:
                self._lan_done += 1
                if self.initiator and self.private is not None:
                    out.initiate = True
            # the responder probes only once a session exists (the runtime checks), wherever from
            if now >= self._next_probe and (self.private is not None or not self.initiator):
                self._next_probe = now + t.probe_interval
                out.probe = True
        where = f"{self.private[0]}:{self.private[1]}" if self.private else "its private endpoint"
        if self._both_ways(now):
            self.failures = 0
            self.via = "lan"
            out.route = "direct"
            self._goto(PairState.DIRECT, now, f"authenticated both ways at {where}", out)
        elif now >= self.start:
            self.lan_failures += 1
            self.heard_seq, self.heard_at, self.acked_at = -1, None, None
            self._initiations_done = 0
            self._next_probe = self.start
            out.silence = True           # nothing more to the private address: clear the peer first
            out.endpoint = self.endpoint
            public = f"{self.endpoint[0]}:{self.endpoint[1]}" if self.endpoint else "?"
            self._goto(PairState.PUNCHING, now, f"nothing proven at {where} in {t.lan_window:g} s (not one "
                       f"LAN); round {self.round_id} to {public}", out)

    def _both_ways(self, now: float) -> bool:
        return (self.heard_at is not None and now - self.heard_at <= self.timing.dead_after
                and self.acked_at is not None and now - self.acked_at <= self.timing.dead_after)

    def _fail(self, now: float, why: str, out: Actions, route: bool = False) -> None:
        t = self.timing
        if route:
            out.route = "relay"
        out.silence = True
        self.via = None
        if self.failures >= t.symmetric_after:
            wait = t.symmetric_retry
            state = PairState.FAILED_SYMMETRIC
        else:
            wait = min(t.quiet * 2 ** max(self.failures - 1, 0), t.max_quiet)
            state = PairState.RELAYED
        self.next_round = now + wait * self._rng.uniform(1.0, 1.1)
        self._goto(state, now, f"{why}; next round in {self.next_round - now:.0f} s", out)

    def _goto(self, state: PairState, now: float, why: str, out: Actions) -> None:
        out.transitions.append(f"{self.gateway}: {self.state.value} -> {state.value} ({why})")
        self.state, self.since = state, now

    def snapshot(self, now: float) -> dict[str, object]:
        """The pair's status (JSON-ready): state, endpoint (the private one while trying-lan or direct
        via LAN, else the public one), ``via`` (direct: ``public``/``lan``), counters, seconds in the
        state."""
        lan = self.via == "lan" or self.state is PairState.TRYING_LAN
        ep = self.private if lan else self.endpoint
        return {"state": self.state.value, "reason": self.reason,
                "endpoint": f"{ep[0]}:{ep[1]}" if ep else None,
                "via": self.via, "lan_attempts": self.lan_attempts, "lan_failures": self.lan_failures,
                "for": round(now - self.since, 1), "rounds": self.rounds, "failures": self.failures,
                "losses": self.losses, "hops": self.hops,
                "next_round_in": round(max(self.next_round - now, 0.0), 1)
                if self.state in (PairState.RELAYED, PairState.FAILED_SYMMETRIC) else None}
