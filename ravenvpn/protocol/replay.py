"""Sliding replay window over transport counters (RFC 6479 style, as the kernel's counter.c).

A ring of 8192 bits kept in a bytearray; advancing the window clears only the bytes skipped
over. Bytes rather than the kernel's 64-bit words because every operation then stays on small
Python ints: with 64-bit words each check allocated a new big int, and this runs once per
received packet. The window itself is the kernel's and wireguard-go's: a counter up to
WINDOW_SIZE (8128) behind the greatest one seen is still accepted once.
"""
from __future__ import annotations

from .constants import REJECT_AFTER_MESSAGES

_RING_BYTES = 1024                 # 8192 bits, more history than the window needs
_RING_MASK = _RING_BYTES - 1
WINDOW_SIZE = 8192 - 64            # 8128, as wireguard-go and the kernel


class ReplayWindow:
    """The replay window of one session's receive side (§5.4.6). Not thread-safe."""

    __slots__ = ("greatest", "_ring")

    def __init__(self) -> None:
        self.greatest = -1  # nothing seen yet: counter 0 is "ahead" and clears byte 0 (already clear)
        self._ring = bytearray(_RING_BYTES)

    def accept(self, counter: int) -> bool:
        """Record `counter`; False if it is a replay, too old, or past the reject limit.

        Only call after the packet authenticated, or a forger could move the window.
        """
        greatest = self.greatest
        ring = self._ring
        if counter > greatest:
            if counter >= REJECT_AFTER_MESSAGES:
                return False
            index = counter >> 3
            gap = index - (greatest >> 3)
            if gap == 1:
                ring[index & _RING_MASK] = 0    # the in-order case: entering the next byte
            elif gap:
                self._clear_after(greatest >> 3, gap)
            self.greatest = counter
            ring[index & _RING_MASK] |= 1 << (counter & 7)
            return True
        if greatest - counter > WINDOW_SIZE:
            return False
        index = (counter >> 3) & _RING_MASK
        bit = 1 << (counter & 7)
        byte = ring[index]
        if byte & bit:
            return False
        ring[index] = byte | bit
        return True

    def _clear_after(self, current: int, gap: int) -> None:
        """Clear the `gap` ring bytes that follow byte `current` (all of them for a big jump)."""
        ring = self._ring
        if gap >= _RING_BYTES:
            ring[:] = bytes(_RING_BYTES)
            return
        start = (current + 1) & _RING_MASK
        end = start + gap
        if end <= _RING_BYTES:
            ring[start:end] = bytes(gap)
        else:
            ring[start:] = bytes(_RING_BYTES - start)
            ring[:end - _RING_BYTES] = bytes(end - _RING_BYTES)
