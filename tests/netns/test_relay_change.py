"""Issue 14 kind 9, second half: when the relay of NAT<->NAT traffic changes, relayed pings lose at most 3 s.

The lab of ``tests/data/cluster-relay-change.yaml`` (tools/lab.py): two gateways not under NAT, gw-cloud
(exposeType PublicIP: the relay) and gw-branch (a public IP, no exposeType), and two edges under NAT,
gw-hangzhou and gw-qingdao, whose traffic to each other goes through the relay. Fresh keys are made for
each run. ``ravenvpn up`` runs on every node (with failover, as by default) and follows the cluster file.

While pod hz-1 pings pod qd-1 at 10 packets a second, the file is edited so that the relay moves: by
exposeType (to gw-branch and back), by cloud-1 turning NotReady (gw-cloud has no active endpoint), and to
a gateway whose tunnel is created by the edit itself (cloud-1 Ready again), with qingdao's first handshake
initiation to it lost. The gap is the longest time between two replies (late replies count: a packet held
until a handshake completes arrives late); the test waits until every gateway's ``wg show`` matches its
plan and replies flow again, so a held move (make-before-break, RELAY_HOLD in
ravenvpn/raven/node/wireguard.py) is measured to its end. The bound is the issue's 3 s: measured gaps are
0.1-0.7 s (one reload poll of 0.5 s), and the failure it guards against costs REKEY_TIMEOUT (5 s). The
gaps are printed (``pytest -s``).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tools import wg
from tools.lab import Lab
from tools.node import Node
from tools.pytest_plugin import wait_lab_tunnels

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "tests" / "data" / "cluster-relay-change.yaml"
INTERVAL = 0.1          # seconds between pings: 10 per second
MAX_GAP = 3.0           # seconds: the bound on what a relay change may cost relayed pings
SETTLE = 3.0            # seconds of pings before and after each change (an agent polls its file every 0.5 s)
RECOVERY = 30.0         # seconds: how long to wait for replies after the change before giving up


@pytest.fixture(scope="module")
def lab(netns_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    work = tmp_path_factory.mktemp("relay-change")
    keys = work / "keys"
    keys.mkdir(mode=0o700)
    text = CLUSTER.read_text()
    for node in re.findall(r"publicKey: KEY-(\S+)", text):
        private, public = wg.keypair()
        fd = os.open(keys / f"{node}.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(private + "\n")
        text = text.replace(f"publicKey: KEY-{node}\n", f"publicKey: {public}\n")
    cluster = work / "cluster.yaml"
    cluster.write_text(text)
    with Lab(cluster, keys_dir=keys) as lab:
        lab.up_all()
        wait_lab_tunnels(lab)
        yield lab



class Pinger:
    """``ping -D -i 0.1`` from ``node`` to ``dst`` until stopped; the wall-clock times of the replies."""

    def __init__(self, node: Node, dst: str) -> None:
        self.replies: list[tuple[int, float]] = []       # (icmp_seq, wall-clock time of the reply)
        self.output: list[str] = []
        self._proc = node.popen("ping", "-D", "-n", "-i", f"{INTERVAL:g}", "-W", "1", dst,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.output.append(line.rstrip())
            m = re.match(r"\[(\d+\.\d+)\].*icmp_seq=(\d+) .*time=", line)
            if m:
                self.replies.append((int(m.group(2)), float(m.group(1))))

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        self._reader.join(5)

    def flowing(self, start: float, end: float) -> bool:
        """Replies came at least every 0.5 s between wall times ``start`` and ``end``."""
        times = [start, *sorted(t for _, t in self.replies if start <= t <= end), end]
        return all(b - a < 0.5 for a, b in zip(times, times[1:]))

    def largest_gap(self, after: float) -> tuple[float, int]:
        """(seconds, pings) of the longest run without replies among the replies after wall time
        ``after``, counting from the last reply before it: the time the change cost."""
        times = sorted(self.replies, key=lambda r: r[1])
        before = [r for r in times if r[1] <= after]
        later = [r for r in times if r[1] > after]
        chain = before[-1:] + later
        worst = (0.0, 0)
        for (s0, t0), (s1, t1) in zip(chain, chain[1:]):
            worst = max(worst, (t1 - t0, s1 - s0 - 1))
        return worst


def relay_of(lab: Lab, name: str) -> str | None:
    return lab.status(name).relay_gateway


def converged(lab: Lab, name: str) -> bool:
    """``wg show`` of gateway ``name`` routes every prefix to the peer its plan (``ravenvpn status``) says."""
    planned = {p.public_key: sorted(p.allowed_ips) for p in lab.status(name).peers}
    actual = {k: sorted(p.allowed_ips) for k, p in lab.wg_dump(name).peers.items()}
    return planned == actual


def _change_relay(lab: Lab, edit: Any, new_relay: str, during: Any = None) -> tuple[float, int]:
    """Edit the cluster file while pod hz-1 pings pod qd-1; the largest gap in replies (seconds, pings).
    ``during()``, if given, runs right after the edit."""
    pinger = Pinger(lab.pod("hz-1"), lab.pod_ip("qd-1"))
    try:
        time.sleep(SETTLE)
        assert pinger.replies, "no relayed reply before the change:\n" + "\n".join(pinger.output[-20:])
        t_edit = time.time()
        lab.update_yaml(edit)
        if during is not None:
            during()
        deadline = time.monotonic() + 20
        while any(relay_of(lab, n) != new_relay for n in lab.active_gateways()):
            assert time.monotonic() < deadline, f"the relay did not move to {new_relay}\n{lab.debug_dump()}"
            time.sleep(0.2)
        # Every gateway's tunnel routes as planned (a held relay move has completed: see
        # ravenvpn.raven.node.wireguard.RELAY_HOLD), then replies flow for SETTLE seconds.
        deadline = time.monotonic() + RECOVERY
        while not all(converged(lab, n) for n in lab.active_gateways()):
            assert time.monotonic() < deadline, f"wg show differs from the plan\n{lab.debug_dump()}"
            time.sleep(0.2)
        t_moved = time.time()
        # Then until replies flow again (for SETTLE seconds without a gap), to measure the gap even when
        # it is over the bound; RECOVERY bounds the wait.
        deadline = time.monotonic() + RECOVERY
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = time.time()
            if now - SETTLE >= t_moved and pinger.flowing(now - SETTLE, now - 0.2):
                break
    finally:
        pinger.stop()
    gap, lost = pinger.largest_gap(t_edit)
    last = max((t for _, t in pinger.replies), default=0.0)
    assert last > t_moved, (f"no relayed reply within {RECOVERY:g}s after the relay moved to {new_relay}\n"
                            + "\n".join(pinger.output[-20:]) + "\n" + lab.debug_dump())
    print(f"\nrelay -> {new_relay}: largest gap {gap:.2f}s ({lost} pings never answered)")
    return gap, lost


def _expose(gateway: str) -> Any:
    def edit(docs: list[dict[str, Any]]) -> None:
        for d in docs:
            if d.get("kind") == "Gateway":
                if d["metadata"]["name"] == gateway:
                    d["spec"]["exposeType"] = "PublicIP"
                else:
                    d["spec"].pop("exposeType", None)
    return edit


def _ready(node: str, ready: bool) -> Any:
    def edit(docs: list[dict[str, Any]]) -> None:
        for d in docs:
            if d.get("kind") == "Node" and d["metadata"]["name"] == node:
                d["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    return edit


# --------------------------------------------------------------------------------------------------


def test_cloud_relays_at_first(lab: Lab) -> None:
    assert {n: relay_of(lab, n) for n in lab.active_gateways()} == dict.fromkeys(
        ["br-1", "cloud-1", "hz-1", "qd-1"], "gw-cloud")
    assert lab.status("cloud-1").relay and not lab.status("br-1").relay
    assert lab.ping("pod:hz-1", lab.pod_ip("qd-1"), count=3, interval=0.2).ok


def test_relay_moves_to_branch_by_exposetype_loses_at_most_3s(lab: Lab) -> None:
    gap, lost = _change_relay(lab, _expose("gw-branch"), "gw-branch")
    assert lab.status("br-1").relay and not lab.status("cloud-1").relay
    assert gap <= MAX_GAP, f"relayed pings stalled {gap:.2f}s ({lost} never answered) when the relay changed\n{lab.debug_dump()}"


def test_relay_moves_back_to_cloud_loses_at_most_3s(lab: Lab) -> None:
    gap, lost = _change_relay(lab, _expose("gw-cloud"), "gw-cloud")
    assert gap <= MAX_GAP, f"relayed pings stalled {gap:.2f}s ({lost} never answered) when the relay changed\n{lab.debug_dump()}"


def test_relay_moves_when_its_gateway_loses_its_active_endpoint_loses_at_most_3s(lab: Lab) -> None:
    gap, lost = _change_relay(lab, _ready("cloud-1", False), "gw-branch")
    assert gap <= MAX_GAP, f"relayed pings stalled {gap:.2f}s ({lost} never answered) when the relay changed\n{lab.debug_dump()}"


def test_relay_moves_to_a_new_peer_whose_first_handshake_is_lost_loses_at_most_3s(lab: Lab) -> None:
    """The new relay is a new peer of every gateway (no session yet): cloud-1 is Ready again, and gw-cloud
    (exposeType) takes the relay back. Its raven0 is created by this edit, so the NAT'd edges, which learn
    of it from the same edit, may call it before it listens; it cannot call them (they are under NAT). Here
    qingdao's first calls are dropped for sure (for 1.5 s, as if cloud-1 came up late), hangzhou's get
    through or not: a lost initiation is retried only after REKEY_TIMEOUT (5 s, whitepaper §6.4), so an
    edge that moved its relayed traffic to cloud-1 at once lost it for 5 s (cloud-1 could not reach
    qingdao). The edges keep it on the previous relay until the new one has answered (make-before-break).
    """
    cloud = lab.node("cloud-1")
    drop = ["INPUT", "-p", "udp", "--dport", "4500", "-s", str(lab.domain("gw-qingdao").uplink_ip), "-j", "DROP"]

    dropped: list[int] = []

    def late_listener() -> None:
        cloud.run("iptables", "-I", *drop)
        time.sleep(1.5)
        counters = cloud.run("iptables", "-L", "INPUT", "1", "-v", "-x", "-n").stdout.split()
        dropped.append(int(counters[0]))
        cloud.run("iptables", "-D", *drop)

    try:
        gap, lost = _change_relay(lab, _ready("cloud-1", True), "gw-cloud", during=late_listener)
    finally:
        cloud.run("iptables", "-D", *drop, check=False)
    assert dropped and dropped[0] > 0, "qingdao's first handshake initiation was not dropped: the test missed its case"
    assert gap <= MAX_GAP, f"relayed pings stalled {gap:.2f}s ({lost} never answered) when the relay changed\n{lab.debug_dump()}"
