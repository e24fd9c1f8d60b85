"""Gateway high availability without a control plane: who of a domain's candidates is alive and active.

The file says who *may* be active (the tunnel endpoints of a Gateway whose node is Ready, in
``spec.endpoints`` order, the file's elected endpoint preferred); this package says who *is*.
:mod:`.wire` holds the messages and their authentication, :mod:`.machine` the sans-I/O state
machine and the election rule, :mod:`.service` the UDP socket and thread that drive it for the
agent. Its output, a :class:`~.machine.LivenessView`, is an input of the pure planner
(:func:`ravenvpn.raven.plan.failover.apply_liveness`).
"""

from .machine import (CLAIM_INTERVAL, CLAIM_STALE, DEAD_AFTER, SETTLE, STATE_INTERVAL, Candidate,
                      DomainConfig, Liveness, LivenessView)
from .wire import LIVENESS_PORT

__all__ = ["LIVENESS_PORT", "STATE_INTERVAL", "DEAD_AFTER", "SETTLE", "CLAIM_INTERVAL", "CLAIM_STALE",
           "Candidate", "DomainConfig", "Liveness", "LivenessView"]
