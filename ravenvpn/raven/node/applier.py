"""The applier: the route driver, making the kernel's routes, rules and sysctls match a NodePlan.

A :class:`~ravenvpn.raven.node.drivers.RouteDriver` (Raven's ``routedriver``). It talks to the
kernel through pyroute2, never by shelling out to `ip`. It reads what is installed, computes the
difference to the plan and changes only that, so a second apply of the same plan changes nothing.

Ownership: the routing tables named in the plan (and in earlier plans) belong to
ravenvpn wholly; rules are ours when they point at one of those tables or are
recorded in the state file. Sysctls are changed only after their original values
are saved, and `teardown` restores them. The state file lives under the run
directory so `ravenvpn down` in another process can undo an `up`.
"""
from __future__ import annotations

import ipaddress
import json
import os
import socket
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any, Callable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ...errors import ApplyError, RavenError
from ..plan.nodeplan import MAIN_TABLE, NodePlan, Route, Rule
from .links import underlay_mtu
from .records import DEFAULT_STATE_DIR, state_path

__all__ = ["Applier", "ApplyReport", "ApplyError", "RouteKey", "RuleKey", "read_sysctl", "write_sysctl"]

_FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}
_PROTO_NUMBERS = {"udp": 17, "tcp": 6}
RTN_UNICAST = 1     # linux/rtnetlink.h route type: the only kind the applier installs or removes


@dataclass(frozen=True)
class RouteKey:
    """What makes two routes the same for the applier (a difference in any field is a change)."""

    dst: str                # network, "10.244.2.0/24"
    oif: int | None         # output interface index when the route has no gateway
    gateway: str | None     # next hop
    table: int
    mtu: int | None         # RTAX_MTU metric, bytes
    src: str | None         # preferred source address


@dataclass(frozen=True)
class RuleKey:
    """What makes two ``ip rule`` entries the same; stored in the state file as a 5-element list."""

    family: int             # 4 or 6
    priority: int
    table: int
    ip_proto: int | None    # IP protocol number (17: UDP)
    sport: int | None       # source port the rule matches

    def describe(self) -> str:
        """``ipv4 priority 100 ipproto 17 sport 4500 lookup 254``: how reports name the rule."""
        extra = f" ipproto {self.ip_proto} sport {self.sport}" if self.ip_proto is not None else ""
        return f"ipv{self.family} priority {self.priority}{extra} lookup {self.table}"

    def args(self) -> dict[str, Any]:
        """pyroute2 ``IPRoute.rule`` arguments that add or delete this rule."""
        args: dict[str, Any] = {"family": _FAMILIES[self.family], "priority": self.priority, "table": self.table}
        if self.ip_proto is not None:
            args["ip_proto"] = self.ip_proto
        if self.sport is not None:
            args["sport_range"] = f"{self.sport}:{self.sport}"
        return args


@dataclass(frozen=True)
class _InstalledRoute:
    """A route as the kernel reports it (or as the applier is about to install it)."""

    dst: str
    table: int
    family: int             # socket.AF_INET / AF_INET6
    oif: int | None
    gateway: str | None
    mtu: int | None
    prefsrc: str | None

    def args(self) -> dict[str, Any]:
        """pyroute2 arguments that install this route."""
        args: dict[str, Any] = {"dst": self.dst, "table": self.table, "family": self.family}
        if self.gateway:
            args["gateway"] = self.gateway
        else:
            args["oif"] = self.oif
        if self.mtu:
            args["metrics"] = {"mtu": self.mtu}
        if self.prefsrc:
            args["prefsrc"] = self.prefsrc
        return args

    def delete(self, ipr: IPRoute) -> None:
        ipr.route("del", dst=self.dst, table=self.table, family=self.family)

    def describe(self) -> str:
        return f"{self.dst} table {self.table}"


@dataclass
class ApplyReport:
    """What one :meth:`Applier.apply` or :meth:`Applier.cleanup` changed, as ``ip``-like lines."""

    routes_added: list[str] = field(default_factory=list)
    routes_removed: list[str] = field(default_factory=list)
    rules_added: list[str] = field(default_factory=list)
    rules_removed: list[str] = field(default_factory=list)
    sysctls_set: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when the call changed a route, rule or sysctl."""
        return any((self.routes_added, self.routes_removed, self.rules_added, self.rules_removed, self.sysctls_set))

    def summary(self) -> str:
        """One line for the log: ``routes +2 -1, rules +1 -0, sysctls 3``."""
        return (f"routes +{len(self.routes_added)} -{len(self.routes_removed)}, "
                f"rules +{len(self.rules_added)} -{len(self.rules_removed)}, sysctls {len(self.sysctls_set)}")


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read_sysctl(key: str) -> str:
    """The value of sysctl ``key`` (``net.ipv4.ip_forward``), stripped.

    Raises:
        FileNotFoundError: no such sysctl (a per-interface key of a missing interface).
    """
    return _sysctl_path(key).read_text().strip()


def write_sysctl(key: str, value: str) -> None:
    """Set sysctl ``key`` to ``value``.

    Raises:
        OSError: no such sysctl, or the kernel refused the value.
    """
    _sysctl_path(key).write_text(value + "\n")


class Applier:
    """The route driver: installs one node's plan (routes, rules, sysctls) into the current network namespace.

    ``interface`` names the tunnel (routes of an active gateway point at it, and it names the state
    file ``<state_dir>/<interface>.state.json``). Constructing does no I/O; :meth:`init` (or the first
    :meth:`apply` / :meth:`cleanup`) reads the state file.

    Not thread-safe: one caller at a time (the agent serialises its calls). Separate processes
    coordinate through the state file: ``ravenvpn down`` runs :meth:`cleanup` of a crashed ``up``.
    """

    def __init__(self, interface: str = "raven0", state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR) -> None:
        self.interface = interface
        self.state_path = state_path(state_dir, interface)
        self._state: dict[str, Any] | None = None

    # -------------------------------------------------------------- contract
    def init(self) -> None:
        """Read the state file an earlier process may have left (what it installed, saved sysctls).

        Idempotent.

        Raises:
            RavenError: the state file exists but cannot be read or parsed.
        """
        if self._state is None:
            self._state = self._load_state()

    def mtu(self) -> int:
        """The underlay MTU in bytes: the routes add no encapsulation of their own.

        Raises:
            RavenError: the links cannot be listed.
        """
        return underlay_mtu(self.interface)

    def apply(self, plan: NodePlan) -> ApplyReport:
        """Make the kernel match ``plan``; only the difference changes (idempotent).

        Make before break: missing routes and rules go in before stale ones go, so traffic to a
        remote prefix never falls through to the main table while a role changes. Routes, rules and
        sysctls an earlier plan installed and this one does not want are removed or restored.

        Raises:
            ApplyError: the kernel refused a change (or a route names a missing device); every change
                of this call has been undone. The message names the node and the problem.
            RavenError: the state file is unreadable (first call only, if :meth:`init` was not called).
        """
        self.init()
        state = self._state
        assert state is not None
        report = ApplyReport()
        undo: list[Callable[[], Any]] = []
        # Never claim the main table: only the dedicated tables are wholly ours.
        tables = ({r.table for r in plan.routes} | set(state["tables"])) - {MAIN_TABLE}
        try:
            with IPRoute() as ipr:
                try:
                    ifindex = {link.get("ifname"): link["index"] for link in ipr.get_links()}
                    self._apply_sysctls(plan, report, undo)
                    # Make before break: new routes and rules go in before old ones go away, so traffic
                    # to remote prefixes never falls through to the main table (whose default route
                    # would carry it in plaintext over the underlay) while a role changes.
                    stale = self._apply_routes(ipr, plan, tables, ifindex, report, undo)
                    self._apply_rules(ipr, plan, tables, report, undo)
                    self._remove_routes(ipr, stale, report)
                except (NetlinkError, OSError, ApplyError):
                    # Undo while the netlink socket is still open: the steps use `ipr`.
                    for step in reversed(undo):
                        try:
                            step()
                        except (NetlinkError, OSError):
                            pass
                    raise
        except (NetlinkError, OSError, ApplyError) as exc:
            self._save_state()
            raise ApplyError(f"applying the plan for {plan.node_name} failed: {exc}") from None
        state["tables"] = sorted({r.table for r in plan.routes if r.table != MAIN_TABLE})
        state["rules"] = sorted((list(astuple(self._rule_key(r))) for r in plan.rules), key=lambda k: str(tuple(k)))
        self._save_state()
        return report

    def cleanup(self) -> ApplyReport:
        """Remove every route and rule in our tables (and the rules recorded as ours), restore saved
        sysctls and delete the state file. Idempotent; what is already gone is skipped.

        Raises:
            RavenError: the state file is unreadable (first call only, if :meth:`init` was not called).
            NetlinkError: the kernel cannot be reached at all (no netlink socket).
        """
        self.init()
        state = self._state
        assert state is not None
        report = ApplyReport()
        tables = set(state["tables"])
        with IPRoute() as ipr:
            for key in self._installed_rules(ipr, tables, self._known_rules()):
                try:
                    self._del_rule(ipr, key)
                    report.rules_removed.append(key.describe())
                except NetlinkError:
                    pass
            for route in self._installed_routes(ipr, tables).values():
                try:
                    route.delete(ipr)
                    report.routes_removed.append(route.describe())
                except NetlinkError:
                    pass
        for key, value in state["sysctls"].items():
            self._restore_sysctl(key, value)
            report.sysctls_set.append(f"{key}={value}")
        self._state = {"tables": [], "sysctls": {}}
        try:
            self.state_path.unlink()
        except FileNotFoundError:
            pass
        return report

    # ----------------------------------------------------------------- state
    def _load_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {"tables": [], "sysctls": {}}
        except (OSError, ValueError) as exc:
            raise RavenError(f"{self.state_path}: unreadable state file: {exc}") from None
        if not isinstance(state, dict):
            raise RavenError(f"{self.state_path}: unreadable state file: not a JSON object")
        state.setdefault("tables", [])
        state.setdefault("sysctls", {})
        return state

    def _save_state(self) -> None:
        self.state_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state, indent=1, sort_keys=True))
        os.replace(tmp, self.state_path)

    # ------------------------------------------------------------ read kernel
    @staticmethod
    def _installed_routes(ipr: IPRoute, tables: set[int]) -> dict[RouteKey, _InstalledRoute]:
        found: dict[RouteKey, _InstalledRoute] = {}
        for table in tables:
            for family in _FAMILIES.values():
                for msg in ipr.get_routes(family=family, table=table):
                    if msg.get("table") != table or msg["type"] != RTN_UNICAST:
                        continue
                    dst = msg.get("dst") or ("0.0.0.0" if family == socket.AF_INET else "::")
                    net = str(ipaddress.ip_network(f"{dst}/{msg['dst_len']}"))
                    metrics = msg.get("metrics")
                    mtu = metrics.get("RTAX_MTU") if metrics else None
                    route = _InstalledRoute(net, table, family, msg.get("oif"), msg.get("gateway"), mtu,
                                            msg.get("prefsrc"))
                    found[RouteKey(net, route.oif if not route.gateway else None, route.gateway, table, mtu,
                                   route.prefsrc)] = route
        return found

    @staticmethod
    def _installed_rules(ipr: IPRoute, tables: set[int], known: set[RuleKey]) -> set[RuleKey]:
        """Rules that are ours: they point at one of our tables, or we recorded adding them."""
        found: set[RuleKey] = set()
        for version, family in _FAMILIES.items():
            for msg in ipr.get_rules(family=family):
                priority = msg.get("priority")
                if priority is None:
                    continue
                sport_range = msg.get("sport_range")
                sport = int(sport_range.split(":")[0]) if sport_range else None
                key = RuleKey(version, priority, msg.get("table"), msg.get("ip_proto"), sport)
                if key.table in tables or key in known:
                    found.add(key)
        return found

    def _known_rules(self) -> set[RuleKey]:
        assert self._state is not None
        return {RuleKey(*k) for k in self._state.get("rules", [])}

    # ----------------------------------------------------------- desired keys
    @staticmethod
    def _route_key(route: Route, ifindex: dict[str, int]) -> RouteKey:
        oif = None
        if route.gateway is None:
            if route.dev is None:
                raise ApplyError(f"route {route.dst}: neither a device nor a gateway")
            try:
                oif = ifindex[route.dev]
            except KeyError:
                raise ApplyError(f"route {route.dst}: device {route.dev} does not exist") from None
        return RouteKey(str(route.dst), oif, str(route.gateway) if route.gateway else None, route.table, route.mtu,
                        str(route.src) if route.src else None)

    @staticmethod
    def _rule_key(rule: Rule) -> RuleKey:
        proto = _PROTO_NUMBERS.get(rule.ip_proto) if isinstance(rule.ip_proto, str) else rule.ip_proto
        return RuleKey(rule.family, rule.priority, rule.table, proto, rule.sport)

    # ----------------------------------------------------------------- steps
    def _apply_sysctls(self, plan: NodePlan, report: ApplyReport, undo: list[Callable[[], Any]]) -> None:
        assert self._state is not None
        saved: dict[str, str] = self._state["sysctls"]
        desired = dict(plan.sysctls)
        # Sysctls an earlier plan needed but this one does not go back to their original values.
        for key in [k for k in saved if k not in desired]:
            self._restore_sysctl(key, saved.pop(key))
            report.sysctls_set.append(key)
        for key, value in desired.items():
            try:
                current = read_sysctl(key)
            except FileNotFoundError:
                raise ApplyError(f"sysctl {key} does not exist") from None
            if current == value:
                continue
            saved.setdefault(key, current)
            write_sysctl(key, value)
            undo.append(lambda k=key, v=current: write_sysctl(k, v))
            report.sysctls_set.append(f"{key}={value}")

    @staticmethod
    def _restore_sysctl(key: str, value: str) -> None:
        try:
            write_sysctl(key, value)
        except FileNotFoundError:
            pass  # per-interface keys vanish with their interface

    def _apply_routes(self, ipr: IPRoute, plan: NodePlan, tables: set[int], ifindex: dict[str, int],
                      report: ApplyReport, undo: list[Callable[[], Any]]) -> list[_InstalledRoute]:
        """Add the missing routes; return the installed ones the plan no longer wants (removed later)."""
        installed = self._installed_routes(ipr, tables)
        desired = {self._route_key(r, ifindex): r for r in plan.routes}
        replaced = {(str(r.dst), r.table) for r in plan.routes}
        # A route whose dst and table stay is overwritten in place by "replace" below: deleting it
        # afterwards by dst/table would delete the new one.
        stale = [route for key, route in installed.items()
                 if key not in desired and (route.dst, route.table) not in replaced]
        previous = {(route.dst, route.table): route for route in installed.values()}
        for key, route in desired.items():
            if key in installed:
                continue
            new = _InstalledRoute(key.dst, key.table, _FAMILIES[route.dst.version], key.oif, key.gateway,
                                  key.mtu, key.src)
            old = previous.get((new.dst, new.table))
            ipr.route("replace", **new.args())
            if old is None:
                undo.append(lambda r=new: r.delete(ipr))
            else:
                # "replace" overwrote the route an earlier plan installed (a new MTU, next hop...): a
                # failed apply puts that one back, or the prefix would fall through to the main table.
                undo.append(lambda r=old: ipr.route("replace", **r.args()))
            report.routes_added.append(new.describe())
        return stale

    @staticmethod
    def _remove_routes(ipr: IPRoute, stale: list[_InstalledRoute], report: ApplyReport) -> None:
        for route in stale:
            route.delete(ipr)
            report.routes_removed.append(route.describe())

    def _apply_rules(self, ipr: IPRoute, plan: NodePlan, tables: set[int], report: ApplyReport,
                     undo: list[Callable[[], Any]]) -> None:
        installed = self._installed_rules(ipr, tables, self._known_rules())
        desired = {self._rule_key(r): r for r in plan.rules}
        for key in desired:
            if key in installed:
                continue
            self._add_rule(ipr, key)
            undo.append(lambda k=key: self._del_rule(ipr, k))
            report.rules_added.append(key.describe())
        for key in installed:
            if key not in desired:
                self._del_rule(ipr, key)
                report.rules_removed.append(key.describe())

    @staticmethod
    def _add_rule(ipr: IPRoute, key: RuleKey) -> None:
        ipr.rule("add", **key.args())

    @staticmethod
    def _del_rule(ipr: IPRoute, key: RuleKey) -> None:
        ipr.rule("del", **key.args())
