"""The path warmer (busy-poll mode) really runs packets through encryption and decryption, in memory."""
from __future__ import annotations

from ravenvpn.device.warmer import PathWarmer
from ravenvpn.protocol.constants import REJECT_AFTER_TIME


def test_each_run_is_a_full_round_trip_through_the_core() -> None:
    warmer = PathWarmer()
    warmer.run(100.0)       # the first run also does the handshake
    assert warmer.delivered == 2
    peer = next(iter(warmer.a.peers.values()))
    session = peer.current
    assert session is not None and session.send_counter >= 1
    for i in range(10):
        warmer.run(100.0 + i * 0.0005)
    assert warmer.delivered == 22
    assert peer.current is session          # no new handshakes while the session is fresh
    assert warmer.a.stats.get("rx_bad_auth", 0) == 0 and warmer.b.stats.get("rx_replay", 0) == 0


def test_it_keeps_working_across_rekeys_and_expiry() -> None:
    warmer = PathWarmer()
    warmer.run(100.0)
    first = next(iter(warmer.a.peers.values())).current
    warmer.run(100.0 + REJECT_AFTER_TIME + 1)  # the session is dead: a new handshake, same call
    assert next(iter(warmer.a.peers.values())).current is not first
    assert warmer.delivered == 4
