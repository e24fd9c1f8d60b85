"""TAI64N timestamps carried in handshake initiations (replay protection for initiations)."""
from __future__ import annotations

import struct

_TAI64_BASE = (1 << 62) + 10
# Round nanoseconds down so the timestamp doesn't leak a fine-grained clock (as wireguard-go does).
_WHITENER = 0x1000000


def tai64n(unix_ns: int) -> bytes:
    """The 12-byte TAI64N label of Unix time `unix_ns` (ns), big-endian so that byte order is
    time order (§5.4.2), its nanoseconds rounded down to 2**24 ns (~16.8 ms)."""
    secs, nanos = divmod(unix_ns, 1_000_000_000)
    nanos -= nanos % _WHITENER
    return struct.pack(">QI", _TAI64_BASE + secs, nanos)
