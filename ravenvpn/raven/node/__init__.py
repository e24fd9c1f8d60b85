"""The node runtime: drivers that apply a plan, the agent that keeps them converged, and its records.

- :mod:`.drivers`: the :class:`VpnDriver` and :class:`RouteDriver` contracts (Raven's vpndriver and
  routedriver); :mod:`.wireguard` (:class:`WireGuardDriver`) and :mod:`.applier` (:class:`Applier`)
  are ravenvpn's own.
- :mod:`.agent`: :class:`Agent`, the reconcile loop; embeddable (no signals, logging set-up or fork).
- :mod:`.records`, :mod:`.pidfile`, :mod:`.statusfile`: what a running node keeps under its state
  directory; :mod:`.down`: ``ravenvpn down``; :mod:`.keyfile`: reading the private key.
- :mod:`.commands`: ``ravenvpn up|down|status``, a thin shell over the above.
"""
from __future__ import annotations

from .agent import Agent, ClusterSource, ReconcileReport
from .applier import Applier, ApplyReport
from .down import down
from .drivers import RouteDriver, VpnDriver
from .keyfile import read_private_key
from .records import DEFAULT_STATE_DIR
from .statusfile import NodeStatus
from .wireguard import VpnReport, WireGuardDriver

__all__ = ["Agent", "ClusterSource", "ReconcileReport", "Applier", "ApplyReport", "WireGuardDriver", "VpnReport", "VpnDriver",
           "RouteDriver", "NodeStatus", "read_private_key", "down", "DEFAULT_STATE_DIR"]
