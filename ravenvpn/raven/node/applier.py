"""The applier: the route driver, making the kernel's routes, rules and sysctls match a NodePlan.

A :class:`~ravenvpn.raven.node.drivers.RouteDriver` (Raven's ``routedriver``). It talks to the
kernel through pyroute2, never by shelling out to `ip`. It reads what is installed, computes the
difference to the plan and changes only that, so a second apply of the same plan changes nothing.

Ownership: the applier owns exactly the routes and rules it recorded adding, and the sysctls whose
original values it recorded, in the state file ``<state_dir>/<interface>.state.json``. The record is
written *before* each change (a crash in between leaves at most a record of something that is not
there, which cleanup skips), and :meth:`Applier.cleanup` (also from ``ravenvpn down`` in another
process) removes a route or rule only when the kernel still holds exactly the recorded one, and
restores a sysctl only while it still has the value the applier set. Raven's tables (9027, 9028) and
rule priorities are shared by every Raven agent of a network namespace, so an entry the plan wants
that is already there, unrecorded, belongs to another agent: apply refuses rather than take it over.
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
from .records import DEFAULT_STATE_DIR, current_netns, state_path

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
        """Delete exactly this route (destination, table and next hop or device)."""
        args: dict[str, Any] = {"dst": self.dst, "table": self.table, "family": self.family}
        if self.gateway:
            args["gateway"] = self.gateway
        elif self.oif is not None:
            args["oif"] = self.oif
        ipr.route("del", **args)

    def key(self) -> RouteKey:
        """The :class:`RouteKey` of this route (the device counts only for a route without a next hop)."""
        return RouteKey(self.dst, self.oif if not self.gateway else None, self.gateway, self.table, self.mtu,
                        self.prefsrc)

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

    def recorded(self) -> tuple[int, int, int]:
        """How many routes, rules and sysctls the state file records as installed or changed.

        Raises:
            RavenError: the state file exists but cannot be read or parsed.
        """
        self.init()
        assert self._state is not None
        return (len(self._state["routes"]) + (1 if self._state.get("legacy_tables") else 0),
                len(self._state["rules"]), len(self._state["sysctls"]))

    def still_installed(self) -> tuple[int, int, int]:
        """Like :meth:`recorded`, counting only the routes and rules still in the kernel: a route
        through the tunnel went with it when its process died (``kill -9``), so a crashed ``up``
        left only what is counted here. Reading needs no root.

        Raises:
            RavenError: the state file exists but cannot be read or parsed, or the kernel cannot be
                asked over netlink.
        """
        self.init()
        assert self._state is not None
        try:
            with IPRoute() as ipr:
                recorded = self._recorded_routes(ipr)
                installed = self._installed_routes(ipr, {key.table for key in recorded})
                rules = self._known_rules() & self._installed_rules(ipr)
        except NetlinkError as exc:
            raise RavenError(f"cannot read the routes and rules: {exc}") from None
        return len(recorded & set(installed)), len(rules), len(self._state["sysctls"])

    def apply(self, plan: NodePlan) -> ApplyReport:
        """Make the kernel match ``plan``; only the difference changes (idempotent).

        Make before break: missing routes and rules go in before stale ones go, so traffic to a
        remote prefix never falls through to the main table while a role changes. Routes, rules and
        sysctls an earlier plan installed and this one does not want are removed or restored.

        Raises:
            ApplyError: the kernel refused a change (or a route names a missing device), or a route
                or rule the plan wants is already in the kernel and was not installed by this
                applier (another Raven agent uses the tables); every change of this call has been
                undone. The message names the node and the problem.
            RavenError: the state file is unreadable (first call only, if :meth:`init` was not called).
        """
        self.init()
        state = self._state
        assert state is not None
        report = ApplyReport()
        undo: list[Callable[[], Any]] = []
        try:
            with IPRoute() as ipr:
                try:
                    ifindex = {link.get("ifname"): link["index"] for link in ipr.get_links()}
                    desired_routes = {self._route_key(r, ifindex): r for r in plan.routes}
                    desired_rules = {self._rule_key(r): r for r in plan.rules}
                    recorded = self._recorded_routes(ipr)
                    known = self._known_rules()
                    # Never read the main table: only routes in the dedicated tables are compared.
                    tables = ({k.table for k in desired_routes} | {k.table for k in recorded}) - {MAIN_TABLE}
                    installed = self._installed_routes(ipr, tables)
                    installed_rules = self._installed_rules(ipr)
                    self._check_not_taken(installed, recorded, desired_routes, installed_rules, known,
                                          desired_rules)
                    # Record first: a crash after a change must not leave it unrecorded.
                    state["routes"] = _route_records(recorded | set(desired_routes))
                    state["rules"] = _rule_records(known | set(desired_rules))
                    state.pop("legacy_tables", None)
                    self._save_state()
                    self._apply_sysctls(plan, report, undo)
                    # Make before break: new routes and rules go in before old ones go away, so traffic
                    # to remote prefixes never falls through to the main table (whose default route
                    # would carry it in plaintext over the underlay) while a role changes.
                    stale = self._apply_routes(ipr, desired_routes, installed, recorded, report, undo)
                    self._apply_rules(ipr, desired_rules, installed_rules & known, report, undo)
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
            # The record keeps what this call may have added: cleanup skips what is not there.
            self._try_save_state()
            raise ApplyError(f"applying the plan for {plan.node_name} failed: "
                             f"{exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}") from None
        state["routes"] = _route_records(set(desired_routes))
        state["rules"] = _rule_records(set(desired_rules))
        try:
            self._save_state()
        except OSError as exc:
            raise ApplyError(f"cannot write the state file {self.state_path}: {exc.strerror or exc}") from None
        return report

    def cleanup(self) -> ApplyReport:
        """Remove the routes and rules recorded as installed (where the kernel still holds exactly
        them), restore the sysctls recorded as changed (where they still have the value set) and
        delete the state file. Idempotent; what is already gone, or was changed since by someone
        else, is left as it is. Without a state file nothing changes.

        Raises:
            RavenError: the state file is unreadable (first call only, if :meth:`init` was not called).
            NetlinkError: the kernel cannot be reached at all (no netlink socket).
        """
        self.init()
        state = self._state
        assert state is not None
        report = ApplyReport()
        if not self.state_path.exists() and not any(state[k] for k in ("routes", "rules", "sysctls")):
            return report
        with IPRoute() as ipr:
            recorded = self._recorded_routes(ipr)
            for key in self._installed_rules(ipr) & self._known_rules():
                try:
                    self._del_rule(ipr, key)
                    report.rules_removed.append(key.describe())
                except NetlinkError:
                    pass
            tables = {k.table for k in recorded} - {MAIN_TABLE}
            for key, route in self._installed_routes(ipr, tables).items():
                if key not in recorded:
                    continue
                try:
                    route.delete(ipr)
                    report.routes_removed.append(route.describe())
                except NetlinkError:
                    pass
        for key, original in list(state["sysctls"].items()):
            if self._restore_sysctl(key):
                report.sysctls_set.append(f"{key}={original}")
        self._state = self._empty_state()
        try:
            self.state_path.unlink()
        except FileNotFoundError:
            pass
        return report

    # ----------------------------------------------------------------- state
    @staticmethod
    def _empty_state() -> dict[str, Any]:
        return {"routes": [], "rules": [], "sysctls": {}, "sysctls_set": {}, "netns": current_netns()}

    def _load_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return self._empty_state()
        except (OSError, ValueError) as exc:
            raise RavenError(f"{self.state_path}: unreadable state file: "
                             f"{exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}") from None
        if not isinstance(state, dict):
            raise RavenError(f"{self.state_path}: unreadable state file: not a JSON object")
        if "tables" in state:
            # Written by a version that owned its tables wholly: their routes are cleaned up as before.
            state["legacy_tables"] = state.pop("tables")
        for key, default in self._empty_state().items():
            state.setdefault(key, default)
        try:
            state["routes"] = [list(astuple(RouteKey(*r))) for r in state["routes"]]
            state["rules"] = [list(astuple(RuleKey(*r))) for r in state["rules"]]
        except TypeError:
            raise RavenError(f"{self.state_path}: unreadable state file: malformed routes or rules") from None
        return state

    def _save_state(self) -> None:
        self.state_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state, indent=1, sort_keys=True))
        os.replace(tmp, self.state_path)

    def _try_save_state(self) -> None:
        try:
            self._save_state()
        except OSError:
            pass

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
                    found[route.key()] = route
        return found

    @staticmethod
    def _installed_rules(ipr: IPRoute) -> set[RuleKey]:
        """Every ``ip rule`` of both families, as keys."""
        found: set[RuleKey] = set()
        for version, family in _FAMILIES.items():
            for msg in ipr.get_rules(family=family):
                priority = msg.get("priority")
                if priority is None:
                    continue
                sport_range = msg.get("sport_range")
                sport = int(sport_range.split(":")[0]) if sport_range else None
                found.add(RuleKey(version, priority, msg.get("table"), msg.get("ip_proto"), sport))
        return found

    def _recorded_routes(self, ipr: IPRoute) -> set[RouteKey]:
        """The routes recorded as ours (with, from an older version's record, its whole tables)."""
        assert self._state is not None
        recorded = {RouteKey(*r) for r in self._state["routes"]}
        legacy = set(self._state.get("legacy_tables") or []) - {MAIN_TABLE}
        if legacy:
            recorded |= set(self._installed_routes(ipr, legacy))
        return recorded

    def _known_rules(self) -> set[RuleKey]:
        assert self._state is not None
        return {RuleKey(*k) for k in self._state["rules"]}

    @staticmethod
    def _check_not_taken(installed: dict[RouteKey, _InstalledRoute], recorded: set[RouteKey],
                         desired_routes: dict[RouteKey, Route], installed_rules: set[RuleKey],
                         known: set[RuleKey], desired_rules: dict[RuleKey, Rule]) -> None:
        """Refuse to take over a route or rule someone else installed where the plan wants ours."""
        hint = ("another Raven agent (or ravenvpn up on another interface) uses Raven's tables "
                "and rule priorities in this network namespace: stop it first")
        slots = {(k.dst, k.table) for k in desired_routes}
        for key in installed:
            if (key.dst, key.table) in slots and key not in recorded:
                raise ApplyError(f"table {key.table}: a route to {key.dst} is already installed, not by "
                                 f"ravenvpn on this interface; {hint}")
        for rule in desired_rules:
            if rule in installed_rules and rule not in known:
                raise ApplyError(f"rule {rule.describe()} is already installed, not by ravenvpn on this "
                                 f"interface; {hint}")

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
        ours: dict[str, str] = self._state["sysctls_set"]
        desired = dict(plan.sysctls)
        # Sysctls an earlier plan needed but this one does not go back to their original values.
        for key in [k for k in saved if k not in desired]:
            if self._restore_sysctl(key):
                report.sysctls_set.append(key)
        changes: list[tuple[str, str, str]] = []
        for key, value in desired.items():
            try:
                current = read_sysctl(key)
            except FileNotFoundError:
                raise ApplyError(f"sysctl {key} does not exist") from None
            if current != value:
                changes.append((key, current, value))
                saved.setdefault(key, current)
                ours[key] = value
        if changes:
            self._save_state()      # the original values are on disk before anything changes
        for key, current, value in changes:
            write_sysctl(key, value)
            undo.append(lambda k=key, v=current: write_sysctl(k, v))
            report.sysctls_set.append(f"{key}={value}")

    def _restore_sysctl(self, key: str) -> bool:
        """Put ``key`` back to its recorded original value if it still has the value we set; forget
        the record either way. True when it was written."""
        assert self._state is not None
        original = self._state["sysctls"].pop(key)
        ours = self._state["sysctls_set"].pop(key, None)
        try:
            if ours is not None and read_sysctl(key) != ours:
                return False        # changed by someone else since: theirs now
            write_sysctl(key, original)
        except FileNotFoundError:
            return False            # per-interface keys vanish with their interface
        return True

    @staticmethod
    def _apply_routes(ipr: IPRoute, desired: dict[RouteKey, Route], installed: dict[RouteKey, _InstalledRoute],
                      recorded: set[RouteKey], report: ApplyReport,
                      undo: list[Callable[[], Any]]) -> list[_InstalledRoute]:
        """Add the missing routes; return the installed ones of ours the plan no longer wants (removed later)."""
        replaced = {(k.dst, k.table) for k in desired}
        # A route whose dst and table stay is overwritten in place by "replace" below: deleting it
        # afterwards would delete the new one.
        stale = [route for key, route in installed.items()
                 if key in recorded and key not in desired and (route.dst, route.table) not in replaced]
        previous = {(route.dst, route.table): route for key, route in installed.items() if key in recorded}
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

    def _apply_rules(self, ipr: IPRoute, desired: dict[RuleKey, Rule], ours: set[RuleKey], report: ApplyReport,
                     undo: list[Callable[[], Any]]) -> None:
        for key in desired:
            if key in ours:
                continue
            self._add_rule(ipr, key)
            undo.append(lambda k=key: self._del_rule(ipr, k))
            report.rules_added.append(key.describe())
        for key in ours:
            if key not in desired:
                self._del_rule(ipr, key)
                report.rules_removed.append(key.describe())

    @staticmethod
    def _add_rule(ipr: IPRoute, key: RuleKey) -> None:
        ipr.rule("add", **key.args())

    @staticmethod
    def _del_rule(ipr: IPRoute, key: RuleKey) -> None:
        ipr.rule("del", **key.args())


def _route_records(keys: set[RouteKey]) -> list[list[Any]]:
    return sorted((list(astuple(k)) for k in keys), key=lambda r: str(r))


def _rule_records(keys: set[RuleKey]) -> list[list[Any]]:
    return sorted((list(astuple(k)) for k in keys), key=lambda r: str(r))
