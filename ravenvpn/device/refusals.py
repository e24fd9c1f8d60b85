"""Telling the operator why a peer's handshakes are refused: one log line per peer, rate-limited.

The core (`Tunnel`) only records, per peer, the last refusal (`Peer.last_refusal`: reason and
monotonic time) and counts it (`Counter.RX_HANDSHAKE_REPLAY`). Without a word in the log, a peer
restarted with its clock behind (whitepaper §5.1: the responder drops an initiation whose TAI64N
timestamp is not newer than the last one it accepted) looks like a peer that is simply silent, and
wireguard-go and the kernel say nothing either. `RefusalReporter` runs as a housekeeping job of the
pump (about once a second, outside the data path), so reporting costs the packet path nothing.
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Callable

from ..protocol.counters import Counter
from .uapi import short_key

if TYPE_CHECKING:
    from ..protocol.peer import Peer
    from ..protocol.tunnel import Tunnel

__all__ = ["RefusalReporter", "REPORT_INTERVAL", "remedy"]

log = logging.getLogger("ravenvpn")

#: Seconds between two log lines about the same peer (it retries every REKEY_TIMEOUT, 5 s).
REPORT_INTERVAL = 60.0


def remedy(ifname: str) -> str:
    """What an operator of the refusing side does about a peer refused for an old timestamp: make
    this side forget the greatest timestamp it accepted from the peer (`ifname`: the interface)."""
    return (f"remove and re-add the peer (wg set {ifname} peer KEY remove; then set it again), "
            "or restart this side")


class RefusalReporter:
    """A housekeeping job: logs one warning per peer whose handshake initiations are refused, at most
    once per `interval` seconds per peer, naming the peer (as wireguard-go does: ``peer(AbCd…WxYz)``),
    the reason and the remedy.

    Args:
        tunnel: the core whose peers it reports; read under `lock`.
        lock: the device lock.
        ifname: the interface, for the remedy's command.
        clock: monotonic seconds, the clock the pump hands the tunnel as `now`.
        interval: seconds between two lines about one peer.

    Call it from one thread (the pump's). When nothing was refused since the last call it reads
    one counter and returns, without the lock.
    """

    def __init__(self, tunnel: Tunnel, lock: threading.Lock | threading.RLock, ifname: str,
                 clock: Callable[[], float], interval: float = REPORT_INTERVAL) -> None:
        self.tunnel = tunnel
        self.lock = lock
        self.ifname = ifname
        self.clock = clock
        self.interval = interval
        self._counted = 0
        # Peer -> (when we last logged it, the time of the refusal logged), both monotonic. Keyed by
        # the Peer object, not its key: a peer removed and added again (the remedy) is a new Peer,
        # and a refusal of it is news.
        self._logged: dict[Peer, tuple[float, float]] = {}

    def __call__(self) -> None:
        """Log what was refused since the last call (rate-limited per peer)."""
        counted = self.tunnel.stats.get(Counter.RX_HANDSHAKE_REPLAY, 0)   # .get: never inserts
        if counted == self._counted:
            return
        self._counted = counted
        now = self.clock()
        with self.lock:
            refused = [(peer, peer.public_key, peer.last_refusal)
                       for peer in self.tunnel.peers.values() if peer.last_refusal is not None]
            live = set(self.tunnel.peers.values()) if self._logged else set()
        for gone in [p for p in self._logged if p not in live]:
            del self._logged[gone]
        for peer, public_key, refusal in refused:
            assert refusal is not None
            reason, at = refusal
            logged = self._logged.get(peer)
            if logged is not None and (at <= logged[1] or now - logged[0] < self.interval):
                continue        # already told, or told less than `interval` ago
            self._logged[peer] = (now, at)
            log.warning("%s: handshake initiation refused: %s: %s", short_key(public_key), reason,
                        remedy(self.ifname))
