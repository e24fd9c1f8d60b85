"""Gateway high availability without a control plane: who of a domain's candidates is alive and active.

The file says who *may* be active (the tunnel endpoints of a Gateway whose node is Ready, in
``spec.endpoints`` order, the file's elected endpoint preferred); this package says who *is*.
:mod:`.wire` holds the messages and their authentication, :mod:`.machine` the sans-I/O state
machine and the election rule, :mod:`.service` the UDP socket and thread that drive it for the
agent. Its output, a :class:`~.machine.LivenessView`, is an input of the pure planner
(:func:`ravenvpn.raven.plan.failover.apply_liveness`); the agent reconciles when it changes.

Design decisions (and why):

* **Push, one-way authenticated sessions.** Members have no key, candidates have their WireGuard
  static key and everybody knows the candidates' public keys from the file: a Noise-NK-like
  HELLO/WELCOME gives each watcher a fresh session with each candidate, which then pushes STATEs
  every 100 ms. No signatures (X25519 cannot sign), no long-term secret on members, no replay across
  sessions (keys depend on both nonces), counters within one.
* **Terms decide, endpoint order breaks ties.** A takeover takes a term above every term heard, so
  the current active keeps the role while alive and a returning node follows it; after a partition
  the most recent takeover wins, which is also where remote gateways already route (fewer moves).
* **Witnesses against isolation.** Watchers send HEARDs back; a candidate that its domain does not
  hear neither holds nor takes the role, and must have been heard for the settle time before it
  takes it. Without this a flapping link makes its node claim on every isolation and win on every
  return. A domain with no member node has no witness (documented limit).
* **Hot standbys carry their own node's traffic.** Every Ready candidate runs ``raven0`` with the
  active's peers, routes and rules, and remote gateways hold each standby candidate as a peer with
  its own node's prefixes. Paths stay symmetric (a standby's replies leave through its own tunnel),
  a CLAIM from a standby reaches remote gateways through an already authenticated session (also
  from edges behind NAT, whose keepalives keep the mapping open), and a takeover changes only the
  members' routes and the remote gateways' AllowedIPs — nothing on the new active itself.
* **Remote gateways follow CLAIMs, not handshakes.** A CLAIM comes through the tunnel (source
  authenticated by WireGuard's cryptokey routing, arrival interface checked with ``IP_PKTINFO``);
  the holder of a domain moves only to a higher term (or same term, earlier endpoint) or when the
  holder's claims stopped: a rekey moves nothing.
* **Our own stall is not their death.** A tick that comes much later than the previous one (CPU
  starvation) extends every deadline by the gap, so a starved node does not declare others dead.
"""

from .machine import (CLAIM_INTERVAL, CLAIM_STALE, DEAD_AFTER, SETTLE, STATE_INTERVAL, Candidate,
                      DomainConfig, Liveness, LivenessView)
from .wire import LIVENESS_PORT

__all__ = ["LIVENESS_PORT", "STATE_INTERVAL", "DEAD_AFTER", "SETTLE", "CLAIM_INTERVAL", "CLAIM_STALE",
           "Candidate", "DomainConfig", "Liveness", "LivenessView"]
