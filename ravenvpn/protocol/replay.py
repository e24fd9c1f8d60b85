"""Sliding replay window over transport counters (RFC 6479 style, as the kernel's counter.c).

A ring of 64-bit words; advancing the window clears only the words skipped over, so an
in-order packet costs a few integer operations.
"""
from __future__ import annotations

from .constants import REJECT_AFTER_MESSAGES

_WORD_BITS = 64
_WORDS = 128  # 8192 bits; usable window = 8192 - 64 = 8128 (one word is always being recycled)
_RING_MASK = _WORDS - 1
WINDOW_SIZE = _WORD_BITS * (_WORDS - 1)


class ReplayWindow:
    __slots__ = ("greatest", "_ring")

    def __init__(self) -> None:
        self.greatest = -1  # nothing seen yet: counter 0 is "ahead" and clears word 0 (already clear)
        self._ring = [0] * _WORDS

    def accept(self, counter: int) -> bool:
        """Record `counter`; False if it is a replay, too old, or past the reject limit.

        Only call after the packet authenticated, or a forger could move the window.
        Called once per received packet: the in-order case is kept to a few operations.
        """
        greatest = self.greatest
        if counter > greatest:
            if counter >= REJECT_AFTER_MESSAGES:
                return False
            ring = self._ring
            gap = (counter >> 6) - (greatest >> 6)
            if gap:
                # Entering new words: clear them (all of the ring at most) before use.
                current = greatest >> 6
                for i in range(1, min(gap, _WORDS) + 1):
                    ring[(current + i) & _RING_MASK] = 0
            self.greatest = counter
            slot = (counter >> 6) & _RING_MASK
            ring[slot] |= 1 << (counter & 63)
            return True
        if greatest - counter > WINDOW_SIZE:
            return False  # as the kernel: exactly WINDOW_SIZE behind is still inside
        ring = self._ring
        slot = (counter >> 6) & _RING_MASK
        bit = 1 << (counter & 63)
        word = ring[slot]
        if word & bit:
            return False
        ring[slot] = word | bit
        return True
