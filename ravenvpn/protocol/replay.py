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
    __slots__ = ("greatest", "_ring", "_started")

    def __init__(self) -> None:
        self.greatest = 0
        self._ring = [0] * _WORDS
        self._started = False

    def accept(self, counter: int) -> bool:
        """Record `counter`; False if it is a replay, too old, or past the reject limit.

        Only call after the packet authenticated, or a forger could move the window.
        """
        if counter >= REJECT_AFTER_MESSAGES:
            return False
        ring = self._ring
        index = counter >> 6
        if not self._started:
            self._started = True
            self.greatest = counter
        elif counter > self.greatest:
            current = self.greatest >> 6
            gap = index - current
            if gap > _WORDS:
                gap = _WORDS
            for i in range(1, gap + 1):
                ring[(current + i) & _RING_MASK] = 0
            self.greatest = counter
        elif self.greatest - counter >= WINDOW_SIZE:
            return False
        slot = index & _RING_MASK
        bit = 1 << (counter & 63)
        word = ring[slot]
        if word & bit:
            return False
        ring[slot] = word | bit
        return True
