"""The status file: what a running node is (role, peers, routes), as one :class:`NodeStatus`.

Written by the :class:`~ravenvpn.raven.node.agent.Agent` after each successful reconcile to
``<state dir>/<interface>.status.json``; read by ``ravenvpn status`` and by the test lab. This module is
the one home of its JSON keys: writers and readers go through :meth:`NodeStatus.to_json` and
:meth:`NodeStatus.from_json`, never through the keys themselves.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ...errors import RavenError
from ..plan.nodeplan import NodePlan, Rule

__all__ = ["NodeStatus", "PeerStatus", "RouteStatus", "LivePeer", "Refusal"]


@dataclass(frozen=True)
class LivePeer:
    """A peer's state from the running interface (its UAPI ``get``), added by ``ravenvpn status``."""

    endpoint: str | None        # "host:port" or "[v6]:port" the peer was last heard from
    latest_handshake: int | None  # wall clock, seconds since the epoch; None: never
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass(frozen=True)
class Refusal:
    """The last handshake initiation the interface refused from a peer (``Peer.last_refusal``): put in
    the status file by the agent, which runs the device (the UAPI, and so ``wg show``, has no field
    for it)."""

    reason: str                 # e.g. the protocol's REFUSED_OLD_TIMESTAMP
    at: float                   # wall clock, seconds since the epoch


@dataclass(frozen=True)
class PeerStatus:
    """One WireGuard peer of an active gateway, as planned (see :class:`~ravenvpn.raven.plan.nodeplan.PeerPlan`)."""

    public_key: str             # base64
    gateway: str                # the remote Gateway's name
    node: str                   # its active endpoint's node
    endpoint: str | None        # planned "host:port"; None: waits for the peer to call in
    allowed_ips: tuple[str, ...]
    persistent_keepalive: int   # seconds; 0 = off
    live: LivePeer | None = None
    standby: bool = False       # another candidate of the remote gateway: AllowedIPs = its own node's prefixes
    refusal: Refusal | None = None   # its last handshake initiation was refused, and why

    def to_dict(self) -> dict[str, Any]:
        """The peer's JSON object; the live keys only when known."""
        out: dict[str, Any] = {"public_key": self.public_key, "gateway": self.gateway, "node": self.node,
                               "endpoint": self.endpoint, "allowed_ips": list(self.allowed_ips),
                               "persistent_keepalive": self.persistent_keepalive}
        if self.standby:    # only on failover's standby peers: the keys of other peers stay as they were
            out["standby"] = True
        if self.live is not None:
            out.update(live_endpoint=self.live.endpoint, latest_handshake=self.live.latest_handshake,
                       rx_bytes=self.live.rx_bytes, tx_bytes=self.live.tx_bytes)
        if self.refusal is not None:
            out.update(refusal_reason=self.refusal.reason, refused_at=self.refusal.at)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PeerStatus:
        """Parse what :meth:`to_dict` gave. Raises KeyError or TypeError on a malformed object."""
        live = None
        if "rx_bytes" in d:
            live = LivePeer(d.get("live_endpoint"), d.get("latest_handshake"), d["rx_bytes"], d.get("tx_bytes", 0))
        refusal = Refusal(str(d["refusal_reason"]), float(d["refused_at"])) if "refusal_reason" in d else None
        return cls(d["public_key"], d["gateway"], d["node"], d["endpoint"], tuple(d["allowed_ips"]),
                   d["persistent_keepalive"], live, bool(d.get("standby", False)), refusal)


@dataclass(frozen=True)
class RouteStatus:
    """One planned route: ``<dst> dev <dev> table <table>`` or ``<dst> via <via> table <table>``."""

    dst: str
    dev: str | None
    via: str | None
    table: int


@dataclass(frozen=True)
class NodeStatus:
    """The status of one node: its plan's main facts and the pid of the agent that applied it.

    Immutable; :meth:`with_live_peers` gives a copy with the running interface's peer state.
    """

    node: str
    role: str                   # a Role value: "active-gateway", "standby", "member", "none"
    gateway: str | None
    interface: str
    listen_port: int            # UDP
    mtu: int                    # bytes, of the tunnel
    relay: bool                 # this gateway forwards between its peers
    relay_gateway: str | None   # the gateway that relays NAT<->NAT traffic, if any
    pid: int                    # the process that runs the agent
    peers: tuple[PeerStatus, ...] = ()
    routes: tuple[RouteStatus, ...] = ()
    rules: tuple[Rule, ...] = ()
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_plan(cls, plan: NodePlan, pid: int | None = None) -> NodeStatus:
        """The status of a node that applied ``plan``; ``pid`` defaults to this process."""
        return cls(
            node=plan.node_name, role=plan.role.value, gateway=plan.gateway, interface=plan.interface,
            listen_port=plan.listen_port, mtu=plan.mtu, relay=plan.relay, relay_gateway=plan.relay_gateway,
            pid=os.getpid() if pid is None else pid,
            peers=tuple(PeerStatus(p.public_key_b64, p.gateway, p.node_name,
                                   f"{p.endpoint[0]}:{p.endpoint[1]}" if p.endpoint else None,
                                   tuple(str(n) for n in p.allowed_ips), p.persistent_keepalive,
                                   standby=p.standby)
                        for p in plan.peers),
            routes=tuple(RouteStatus(str(r.dst), r.dev, str(r.gateway) if r.gateway else None, r.table)
                         for r in plan.routes),
            rules=plan.rules, warnings=plan.warnings)

    def with_live_peers(self, live: dict[str, LivePeer]) -> NodeStatus:
        """A copy whose peers carry ``live[public_key]`` (base64 key) where the interface knows them."""
        return replace(self, peers=tuple(replace(p, live=live.get(p.public_key, p.live)) for p in self.peers))

    def with_refusals(self, refusals: dict[str, tuple[str, float]]) -> NodeStatus:
        """A copy whose peers carry ``refusals[public_key]`` (base64 key -> (reason, wall-clock
        seconds)); peers not in it carry none."""
        return replace(self, peers=tuple(
            replace(p, refusal=Refusal(*refusals[p.public_key]) if p.public_key in refusals else None)
            for p in self.peers))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the status file and of ``ravenvpn status --json``."""
        return {"node": self.node, "role": self.role, "gateway": self.gateway, "interface": self.interface,
                "listen_port": self.listen_port, "mtu": self.mtu, "relay": self.relay,
                "relay_gateway": self.relay_gateway, "pid": self.pid,
                "peers": [p.to_dict() for p in self.peers],
                "routes": [asdict(r) for r in self.routes],
                "rules": [asdict(r) for r in self.rules],
                "warnings": list(self.warnings)}

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> NodeStatus:
        """Parse what :meth:`to_json` wrote.

        Raises:
            RavenError: not a status file of this version (names the missing or malformed key).
        """
        try:
            d = json.loads(text)
            return cls(d["node"], d["role"], d["gateway"], d["interface"], d["listen_port"], d["mtu"],
                       d["relay"], d["relay_gateway"], d["pid"],
                       peers=tuple(PeerStatus.from_dict(p) for p in d["peers"]),
                       routes=tuple(RouteStatus(**r) for r in d["routes"]),
                       rules=tuple(Rule(**r) for r in d["rules"]),
                       warnings=tuple(d["warnings"]))
        except KeyError as exc:
            raise RavenError(f"status file: key {exc} missing") from None
        except (ValueError, TypeError, AttributeError) as exc:
            raise RavenError(f"status file: malformed: {exc}") from None

    def write(self, path: str | Path) -> None:
        """Replace the file at ``path`` atomically (a reader never sees half a status).

        Raises:
            OSError: the file cannot be written.
        """
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: str | Path) -> NodeStatus:
        """The status in the file at ``path``.

        Raises:
            FileNotFoundError: no status file (the node is not up).
            RavenError: the file is unreadable or malformed.
        """
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise RavenError(f"{path}: {exc.strerror or exc}") from None
        return cls.from_json(text)


