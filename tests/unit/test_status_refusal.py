"""`ravenvpn status` says why a peer's handshakes are refused: the agent puts the VPN driver's refusals
(`WireGuardDriver.refusals`, from `Device.refusals`) into the status file, also between reconciles."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from ravenvpn.protocol.peer import REFUSED_OLD_TIMESTAMP
from ravenvpn.raven.node.records import status_path
from ravenvpn.raven.node.statusfile import NodeStatus, PeerStatus, Refusal
from tests.unit.test_agent_orchestration import FakeDriver, make_agent, wait_until


class RefusingDriver(FakeDriver):
    """A fake VPN driver whose interface refused what `refused` says (base64 key -> (reason, at))."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.refused: dict[str, tuple[str, float]] = {}

    def refusals(self) -> dict[str, tuple[str, float]]:
        return dict(self.refused)


def test_the_status_file_carries_a_refusal_and_round_trips() -> None:
    status = NodeStatus("n", "active-gateway", "gw", "raven0", 4500, 1420, False, None, 1)
    assert status.with_refusals({"k": ("r", 1.0)}) == status      # no such peer: nothing
    peer = PeerStatus("k=", "gw2", "n2", None, ("10.0.0.0/24",), 0)
    status = NodeStatus("n", "active-gateway", "gw", "raven0", 4500, 1420, False, None, 1, peers=(peer,))
    refused = status.with_refusals({"k=": (REFUSED_OLD_TIMESTAMP, 1_800_000_000.5)})
    assert refused.peers[0].refusal == Refusal(REFUSED_OLD_TIMESTAMP, 1_800_000_000.5)
    assert NodeStatus.from_json(refused.to_json()) == refused
    assert "refusal_reason" not in status.to_json()
    assert NodeStatus.from_json(status.to_json()) == status


def test_a_running_agent_writes_a_new_refusal_into_the_status_file(tmp_path: Path) -> None:
    calls: list[tuple[str, str, str | None]] = []
    vpn = RefusingDriver("vpn", calls, mtu=1420)
    agent = make_agent(tmp_path, (vpn, FakeDriver("routes", calls)))
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: agent.running)
        path = status_path(tmp_path / "state", "raven0")
        peer = NodeStatus.read(path).peers[0]
        assert peer.refusal is None
        at = time.time()
        vpn.refused = {peer.public_key: (REFUSED_OLD_TIMESTAMP, at)}
        wait_until(lambda: NodeStatus.read(path).peers[0].refusal is not None)   # no reconcile needed
        assert NodeStatus.read(path).peers[0].refusal == Refusal(REFUSED_OLD_TIMESTAMP, at)
        applies = sum(1 for c in calls if c[1] == "apply")
        vpn.refused = {}                                     # the peer was removed and added again
        wait_until(lambda: NodeStatus.read(path).peers[0].refusal is None)
        assert sum(1 for c in calls if c[1] == "apply") == applies
    finally:
        agent.stop()
        thread.join(10)
