"""A point-to-point WireGuard tunnel between two nodes, each side with its own implementation.

Why: the interop matrix, the infra tests and the benchmarks all need "A running impl X, B running impl Y,
joined by a veth, tunnel addresses on both ends". Keeping that in one place keeps the addressing plan
consistent and lets a test restart one or both daemons with the same keys (to choose who initiates).

Addressing plan (all inside our own namespaces):
  underlay  198.18.0.0/24 and fd00:18::/64 (RFC 2544 benchmarking / ULA), A = .1, B = .2
  tunnel    10.99.0.0/24 and fd99::/64, A = .1, B = .2
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from tools.links import Veth, veth
from tools.node import Node
from tools.wg import WgInterface, WgPeer, format_endpoint, keypair, own_script, start_wg

#: implementation name -> command that is run with the interface name appended (daemonises)
IMPLS: dict[str, list[str]] = {"wireguard-go": ["wireguard-go"], "ravenvpn": [own_script("ravenvpn-wg")]}

UNDERLAY4 = ("198.18.0.1/24", "198.18.0.2/24")
UNDERLAY6 = ("fd00:18::1/64", "fd00:18::2/64")
INNER4 = ("10.99.0.1/24", "10.99.0.2/24")
INNER6 = ("fd99::1/64", "fd99::2/64")


@dataclasses.dataclass
class Side:
    """One end of the tunnel: node, implementation, keys, port, addresses and the running interface."""

    name: str
    node: Node
    impl: str
    impl_cmd: list[str]
    private_key: str
    public_key: str
    listen_port: int
    underlay_ip: str
    inner: list[str]  # CIDRs on the WireGuard interface
    iface: WgInterface | None = None

    @property
    def inner4(self) -> str:
        return self.inner[0].split("/")[0]

    @property
    def inner6(self) -> str | None:
        return self.inner[1].split("/")[0] if len(self.inner) > 1 else None

    @property
    def endpoint(self) -> str:
        return format_endpoint(self.underlay_ip, self.listen_port)

    @property
    def wg(self) -> WgInterface:
        if self.iface is None:
            raise RuntimeError(f"side {self.name} is down")
        return self.iface


class Tunnel:
    """Two nodes, a veth underlay and a WireGuard tunnel over it.

    ``impl_a``/``impl_b`` are keys of :data:`IMPLS` (or pass ``cmd_a``/``cmd_b``). ``underlay6`` puts
    the underlay on IPv6 only. ``psk`` configures the same preshared key on both sides. Nothing is sent
    until a test sends traffic, so whoever sends first initiates the handshake.
    """

    def __init__(
        self,
        a: Node,
        b: Node,
        impl_a: str = "wireguard-go",
        impl_b: str = "wireguard-go",
        psk: str | None = None,
        underlay6: bool = False,
        ifname: str = "raven0",
        ports: tuple[int, int] = (51820, 51821),
        inner6: bool = True,
        cmd_a: Sequence[str] | None = None,
        cmd_b: Sequence[str] | None = None,
        mtu: int = 1420,
        persistent_keepalive: int | None = None,
        env_a: dict[str, str] | None = None,
        env_b: dict[str, str] | None = None,
    ) -> None:
        self.ifname = ifname
        self.psk = psk
        self._extra_env = {"A": env_a or {}, "B": env_b or {}}  # per-side additions to the environment
        self.mtu = mtu
        self.persistent_keepalive = persistent_keepalive
        if underlay6:
            self.link: Veth = veth(a, b, UNDERLAY6[0], UNDERLAY6[1])
            ua, ub = self.link.ip_a, self.link.ip_b
        else:
            self.link = veth(a, b, UNDERLAY4[0], UNDERLAY4[1], addr6_a=UNDERLAY6[0], addr6_b=UNDERLAY6[1])
            ua, ub = self.link.ip_a, self.link.ip_b
        ka, kb = keypair(), keypair()
        inner_a = [INNER4[0]] + ([INNER6[0]] if inner6 else [])
        inner_b = [INNER4[1]] + ([INNER6[1]] if inner6 else [])
        self.a = Side("A", a, impl_a, list(cmd_a or IMPLS[impl_a]), ka[0], ka[1], ports[0], ua, inner_a)
        self.b = Side("B", b, impl_b, list(cmd_b or IMPLS[impl_b]), kb[0], kb[1], ports[1], ub, inner_b)

    def __repr__(self) -> str:
        return f"Tunnel({self.a.impl} <-> {self.b.impl})"

    def other(self, side: Side) -> Side:
        return self.b if side is self.a else self.a

    def peer_config(self, of: Side, psk: str | None = None) -> WgPeer:
        """How ``of`` is configured as a peer on the other side."""
        return WgPeer(
            public_key=of.public_key,
            allowed_ips=[c.split("/")[0] + ("/32" if ":" not in c else "/128") for c in of.inner],
            endpoint=of.endpoint,
            preshared_key=psk if psk is not None else self.psk,
            persistent_keepalive=self.persistent_keepalive,
        )

    def start(self, side: Side, psk: str | None = None, extra_peers: Sequence[WgPeer] = ()) -> WgInterface:
        """(Re)start one side's daemon with its keys; ``psk`` overrides the tunnel's (mismatch tests)."""
        other = self.other(side)
        side.iface = start_wg(
            side.node,
            side.impl_cmd,
            self.ifname,
            side.private_key,
            side.listen_port,
            side.inner,
            [self.peer_config(other, psk), *extra_peers],
            mtu=self.mtu,
            env={**os.environ, **self._extra_env[side.name]} if self._extra_env[side.name] else None,
        )
        return side.iface

    def up(self) -> "Tunnel":
        self.start(self.a)
        self.start(self.b)
        return self

    def stop(self, side: Side) -> bool:
        """Stop one side like ``wg-quick down``; True if its daemon exited by itself."""
        if side.iface is None:
            return True
        ok = side.iface.stop()
        side.iface = None
        return ok

    def down(self) -> tuple[bool, bool]:
        return self.stop(self.a), self.stop(self.b)

    def restart(self) -> tuple[bool, bool]:
        """Stop both daemons and start fresh ones (no session state): the next sender initiates."""
        res = self.down()
        self.up()
        return res
