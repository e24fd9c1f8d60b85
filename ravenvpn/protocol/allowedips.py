"""Allowed IPs: the cryptokey routing table (longest-prefix match, IPv4 and IPv6).

Stored as one dict per prefix length, searched longest first: with the handful of
distinct prefix lengths real configs use this beats a bit trie in Python. Lookups by
destination are cached per address because the TUN hot path asks the same few
questions over and over; any change clears the cache.

Each owner's prefixes are also indexed, so listing or removing one peer's allowed IPs
costs what that peer has, not the whole table (`wg show` of 10,000 peers was quadratic).
"""
from __future__ import annotations

import ipaddress
import socket
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
    """Maps prefixes to owners (peers); each prefix has exactly one owner.

    Costs: insert/remove O(1) (plus a sort of the distinct prefix lengths when one appears or
    goes); networks/remove_owner O(prefixes of that owner); lookups O(distinct lengths), cached.
    Not thread-safe (the device lock guards it).
    """

    def __init__(self) -> None:
        self._v4: _Family[T] = _Family(32)
        self._v6: _Family[T] = _Family(128)
        # owner -> its prefixes as (ip version, prefix length, key), in insertion order
        self._owned: dict[T, dict[tuple[int, int, int], None]] = {}

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
        key = int(net.network_address) >> (fam.bits - length)
        entry = (net.version, length, key)
        previous = table.get(key)
        if previous is not None and previous is not owner:
            self._disown(previous, entry)
        table[key] = owner
        self._owned.setdefault(owner, {})[entry] = None
        fam.cache.clear()

    def _disown(self, owner: T, entry: tuple[int, int, int]) -> None:
        owned = self._owned.get(owner)
        if owned is not None:
            owned.pop(entry, None)
            if not owned:
                del self._owned[owner]

    def remove(self, net: Network, owner: T | None = None) -> bool:
        """Remove `net` (only if owned by `owner`, when given)."""
        fam = self._family(net)
        table = fam.by_len.get(net.prefixlen)
        key = int(net.network_address) >> (fam.bits - net.prefixlen)
        if table is None or key not in table or (owner is not None and table[key] is not owner):
            return False
        self._disown(table[key], (net.version, net.prefixlen, key))
        self._drop(fam, net.prefixlen, key)
        return True

    @staticmethod
    def _drop(fam: _Family[T], length: int, key: int) -> None:
        table = fam.by_len[length]
        del table[key]
        if not table:
            del fam.by_len[length]
            fam.lengths = sorted(fam.by_len, reverse=True)
        fam.cache.clear()

    def remove_owner(self, owner: T) -> None:
        """Remove every prefix of `owner`."""
        for version, length, key in self._owned.pop(owner, {}):
            self._drop(self._v4 if version == 4 else self._v6, length, key)

    def networks(self, owner: T) -> Iterator[Network]:
        """`owner`'s prefixes: IPv4 before IPv6, longer prefixes first, else in insertion order."""
        for version, length, key in self._sorted(owner):
            if version == 4:
                yield ipaddress.IPv4Network((key << (32 - length), length))
            else:
                yield ipaddress.IPv6Network((key << (128 - length), length))

    def prefixes(self, owner: T) -> list[str]:
        """`owner`'s prefixes as CIDR text, in the order of `networks` (what `str` of each gives),
        without building network objects: `wg show` of 50,000 peers prints them all."""
        out = []
        ntoa = socket.inet_ntoa
        for version, length, key in self._sorted(owner):
            if version == 4:
                out.append(f"{ntoa((key << (32 - length)).to_bytes(4, 'big'))}/{length}")
            else:
                out.append(str(ipaddress.IPv6Network((key << (128 - length), length))))
        return out

    def _sorted(self, owner: T) -> list[tuple[int, int, int]]:
        owned = self._owned.get(owner)
        if not owned:
            return []
        if len(owned) == 1:
            return list(owned)
        return sorted(owned, key=lambda e: (e[0], -e[1]))

    def items(self) -> Iterator[tuple[Network, T]]:
        """Every (prefix, owner), longest prefixes first per family."""
        for fam, cls in ((self._v4, ipaddress.IPv4Network), (self._v6, ipaddress.IPv6Network)):
            for length in sorted(fam.by_len, reverse=True):
                for key, value in fam.by_len[length].items():
                    yield cls((key << (fam.bits - length), length)), value

    def lookup_v4(self, addr: bytes) -> T | None:
        """The owner of the longest prefix holding the 4-byte address `addr`, else None."""
        return self._v4.lookup(addr)

    def lookup_v6(self, addr: bytes) -> T | None:
        """The owner of the longest prefix holding the 16-byte address `addr`, else None."""
        return self._v6.lookup(addr)

    def lookup(self, addr: str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address) -> T | None:
        """The owner of the longest prefix holding `addr` (text, packed bytes or an address), else None."""
        if isinstance(addr, bytes):
            packed = addr
        else:
            packed = ipaddress.ip_address(addr).packed
        return self._v4.lookup(packed) if len(packed) == 4 else self._v6.lookup(packed)
