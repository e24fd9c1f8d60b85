"""The time the protocol runs on: one documented seam for tests of rekeying, expiry and restarts.

The sans-I/O `Tunnel` never reads a clock for its timers: callers pass `now`, monotonic
seconds, into every verb. It reads the wall clock only for the TAI64N timestamp of each
handshake initiation (whitepaper §5.4.2; a responder rejects one not newer than the last it
accepted) and for `Peer.last_handshake_time_ns`. The device layer (`Device`, the pump) takes
`now` from `Clock.monotonic`.

Two knobs exist for tests only, and are reachable in a real daemon only through the
test-only option `ravenvpn-wg --test-clock scale=S,wall-offset=SECONDS`:

* the timer scale, a parameter of `Tunnel` and `Device` (see `timers.Timers.scaled`), which
  multiplies every protocol timer so a real peer can be watched rekeying in seconds;
* `Clock.wall_offset_ns`, added to the wall clock, so a restarted daemon's timestamps can go
  "back in time" (and its initiations be refused as replays) without touching the host clock.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Clock", "parse_test_clock"]


@dataclass(frozen=True, slots=True)
class Clock:
    """Monotonic seconds and wall-clock nanoseconds. Immutable, so thread-safe.

    Attributes:
        monotonic: returns monotonic seconds (float), never going backwards; default time.monotonic.
        wall: returns Unix time in nanoseconds (int); default time.time_ns.
        wall_offset_ns: added to `wall()` by `wall_ns()` (test-only; 0 in production).
    """

    monotonic: Callable[[], float] = field(default=time.monotonic)
    wall: Callable[[], int] = field(default=time.time_ns)
    wall_offset_ns: int = 0

    def wall_ns(self) -> int:
        """Unix time in nanoseconds, offset by `wall_offset_ns`: what handshake timestamps carry."""
        return self.wall() + self.wall_offset_ns


def parse_test_clock(spec: str) -> tuple[float, int]:
    """Parse the test-only `--test-clock` value ``scale=S,wall-offset=SECONDS`` (either part may be
    left out) into (timer scale, wall-clock offset in ns).

    Raises:
        ValueError: one line naming the bad part (unknown key, not a number, scale not in (0, 10]).
    """
    scale, offset_ns = 1.0, 0
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        try:
            number = float(value) if sep else float("nan")
        except ValueError:
            number = float("nan")
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"--test-clock: {part!r} is not KEY=NUMBER")
        if key == "scale":
            if not 0 < number <= 10:
                raise ValueError(f"--test-clock: scale must be in (0, 10], not {value}")
            scale = number
        elif key == "wall-offset":
            offset_ns = int(number * 1_000_000_000)
        else:
            raise ValueError(f"--test-clock: unknown key {key!r} (scale, wall-offset)")
    return scale, offset_ns
