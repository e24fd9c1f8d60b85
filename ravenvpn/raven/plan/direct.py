"""Direct edge<->edge paths: which pairs of NAT'd gateways may try a direct tunnel, and who introduces them.

Pure, like the rest of the planner: from the cluster alone.  Without this, two gateways both under NAT
talk through the relay gateway (:mod:`.topology`).  With it, each such pair *may* also get a direct
WireGuard peer that the node layer (:mod:`ravenvpn.raven.node.holepunch`) opens by UDP hole punching,
with the relay gateway as the rendezvous; the relay stays the fallback.

Raven fields used (``spec.endpoints[]`` of the active tunnel endpoint):

- ``underNAT`` with ``publicIP`` + ``publicPort``: the NAT has a port forward, so the gateway is
  reachable directly; :mod:`.topology` peers with it like with an exposed gateway, no punching.
- ``natType`` (Raven's STUN result, RFC 3489 names: ``FullCone``, ``RestrictedCone``,
  ``PortRestrictedCone``, ``Symmetric``; empty or unknown: not known): a pair is not punched when its
  NAT types cannot work by the RFC 3489/5780 compatibility matrix -- a symmetric NAT with another
  symmetric or a port-restricted cone NAT.  Unknown types are tried (failure is cheap: capped probes).

The same public IP of two edges is *not* taken as proof of one LAN (carrier-grade NAT puts different
sites behind one address).  Each pair carries the other gateway's *private endpoint* (the InternalIP of
its active node, the tunnel port): when the relay shows both edges at one public IP, the node layer
first tries that address, and goes direct there only once authenticated probes cross both ways
(:mod:`ravenvpn.raven.node.punch`); otherwise the pair is punched like any other.
"""
from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Collection
from dataclasses import dataclass

from ..cluster.addresses import IPNetwork
from ..cluster.model import Cluster, Endpoint, Gateway

__all__ = ["DirectPair", "DirectPlan", "plan_direct", "control_address", "has_port_forward",
           "nat_types_compatible", "CONTROL_PORT"]

#: UDP port of the rendezvous/probe channel on every gateway's control address (inside the tunnel).
CONTROL_PORT = 4502     # 4500: the tunnel, 4501: the liveness protocol of failover

_SYMMETRIC = "symmetric"
_PORT_RESTRICTED = "portrestrictedcone"


def control_address(public_key: bytes) -> ipaddress.IPv4Address:
    """The gateway's control address on the tunnel interface: 169.254.A.B/32, derived from its
    WireGuard public key (32 bytes) so every gateway computes everybody's without configuration.

    A is 1-254 but never 169, so 169.254.169.254 (cloud metadata services) is never taken. Two keys
    may map to one address (about 1 in 64,000 per pair); :func:`plan_direct` then leaves the later
    gateway out of direct paths with a warning.
    """
    digest = hashlib.blake2s(public_key, digest_size=8, person=b"rvnctl1").digest()
    a = 1 + digest[0] % 253          # 1..253
    if a == 169:
        a = 254
    return ipaddress.IPv4Address(f"169.254.{a}.{digest[1]}")


def has_port_forward(gw: Gateway) -> bool:
    """A gateway under NAT whose active tunnel endpoint gives ``publicIP`` and ``publicPort``: its
    NAT forwards that port to it, so it is reachable without punching (Raven field semantics)."""
    ep = gw.active_tunnel
    return (gw.under_nat and ep is not None and ep.public_port is not None
            and (ep.public_ip is not None or getattr(ep, "public_host", None) is not None))


def _norm(nat_type: str) -> str:
    return nat_type.replace("-", "").replace("_", "").replace(" ", "").lower()


def nat_types_compatible(a: str, b: str) -> bool:
    """False when two NAT types (Raven's ``natType``) cannot be punched through: symmetric with
    symmetric or with port-restricted cone (RFC 3489 matrix). Unknown types: True (try)."""
    x, y = _norm(a), _norm(b)
    if _SYMMETRIC in (x, y):
        other = y if x == _SYMMETRIC else x
        return other not in (_SYMMETRIC, _PORT_RESTRICTED)
    return True


@dataclass(frozen=True)
class DirectPair:
    """Another NAT'd gateway this (NAT'd, active) gateway may reach directly.

    ``prefixes`` move from the relay peer to the direct peer while the direct path works; ``punch``
    False (with ``reason``) when the NAT types rule it out, the pair then stays relayed.
    ``private_endpoint``: ``(InternalIP, tunnel port)`` of the other gateway's active node, tried
    first when both edges appear behind one public IP (None: no IPv4 InternalIP, never tried).
    """

    gateway: str
    node_name: str
    public_key: bytes
    prefixes: tuple[IPNetwork, ...]
    punch: bool = True
    reason: str = ""
    private_endpoint: tuple[str, int] | None = None

    @property
    def control(self) -> ipaddress.IPv4Address:
        """The remote gateway's control address (see :func:`control_address`)."""
        return control_address(self.public_key)


@dataclass(frozen=True)
class DirectPlan:
    """The direct-path part of an active gateway's plan.

    On a NAT'd edge: ``relay_key`` (32 bytes) is the relay gateway's active node key (its rendezvous)
    and ``pairs`` the other NAT'd edges. On the relay: ``introduces`` lists ``(gateway, key)`` of the
    NAT'd edges it introduces to each other. ``local_key`` is this node's key. Immutable, hashable.
    """

    local_key: bytes
    relay_key: bytes | None = None
    pairs: tuple[DirectPair, ...] = ()
    introduces: tuple[tuple[str, bytes], ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def is_relay(self) -> bool:
        """This node introduces edges (it is the relay gateway's active node)."""
        return bool(self.introduces)


def _punchable(gw: Gateway) -> bool:
    ep = gw.active_tunnel
    return gw.under_nat and ep is not None and ep.public_key is not None and not has_port_forward(gw)


def _private_endpoint(cluster: Cluster, ep: Endpoint) -> tuple[str, int] | None:
    """Where a gateway's active node listens on its LAN: its Node's InternalIP (IPv4 underlays only)
    and the tunnel endpoint's port."""
    node = cluster.node(ep.node_name)
    if node is None or node.internal_ip is None or node.internal_ip.version != 4:
        return None
    return str(node.internal_ip), ep.port


def plan_direct(cluster: Cluster, local: Gateway, relay: Gateway | None,
                relay_allowed: Collection[IPNetwork] | None = None) -> DirectPlan | None:
    """The direct-path plan of ``local``'s active node, None when it takes no part (no relay, the
    node is neither the relay nor a punchable NAT'd edge, or fewer than two punchable edges).

    ``relay_allowed``: the relay peer's planned allowed IPs; a pair moves only those of the other
    gateway's prefixes (a standby peer keeps its own node's prefixes). None: all of them.
    """
    ep = local.active_tunnel
    if relay is None or ep is None or ep.public_key is None:
        return None
    edges = [g for g in cluster.gateways if _punchable(g)]
    warnings: list[str] = []
    seen: dict[ipaddress.IPv4Address, str] = {}
    if relay.active_tunnel is not None and relay.active_tunnel.public_key is not None:
        seen[control_address(relay.active_tunnel.public_key)] = relay.name
    usable: list[Gateway] = []
    for g in edges:
        assert g.active_tunnel is not None and g.active_tunnel.public_key is not None
        addr = control_address(g.active_tunnel.public_key)
        if addr in seen:
            warnings.append(f"Gateway {g.name}: its control address {addr} collides with {seen[addr]}'s: "
                            "no direct paths for it")
            continue
        seen[addr] = g.name
        usable.append(g)
    if len(usable) < 2:
        return None
    if local.name == relay.name:
        return DirectPlan(local_key=ep.public_key,
                          introduces=tuple((g.name, g.active_tunnel.public_key) for g in usable),  # type: ignore[union-attr]
                          warnings=tuple(warnings))
    if local not in usable or relay.active_tunnel is None or relay.active_tunnel.public_key is None:
        return None
    pairs = []
    for g in usable:
        if g.name == local.name:
            continue
        remote = g.active_tunnel
        assert remote is not None and remote.public_key is not None
        ok = nat_types_compatible(ep.nat_type, remote.nat_type)
        reason = "" if ok else f"natType {ep.nat_type or '?'} with {remote.nat_type or '?'} cannot be punched"
        prefixes = tuple(p for p in g.prefixes if relay_allowed is None or p in relay_allowed)
        pairs.append(DirectPair(g.name, remote.node_name, remote.public_key, prefixes, ok, reason,
                                _private_endpoint(cluster, remote)))
    return DirectPlan(local_key=ep.public_key, relay_key=relay.active_tunnel.public_key,
                      pairs=tuple(pairs), warnings=tuple(warnings))
