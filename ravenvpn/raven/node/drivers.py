"""The two driver contracts of a node, after Raven's ``vpndriver.Driver`` and ``routedriver.Driver``.

A node's dataplane is two drivers that an :class:`~ravenvpn.raven.node.agent.Agent` drives from the
same :class:`~ravenvpn.raven.plan.nodeplan.NodePlan`:

- a :class:`VpnDriver` owns the tunnel interface and its WireGuard peers (ravenvpn's own is
  :class:`~ravenvpn.raven.node.wireguard.WireGuardDriver`, the embedded userspace device);
- a :class:`RouteDriver` owns routes, rules and sysctls in the kernel (ravenvpn's own is
  :class:`~ravenvpn.raven.node.applier.Applier`).

Both have the same four verbs, called in this order by one agent (never concurrently: the agent
serialises them, so a driver needs no lock of its own for them):

``init()``
    Once, before the first ``apply``: check what can be checked without changing the host.
    Raises :class:`~ravenvpn.errors.RavenError` if the driver cannot work here; the agent then
    stops without having changed anything (Raven: "if return an error, raven agent will exit").
``mtu()``
    The largest packet, in bytes, the driver's paths carry on this host now (read from the kernel
    on each call). The VPN driver's takes the peers' endpoints its packets will go to; unless the
    MTU is configured, the agent plans with it (the tunnel MTU). Raises RavenError when it cannot
    be determined.
``apply(plan)``
    Converge the host to ``plan``. Idempotent: applying the same plan again changes nothing and
    returns an empty report (``report.changed`` is false). The agent retries nothing by itself: after
    a failure it keeps the last good plan and applies again on the next change or
    :meth:`~ravenvpn.raven.node.agent.Agent.reload`. Raises RavenError (a subclass says which part
    failed); what a failed call leaves behind is stated per driver below.
``cleanup()``
    Remove everything the driver installed (also what an earlier process recorded, for a route
    driver with a state file); idempotent, best effort: something already gone is not an error.

Error semantics per driver:

- ``RouteDriver.apply`` is all-or-nothing: on failure it undoes this call's changes and raises
  :class:`~ravenvpn.errors.ApplyError`; the kernel is as before the call.
- ``VpnDriver.apply`` creating the interface either succeeds or leaves no interface behind
  (:class:`~ravenvpn.errors.StartupError`). Reconfiguring a running interface can fail half-way (a
  busy UDP port, a vanished link): the interface stays up with the previous peers or part of the
  change, and the next ``apply`` converges it. It never tears down a working tunnel on a failure.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from ..plan.nodeplan import NodePlan

__all__ = ["DriverReport", "VpnDriver", "RouteDriver"]


@runtime_checkable
class DriverReport(Protocol):
    """What an ``apply`` or ``cleanup`` changed; :meth:`summary` is one line for the log."""

    @property
    def changed(self) -> bool:
        """True when the call changed the host."""
        ...

    def summary(self) -> str:
        """One line, e.g. ``routes +2 -1, rules +0 -0, sysctls 0``."""
        ...


@runtime_checkable
class VpnDriver(Protocol):
    """The tunnel interface and its peers (Raven's ``vpndriver.Driver``); see the module doc for the contract."""

    def init(self) -> None:
        """Check, without changing the host, that the driver can work. Raises: RavenError."""
        ...

    def mtu(self, endpoints: Iterable[tuple[str, int]] = ()) -> int:
        """Largest inner packet, in bytes, the tunnel carries over the underlay paths toward
        ``endpoints`` (the peers' (ip, port)). Raises: RavenError."""
        ...

    def apply(self, plan: NodePlan) -> DriverReport:
        """Converge the interface and peers to ``plan`` (no interface unless the plan's role is
        active gateway). Idempotent. Raises: RavenError (StartupError: no interface was left behind)."""
        ...

    def cleanup(self) -> DriverReport:
        """Remove the interface (its peers and sessions go with it). Idempotent, never raises."""
        ...

    @property
    def stopped(self) -> str | None:
        """Why the interface stopped on its own (deleted from outside, a fatal socket error), or None
        while it runs or when there is none. The agent treats a reason as fatal."""
        ...


@runtime_checkable
class RouteDriver(Protocol):
    """Routes, rules and sysctls (Raven's ``routedriver.Driver``); see the module doc for the contract."""

    def init(self) -> None:
        """Read the driver's records (state file). Raises: RavenError when they are unreadable."""
        ...

    def mtu(self) -> int:
        """Largest packet, in bytes, the routes' underlay carries. Raises: RavenError."""
        ...

    def apply(self, plan: NodePlan) -> DriverReport:
        """Make routes, rules and sysctls match ``plan``; idempotent, all-or-nothing.
        Raises: ApplyError (nothing changed)."""
        ...

    def cleanup(self) -> DriverReport:
        """Remove every route and rule installed, restore saved sysctls. Idempotent.
        Raises: RavenError only when the kernel cannot be reached at all."""
        ...
