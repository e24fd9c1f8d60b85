"""The figures the harness reports: key, label, unit, which direction is better, how to print them."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    decimals: int = 1
    scale: float = 1.0  # table value = raw value * scale (raw values in the JSON stay in base units)
    table_unit: str | None = None
    #: which setups it is measured for; the others report n/a (with ``na_reason``)
    only: tuple[str, ...] | None = None
    na_reason: str = ""

    def fmt(self, value: float) -> str:
        v = value * self.scale
        return f"{v:,.{self.decimals}f}"

    @property
    def shown_unit(self) -> str:
        return self.table_unit or self.unit


TUNNELS = ("wireguard-go", "ravenvpn", "ravenvpn-busypoll", "mixed")
# one implementation on both ends (ravenvpn-busypoll is ravenvpn with RAVENVPN_BUSY_POLL_US set on both)
SINGLE_IMPL = ("wireguard-go", "ravenvpn", "ravenvpn-busypoll")

FIGURES: list[Figure] = [
    Figure("tcp1_up", "TCP 1 stream A->B", "bit/s", True, 0, 1e-6, "Mbit/s"),
    Figure("tcp1_down", "TCP 1 stream B->A (-R)", "bit/s", True, 0, 1e-6, "Mbit/s"),
    Figure("tcp4_up", "TCP 4 streams A->B", "bit/s", True, 0, 1e-6, "Mbit/s"),
    Figure("tcp4_down", "TCP 4 streams B->A (-R)", "bit/s", True, 0, 1e-6, "Mbit/s"),
    Figure("udp64_pps", "UDP 64 B max rate, delivered", "packets/s", True, 1, 1e-3, "kpps"),
    Figure("udp64_loss", "UDP 64 B max rate, loss", "%", False, 1),
    Figure("udp1400_pps", "UDP 1400 B max rate, delivered", "packets/s", True, 1, 1e-3, "kpps"),
    Figure("udp1400_loss", "UDP 1400 B max rate, loss", "%", False, 1),
    Figure("udp1400_goodput", "UDP 1400 B max rate, goodput", "bit/s", True, 0, 1e-6, "Mbit/s"),
    Figure("ping_idle_p50", "ping RTT idle p50", "ms", False, 3),
    Figure("ping_idle_p99", "ping RTT idle p99", "ms", False, 3),
    Figure("ping_load_p50", "ping RTT under TCP load p50", "ms", False, 2),
    Figure("ping_load_p99", "ping RTT under TCP load p99", "ms", False, 2),
    Figure("cpu_per_gb_a", "CPU per GB, daemon A (sender)", "s/GB", False, 2,
           only=TUNNELS, na_reason="kernel"),
    Figure("cpu_per_gb_b", "CPU per GB, daemon B (receiver)", "s/GB", False, 2,
           only=TUNNELS, na_reason="kernel"),
    Figure("rss_a", "peak RSS after runs, daemon A", "MiB", False, 1, only=TUNNELS, na_reason="kernel"),
    Figure("rss_b", "peak RSS after runs, daemon B", "MiB", False, 1, only=TUNNELS, na_reason="kernel"),
    Figure("rss_idle", "RSS fresh daemon, 0 peers", "MiB", False, 1, only=SINGLE_IMPL,
           na_reason="see single-impl columns"),
    Figure("rss_peers", "peak RSS fresh daemon, N peers", "MiB", False, 1, only=SINGLE_IMPL,
           na_reason="see single-impl columns"),
    Figure("hs_responses", "handshake responses", "1/s", True, 0, only=SINGLE_IMPL,
           na_reason="see single-impl columns"),
    Figure("hs_cookies", "handshake cookie replies", "1/s", False, 0, only=SINGLE_IMPL,
           na_reason="see single-impl columns"),
]
FIGURE_BY_KEY = {f.key: f for f in FIGURES}


def applies(fig: Figure, setup: str) -> bool:
    return fig.only is None or setup in fig.only


def na_reason(fig: Figure, setup: str) -> str:
    if setup == "veth":
        return "kernel" if fig.key.startswith(("cpu", "rss")) else "no WireGuard"
    return fig.na_reason
