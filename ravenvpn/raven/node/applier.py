"""The applier: makes the kernel's routes, rules and sysctls match a NodePlan.

The only part of the Raven layer that touches the kernel (through pyroute2, never by
shelling out to `ip`). It reads what is installed, computes the difference to the
plan and changes only that, so a second apply of the same plan changes nothing.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ...errors import RavenError
from ..plan.nodeplan import MAIN_TABLE, NodePlan, Route, Rule

DEFAULT_STATE_DIR = "/run/ravenvpn"
_FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}
_PROTO_NUMBERS = {"udp": 17, "tcp": 6}


class ApplyError(RavenError):
    """The kernel refused a change; what was changed in this apply has been undone."""


RouteKey = tuple[str, int | None, str | None, int, int | None, str | None]  # dst, oif, gateway, table, mtu, src
RuleKey = tuple[int, int, int, int | None, int | None]  # family, priority, table, ip_proto, sport


@dataclass
class ApplyReport:
    routes_added: list[str] = field(default_factory=list)
    routes_removed: list[str] = field(default_factory=list)
    rules_added: list[str] = field(default_factory=list)
    rules_removed: list[str] = field(default_factory=list)
    sysctls_set: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any((self.routes_added, self.routes_removed, self.rules_added, self.rules_removed, self.sysctls_set))

    def summary(self) -> str:
        return (f"routes +{len(self.routes_added)} -{len(self.routes_removed)}, "
                f"rules +{len(self.rules_added)} -{len(self.rules_removed)}, sysctls {len(self.sysctls_set)}")


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read_sysctl(key: str) -> str:
    return _sysctl_path(key).read_text().strip()


def write_sysctl(key: str, value: str) -> None:
    _sysctl_path(key).write_text(value + "\n")


class Applier:
    """Installs one node's plan into the current network namespace."""

    def __init__(self, interface: str = "raven0", state_dir: str = DEFAULT_STATE_DIR) -> None:
        self.interface = interface
        self.state_path = Path(state_dir) / f"{interface}.state.json"
        self._state = self._load_state()

    # ----------------------------------------------------------------- state
    def _load_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {"tables": [], "sysctls": {}}
        except (OSError, ValueError) as exc:
            raise RavenError(f"{self.state_path}: unreadable state file: {exc}") from None
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
    def _installed_routes(ipr: IPRoute, tables: set[int]) -> dict[RouteKey, dict]:
        found: dict[RouteKey, dict] = {}
        for table in tables:
            for family in _FAMILIES.values():
                for msg in ipr.get_routes(family=family, table=table):
                    if msg.get("table") != table or msg["type"] != 1:  # unicast routes only
                        continue
                    dst = msg.get("dst") or ("0.0.0.0" if family == socket.AF_INET else "::")
                    net = str(ipaddress.ip_network(f"{dst}/{msg['dst_len']}"))
                    mtu = None
                    metrics = msg.get("metrics")
                    if metrics:
                        mtu = metrics.get("RTAX_MTU")
                    key = (net, msg.get("oif") if not msg.get("gateway") else None, msg.get("gateway"),
                           table, mtu, msg.get("prefsrc"))
                    found[key] = {"dst": net, "table": table, "family": family, "oif": msg.get("oif"),
                                  "gateway": msg.get("gateway"), "mtu": mtu, "prefsrc": msg.get("prefsrc")}
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
                key = (version, priority, msg.get("table"), msg.get("ip_proto"), sport)
                if key[2] in tables or key in known:
                    found.add(key)
        return found

    def _known_rules(self) -> set[RuleKey]:
        return {tuple(k) for k in self._state.get("rules", [])}  # type: ignore[misc]

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
        return (str(route.dst), oif, str(route.gateway) if route.gateway else None, route.table, route.mtu,
                str(route.src) if route.src else None)

    @staticmethod
    def _rule_key(rule: Rule) -> RuleKey:
        proto = _PROTO_NUMBERS.get(rule.ip_proto) if isinstance(rule.ip_proto, str) else rule.ip_proto
        return (rule.family, rule.priority, rule.table, proto, rule.sport)

    # ----------------------------------------------------------------- apply
    def apply(self, plan: NodePlan) -> ApplyReport:
        """Make the kernel match `plan`; on failure undo this call's changes and raise ApplyError."""
        report = ApplyReport()
        undo: list[Callable[[], Any]] = []
        # Never claim the main table: only the dedicated tables are wholly ours.
        tables = ({r.table for r in plan.routes} | set(self._state["tables"])) - {MAIN_TABLE}
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
        self._state["tables"] = sorted({r.table for r in plan.routes if r.table != MAIN_TABLE})
        self._state["rules"] = sorted((self._rule_key(r) for r in plan.rules), key=str)
        self._save_state()
        return report

    def _apply_sysctls(self, plan: NodePlan, report: ApplyReport, undo: list[Callable[[], Any]]) -> None:
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
                      report: ApplyReport, undo: list[Callable[[], Any]]) -> list[dict]:
        """Add the missing routes; return the installed ones the plan no longer wants (removed later)."""
        installed = self._installed_routes(ipr, tables)
        desired = {self._route_key(r, ifindex): r for r in plan.routes}
        replaced = {(str(r.dst), r.table) for r in plan.routes}
        # A route whose dst and table stay is overwritten in place by "replace" below: deleting it
        # afterwards by dst/table would delete the new one.
        stale = [info for key, info in installed.items()
                 if key not in desired and (info["dst"], info["table"]) not in replaced]
        previous = {(info["dst"], info["table"]): info for info in installed.values()}
        for key, route in desired.items():
            if key in installed:
                continue
            args = _route_args({"dst": str(route.dst), "table": route.table, "family": _FAMILIES[route.dst.version],
                                "gateway": None if route.gateway is None else str(route.gateway),
                                "oif": key[1], "mtu": route.mtu,
                                "prefsrc": None if route.src is None else str(route.src)})
            old = previous.get((args["dst"], args["table"]))
            ipr.route("replace", **args)
            if old is None:
                undo.append(lambda a=args: ipr.route("del", dst=a["dst"], table=a["table"], family=a["family"]))
            else:
                # "replace" overwrote the route an earlier plan installed (a new MTU, next hop...): a
                # failed apply puts that one back, or the prefix would fall through to the main table.
                undo.append(lambda a=_route_args(old): ipr.route("replace", **a))
            report.routes_added.append(f"{route.dst} table {route.table}")
        return stale

    @staticmethod
    def _remove_routes(ipr: IPRoute, stale: list[dict], report: ApplyReport) -> None:
        for info in stale:
            ipr.route("del", dst=info["dst"], table=info["table"], family=info["family"])
            report.routes_removed.append(f"{info['dst']} table {info['table']}")

    def _apply_rules(self, ipr: IPRoute, plan: NodePlan, tables: set[int], report: ApplyReport,
                     undo: list[Callable[[], Any]]) -> None:
        installed = self._installed_rules(ipr, tables, self._known_rules())
        desired = {self._rule_key(r): r for r in plan.rules}
        for key in desired:
            if key in installed:
                continue
            self._add_rule(ipr, key)
            undo.append(lambda k=key: self._del_rule(ipr, k))
            report.rules_added.append(self._describe_rule(key))
        for key in installed:
            if key not in desired:
                self._del_rule(ipr, key)
                report.rules_removed.append(self._describe_rule(key))

    @staticmethod
    def _rule_args(key: RuleKey) -> dict[str, Any]:
        version, priority, table, proto, sport = key
        args: dict[str, Any] = {"family": _FAMILIES[version], "priority": priority, "table": table}
        if proto is not None:
            args["ip_proto"] = proto
        if sport is not None:
            args["sport_range"] = f"{sport}:{sport}"
        return args

    def _add_rule(self, ipr: IPRoute, key: RuleKey) -> None:
        ipr.rule("add", **self._rule_args(key))

    def _del_rule(self, ipr: IPRoute, key: RuleKey) -> None:
        ipr.rule("del", **self._rule_args(key))

    @staticmethod
    def _describe_rule(key: RuleKey) -> str:
        version, priority, table, proto, sport = key
        extra = f" ipproto {proto} sport {sport}" if proto is not None else ""
        return f"ipv{version} priority {priority}{extra} lookup {table}"

    # --------------------------------------------------------------- teardown
    def teardown(self) -> ApplyReport:
        """Remove every route and rule in our tables and restore saved sysctls."""
        report = ApplyReport()
        tables = set(self._state["tables"])
        with IPRoute() as ipr:
            for key in self._installed_rules(ipr, tables, self._known_rules()):
                try:
                    self._del_rule(ipr, key)
                    report.rules_removed.append(self._describe_rule(key))
                except NetlinkError:
                    pass
            for info in self._installed_routes(ipr, tables).values():
                try:
                    ipr.route("del", dst=info["dst"], table=info["table"], family=info["family"])
                    report.routes_removed.append(f"{info['dst']} table {info['table']}")
                except NetlinkError:
                    pass
        for key, value in self._state["sysctls"].items():
            self._restore_sysctl(key, value)
            report.sysctls_set.append(f"{key}={value}")
        self._state = {"tables": [], "sysctls": {}}
        try:
            self.state_path.unlink()
        except FileNotFoundError:
            pass
        return report


def _route_args(info: dict[str, Any]) -> dict[str, Any]:
    """pyroute2 arguments that install the route `info` describes (as `_installed_routes` reports it)."""
    args: dict[str, Any] = {"dst": info["dst"], "table": info["table"], "family": info["family"]}
    if info.get("gateway"):
        args["gateway"] = info["gateway"]
    else:
        args["oif"] = info["oif"]
    if info.get("mtu"):
        args["metrics"] = {"mtu": info["mtu"]}
    if info.get("prefsrc"):
        args["prefsrc"] = info["prefsrc"]
    return args
