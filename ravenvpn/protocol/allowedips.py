"""Allowed IPs: the cryptokey routing table (longest-prefix match, IPv4 and IPv6).

Stored as one dict per prefix length, searched longest first: with the handful of
distinct prefix lengths real configs use this beats a bit trie in Python. Lookups by
destination are cached per address because the TUN hot path asks the same few
questions over and over; any change clears the cache.
"""
from __future__ import annotations

import ipaddress
from typing import Generic, Iterator, TypeVar

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")

_CACHE_LIMIT = 1 << 16


class _Family(Generic[T]):
    __slots__ = ("bits", "by_len", "lengths", "cache")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.by_len: dict[int, dict[int, T]] = {}
        self.lengths: list[int] = []  # present prefix lengths, longest first
        self.cache: dict[bytes, T | None] = {}

    def lookup(self, addr: bytes) -> T | None:
        try:
            return self.cache[addr]
        except KeyError:
            pass
        value = int.from_bytes(addr, "big")
        found = None
        bits = self.bits
        for length in self.lengths:
            found = self.by_len[length].get(value >> (bits - length))
            if found is not None:
                break
        if len(self.cache) >= _CACHE_LIMIT:
            self.cache.clear()
        self.cache[addr] = found
        return found


class AllowedIPs(Generic[T]):
    """Maps prefixes to owners (peers); each prefix has exactly one owner."""

    def __init__(self) -> None:
        self._v4: _Family[T] = _Family(32)
        self._v6: _Family[T] = _Family(128)

    def _family(self, net: Network) -> _Family[T]:
        return self._v4 if net.version == 4 else self._v6

    def insert(self, net: Network, owner: T) -> None:
        """Give `net` to `owner`, taking it from any previous owner (as `wg` does)."""
        fam = self._family(net)
        length = net.prefixlen
        table = fam.by_len.get(length)
        if table is None:
            table = fam.by_len[length] = {}
            fam.lengths = sorted(fam.by_len, reverse=True)
        table[int(net.network_address) >> (fam.bits - length)] = owner
        fam.cache.clear()

    def remove(self, net: Network, owner: T | None = None) -> bool:
        """Remove `net` (only if owned by `owner`, when given)."""
        fam = self._family(net)
        table = fam.by_len.get(net.prefixlen)
        key = int(net.network_address) >> (fam.bits - net.prefixlen)
        if table is None or key not in table or (owner is not None and table[key] is not owner):
            return False
        del table[key]
        if not table:
            del fam.by_len[net.prefixlen]
            fam.lengths = sorted(fam.by_len, reverse=True)
        fam.cache.clear()
        return True

    def remove_owner(self, owner: T) -> None:
        for net in list(self.networks(owner)):
            self.remove(net, owner)

    def networks(self, owner: T) -> Iterator[Network]:
        for fam, cls in ((self._v4, ipaddress.IPv4Network), (self._v6, ipaddress.IPv6Network)):
            for length in sorted(fam.by_len, reverse=True):
                for key, value in fam.by_len[length].items():
                    if value is owner:
                        yield cls((key << (fam.bits - length), length))

    def items(self) -> Iterator[tuple[Network, T]]:
        """Every (prefix, owner), longest prefixes first per family."""
        for fam, cls in ((self._v4, ipaddress.IPv4Network), (self._v6, ipaddress.IPv6Network)):
            for length in sorted(fam.by_len, reverse=True):
                for key, value in fam.by_len[length].items():
                    yield cls((key << (fam.bits - length), length)), value

    def lookup_v4(self, addr: bytes) -> T | None:
        return self._v4.lookup(addr)

    def lookup_v6(self, addr: bytes) -> T | None:
        return self._v6.lookup(addr)

    def lookup(self, addr: str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address) -> T | None:
        if isinstance(addr, bytes):
            packed = addr
        else:
            packed = ipaddress.ip_address(addr).packed
        return self._v4.lookup(packed) if len(packed) == 4 else self._v6.lookup(packed)
