"""Per-source token bucket for handshakes under load (as wireguard-go's ratelimiter).

Only consulted once mac2 proved the source address, so it cannot be spoofed cheaply.
"""
from __future__ import annotations

PACKETS_PER_SECOND = 20
BURST = 5
_GC_INTERVAL = 1.0


class HandshakeRateLimiter:
    """Token buckets per source IP: `rate` handshakes per second, bursts of `burst`. Not thread-safe."""

    def __init__(self, rate: float = PACKETS_PER_SECOND, burst: int = BURST) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # source ip -> (tokens, last refill)
        self._last_gc = float("-inf")

    def allow(self, source_ip: str, now: float) -> bool:
        """Whether one more handshake from `source_ip` is allowed at `now` (monotonic seconds); takes a token."""
        if now - self._last_gc > _GC_INTERVAL:
            # Full buckets carry no information: forget them so memory stays bounded.
            self._buckets = {ip: tb for ip, tb in self._buckets.items()
                             if tb[0] + (now - tb[1]) * self._rate < self._burst}
            self._last_gc = now
        tokens, last = self._buckets.get(source_ip, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1.0:
            self._buckets[source_ip] = (tokens, now)
            return False
        self._buckets[source_ip] = (tokens - 1.0, now)
        return True
