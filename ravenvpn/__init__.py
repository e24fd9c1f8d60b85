"""ravenvpn: a userspace, WireGuard-compatible VPN dataplane for OpenYurt Raven edge gateways.

Everything an embedding program needs is importable from here; every other module is an
implementation detail whose names may change. The layers, bottom up (each uses only those below it):

**The sans-I/O WireGuard core** (``ravenvpn.protocol``; WireGuard whitepaper §5-6). :class:`Tunnel`
holds one interface's keys, peers, sessions and timers and does no I/O: its three verbs
(``send_packets``, ``receive_datagrams``, ``tick``) take a batch of packets or datagrams and ``now``
(monotonic seconds) and return an :class:`Output` saying what to send where. :class:`Peer` is one
configured peer, :class:`Counter` names every drop reason, :class:`Clock` and :class:`Timers` are the
time seam (a wall-clock offset, scaled protocol timers) for tests of rekeying, expiry and restarts.

**A running interface** (``ravenvpn.device``). :class:`Device` is TUN + UDP socket + packet pump +
optional UAPI socket (so ``wg show`` works), in any thread of any process; configure it through
``with device.configure() as tunnel:`` only.

**The Raven layer** (``ravenvpn.raven``), as cluster input → pure planner → drivers:
:func:`load_cluster` / :func:`load_cluster_file` / :func:`load_cluster_objects` turn Raven ``Gateway``
and ``Node`` objects into a validated :class:`Cluster`; :func:`plan` computes one node's
:class:`NodePlan` (its :class:`Role`, WireGuard peers, routes, rules, sysctls); the drivers apply a plan
idempotently — :class:`WireGuardDriver` (a :class:`VpnDriver`) and :class:`Applier` (a
:class:`RouteDriver`, the kernel's routes, rules and sysctls); :class:`Agent` keeps a node converged
with its cluster, as ``ravenvpn up`` does, and keeps the records ``ravenvpn status``/``down`` read.

**Errors**: every exception ravenvpn raises on purpose is a :class:`RavenError` whose ``str()`` is one
line naming the problem (:class:`ClusterError`, :class:`ApplyError`, :class:`StartupError`,
:class:`UapiError`).

The library never installs signal handlers, configures logging, forks or needs the main thread:
those belong to the command lines (``ravenvpn``, ``ravenvpn-wg``) and to the embedding program. It
logs under the ``ravenvpn`` logger. Keys are 32-byte ``bytes``; :func:`generate_private_key`,
:func:`public_key` and the base64 helpers give the forms ``wg`` uses.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ApplyError, ClusterError, RavenError, StartupError, UapiError

if TYPE_CHECKING:   # for type checkers and IDEs; at run time the names load on first use (below)
    from .device.device import Device
    from .protocol.clock import Clock
    from .protocol.counters import Counter
    from .protocol.keys import b64decode as key_from_base64
    from .protocol.keys import b64encode as key_to_base64
    from .protocol.keys import generate_private as generate_private_key
    from .protocol.keys import public_from_private as public_key
    from .protocol.peer import Peer
    from .protocol.timers import Timers
    from .protocol.tunnel import Output, Tunnel
    from .raven.cluster import Cluster, load_cluster, load_cluster_file, load_cluster_objects
    from .raven.node import (
        Agent, Applier, ApplyReport, NodeStatus, ReconcileReport, RouteDriver, VpnDriver, VpnReport,
        WireGuardDriver,
    )
    from .raven.plan import NodePlan, Role, plan

# Public name -> (module, attribute). Loaded on first access (PEP 562) so that importing any part of
# the package -- ``ravenvpn-wg`` imports ``ravenvpn.device`` -- does not load the Raven layer with
# PyYAML and the cluster model, nor the device with pyroute2 and numpy, into a process that never
# uses them: eager imports here doubled ravenvpn-wg's resident memory (22 -> 57 MiB at start).
_LAZY: dict[str, tuple[str, str]] = {
    "Device": (".device.device", "Device"),
    "Clock": (".protocol.clock", "Clock"),
    "Counter": (".protocol.counters", "Counter"),
    "key_from_base64": (".protocol.keys", "b64decode"),
    "key_to_base64": (".protocol.keys", "b64encode"),
    "generate_private_key": (".protocol.keys", "generate_private"),
    "public_key": (".protocol.keys", "public_from_private"),
    "Peer": (".protocol.peer", "Peer"),
    "Timers": (".protocol.timers", "Timers"),
    "Output": (".protocol.tunnel", "Output"),
    "Tunnel": (".protocol.tunnel", "Tunnel"),
    **{name: (".raven.cluster", name)
       for name in ("Cluster", "load_cluster", "load_cluster_file", "load_cluster_objects")},
    **{name: (".raven.node", name)
       for name in ("Agent", "Applier", "ApplyReport", "NodeStatus", "ReconcileReport", "RouteDriver",
                    "VpnDriver", "VpnReport", "WireGuardDriver")},
    **{name: (".raven.plan", name) for name in ("NodePlan", "Role", "plan")},
}


def __getattr__(name: str) -> Any:
    """Load a public name on first use (PEP 562) and keep it in the package namespace.

    Raises:
        AttributeError: ``name`` is not a public name of ravenvpn.
    """
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'ravenvpn' has no attribute {name!r}") from None
    import importlib
    value = getattr(importlib.import_module(module, __name__), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.2.0"

__all__ = [
    "__version__",
    # the sans-I/O WireGuard core
    "Tunnel", "Output", "Peer", "Counter", "Clock", "Timers",
    "generate_private_key", "public_key", "key_to_base64", "key_from_base64",
    # a running interface
    "Device",
    # cluster input and planning
    "Cluster", "load_cluster", "load_cluster_file", "load_cluster_objects", "plan", "NodePlan", "Role",
    # drivers and the reconcile loop
    "VpnDriver", "RouteDriver", "WireGuardDriver", "VpnReport", "Applier", "ApplyReport",
    "Agent", "ReconcileReport", "NodeStatus",
    # errors
    "RavenError", "ClusterError", "ApplyError", "StartupError", "UapiError",
]
