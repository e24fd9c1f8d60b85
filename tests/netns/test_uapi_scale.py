"""Scale of control operations (issue 14 kind 5, field case F10).

`wg show dump` walked the whole allowed-IPs table for every peer (quadratic: 2-7 s at 10-20k peers),
all of it holding the lock the packet pump needs. Now listing a peer's prefixes costs what it has,
a get or set holds the lock in short slices, and the data path keeps flowing. The figures come from
`python3 -m benchmarks.control_scale`; these tests assert generous bounds only.
"""
from __future__ import annotations

import ipaddress
import os
import statistics
import threading
import time

from benchmarks import control_scale
from ravenvpn.device.uapi import Uapi
from ravenvpn.protocol.allowedips import AllowedIPs
from ravenvpn.protocol.tunnel import Tunnel
from tools.node import DEFAULT_PREFIX


def test_allowed_ips_index_follows_every_change() -> None:
    t: AllowedIPs[str] = AllowedIPs()
    n = ipaddress.ip_network
    for net in ("10.0.0.0/8", "10.1.0.0/16", "fd00::/64", "10.2.0.0/16", "192.0.2.1/32"):
        t.insert(n(net), "a")
    t.insert(n("10.1.0.0/16"), "b")                 # taken from a, as `wg` does
    assert [str(x) for x in t.networks("a")] == ["192.0.2.1/32", "10.2.0.0/16", "10.0.0.0/8", "fd00::/64"]
    assert [str(x) for x in t.networks("b")] == ["10.1.0.0/16"]
    assert t.lookup("10.1.2.3") == "b" and t.lookup("10.9.9.9") == "a"
    assert not t.remove(n("10.2.0.0/16"), "b")      # not b's
    assert t.remove(n("10.2.0.0/16"), "a")
    assert t.lookup("10.2.0.1") == "a"              # falls back to 10/8
    t.remove_owner("a")
    assert list(t.networks("a")) == [] and t.lookup("10.9.9.9") is None and t.lookup("10.1.0.1") == "b"
    t.remove(n("10.1.0.0/16"))
    assert list(t.networks("b")) == [] and t.lookup("10.1.0.1") is None


def test_listing_and_removing_every_peers_prefixes_is_linear() -> None:
    # 20,000 owners x 2 prefixes: quadratic (each listing walks the table) is ~10^9 steps, minutes.
    t: AllowedIPs[object] = AllowedIPs()
    owners = [object() for _ in range(20_000)]
    for i, owner in enumerate(owners):
        t.insert(ipaddress.IPv4Network((0x0A400000 + i, 32)), owner)
        t.insert(ipaddress.IPv6Network(((0xFD00 << 112) + i, 128)), owner)
    start = time.monotonic()
    assert sum(len(list(t.networks(owner))) for owner in owners) == 40_000
    for owner in owners:
        t.remove_owner(owner)
    assert time.monotonic() - start < 10      # linear: well under a second
    assert t.lookup("10.64.0.1") is None


class _Control:
    listen_port = 51820
    fwmark = 0

    def set_listen_port(self, port: int) -> None:
        self.listen_port = port

    def set_fwmark(self, mark: int) -> None:
        pass

    def config_changed(self) -> None:
        pass


class _TimedLock:
    """An RLock that records how long each outermost hold lasted."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._since = 0.0
        self.holds: list[float] = []

    def acquire(self) -> bool:
        self._lock.acquire()
        self._depth += 1
        if self._depth == 1:
            self._since = time.monotonic()
        return True

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.holds.append(time.monotonic() - self._since)
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_a_get_and_a_set_of_10k_peers_hold_the_lock_only_briefly() -> None:
    lock = _TimedLock()
    uapi = Uapi(Tunnel(), _Control(), lock)    # type: ignore[arg-type]
    request = control_scale.set_request(10_000).decode().split("\n")[1:-2]
    uapi.set(["private_key=" + os.urandom(32).hex()] + request)
    assert len(uapi.tunnel.peers) == 10_000
    set_holds, lock.holds = lock.holds, []
    start = time.monotonic()
    text = uapi.get()
    took = time.monotonic() - start
    assert text.count("public_key=") == 10_000 and text.count("allowed_ip=") == 10_000
    assert took < 5                                    # (0.2 s here; quadratic was seconds)
    # The pump waits at most one hold. Before, one hold was the whole get or set (seconds); now the
    # slices are ~5 ms. Generous bounds: a loaded machine may deschedule a thread mid-slice.
    for holds in (lock.holds, set_holds):
        assert len(holds) > 10 and statistics.median(holds) < 0.05 and max(holds) < 1.5, \
            (len(holds), statistics.median(holds), max(holds))


def test_dump_of_10k_peers_is_fast_and_the_data_path_keeps_flowing(node_factory) -> None:
    """F10 live: ravenvpn-wg with 10,000 peers plus a live wireguard-go peer pinged every 10 ms.
    Bounds are generous (dump < 1 s, no gap > 1 s); the benchmark reports the figures."""
    node_factory  # only for the root/netns check and clean-up of "rvt" namespaces
    row = control_scale.measure("ravenvpn", 10_000, prefix=DEFAULT_PREFIX)
    print(f"[measure] control scale: {row}")
    assert row["set_reply"] == "errno=0" and row["dump_lines"] == 10_002
    assert row["dump_s"] < 1.0, row
    assert row["ping_gap_during_dump_s"] < 1.0, row
    assert row["ping_gap_during_set_s"] < 1.0, row
