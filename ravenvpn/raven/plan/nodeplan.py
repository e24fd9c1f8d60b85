"""What one node must look like: the output of :func:`ravenvpn.raven.plan.planner.plan`.

Plain immutable data for the applier (kernel side) and the daemon (WireGuard side);
tuples everywhere, sorted, so two plans of the same cluster compare equal.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from enum import StrEnum

from ..cluster.addresses import IPAddress, IPNetwork
from .direct import DirectPlan

MAIN_TABLE = 254


class Role(StrEnum):
    """A node's part in its network domain, from its Gateway's ``status.activeEndpoints``."""

    ACTIVE_GATEWAY = "active-gateway"   # terminates this domain's tunnels
    STANDBY = "standby"                 # a tunnel candidate of its gateway, not elected
    MEMBER = "member"                   # in a gateway; reaches remote domains via the active node
    NONE = "none"                       # in no gateway: Raven leaves it alone


@dataclass(frozen=True)
class PeerPlan:
    """One WireGuard peer: the active endpoint of a remote gateway."""

    public_key: bytes
    endpoint: tuple[str, int] | None       # (host, port); None: wait for the peer to call in
    allowed_ips: tuple[IPNetwork, ...]
    persistent_keepalive: int               # seconds; 0 = off
    gateway: str                            # the remote gateway this peer is the active node of
    node_name: str = ""                     # the remote active endpoint's node
    relays_for: tuple[str, ...] = ()        # NAT'd gateways reached through this peer
    standby: bool = False                   # a remote candidate not active: AllowedIPs = its own node's prefixes

    @property
    def public_key_b64(self) -> str:
        """The peer's public key as base64 text (as ``wg`` prints it)."""
        return base64.b64encode(self.public_key).decode()


@dataclass(frozen=True)
class Route:
    """``ip route replace <dst> [via <gateway>] [dev <dev>] table <table> [src] [mtu]``."""

    dst: IPNetwork
    dev: str | None
    gateway: IPAddress | None
    table: int
    src: IPAddress | None = None   # preferred source for traffic the node itself originates
    mtu: int | None = None         # route MTU: spares members a PMTU round trip (like Raven)


@dataclass(frozen=True)
class Rule:
    """``ip [-6] rule add priority <p> [ipproto <p> sport <port>] lookup <table>``."""

    priority: int
    table: int
    family: int = 4                  # 4 or 6: ip rules exist per address family
    ip_proto: str | None = None      # with sport: matches only the tunnel's own UDP packets
    sport: int | None = None


@dataclass(frozen=True)
class NodePlan:
    """Everything one node must run: its role, the tunnel (interface, UDP port, MTU in bytes, peers)
    and the kernel's routes, rules and sysctls. Immutable and hashable; two plans of the same cluster
    compare equal."""

    node_name: str
    role: Role
    gateway: str | None              # the node's gateway, None for Role.NONE
    interface: str
    listen_port: int
    mtu: int
    peers: tuple[PeerPlan, ...] = ()
    routes: tuple[Route, ...] = ()
    rules: tuple[Rule, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    relay: bool = False              # forward between peers inside ravenvpn
    relay_gateway: str | None = None  # the gateway chosen to relay NAT<->NAT traffic, if any
    public_key: bytes | None = None   # this node's tunnel key per the cluster (active/standby)
    warnings: tuple[str, ...] = ()
    direct: DirectPlan | None = None  # direct edge<->edge paths (hole punching), active gateways only

    def sysctl(self, key: str) -> str | None:
        """The planned value of sysctl ``key`` (``net.ipv4.ip_forward``), None if the plan leaves it alone."""
        return dict(self.sysctls).get(key)
