"""The index table (whitepaper §5.4.2, wireguard-go's indextable.go): local 32-bit indices -> owner.

Every handshake in flight and every session gets a random, unused, non-zero local index; the
peer puts it in the `receiver` field of what it sends back, so an incoming response, cookie reply
or transport message finds its handshake or session in one dict lookup. Random (not counting)
so that indices reveal nothing about how many sessions exist. Not thread-safe (the Tunnel's).
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

__all__ = ["IndexTable"]

Owner = TypeVar("Owner")


class IndexTable(Generic[Owner]):
    """Maps local indices (int, 1..2**32-1) to their owner (a Peer's handshake or a Keypair).

    Args:
        rng: returns n random bytes (os.urandom; a seeded source in tests).
    """

    __slots__ = ("_owners", "_rng", "get")

    def __init__(self, rng: Callable[[int], bytes]) -> None:
        self._owners: dict[int, Owner] = {}
        self._rng = rng
        #: ``get(index) -> owner | None``: the lookup of the receive path (a bound dict method, no extra call).
        self.get = self._owners.get

    def new(self, owner: Owner) -> int:
        """Allocate a fresh random non-zero index for `owner` and return it."""
        while True:
            index = int.from_bytes(self._rng(4), "little")
            if index and index not in self._owners:
                self._owners[index] = owner
                return index

    def set(self, index: int, owner: Owner) -> None:
        """Hand an allocated `index` to a new owner (a handshake's index becomes its session's)."""
        self._owners[index] = owner

    def release(self, index: int, owner: Owner) -> None:
        """Free `index` if `owner` still holds it (it may already have passed to a session)."""
        if index and self._owners.get(index) is owner:
            del self._owners[index]

    def discard(self, index: int) -> None:
        """Free `index` whoever holds it."""
        self._owners.pop(index, None)

    def __len__(self) -> int:
        return len(self._owners)

    def __contains__(self, index: object) -> bool:
        return index in self._owners

    def __iter__(self) -> Iterator[int]:
        """The indices in use (a snapshot is the caller's: do not allocate while iterating)."""
        return iter(self._owners)
